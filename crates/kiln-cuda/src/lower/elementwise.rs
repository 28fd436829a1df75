//! Elementwise ops: unary maps (activations included), binary arithmetic, comparisons
//! and logic, variadic folds, Where, Cast/CastLike, Clip, Not, Dropout.

use kiln_ir::DType;
use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};

use super::{Cx, Lowered, is_float, is_numeric, is_storage};
use crate::executor::Kernel;
use crate::kernels::{BinaryCode, CompareCode, MAX_RANK, Strides, Strides3, UnaryCode};
use crate::launch::elementwise::{
    binary_code, binary_ok, cast_ok, compare_code, logic_code, unary_code, unary_f64_ok, unary_int_ok,
};
use crate::plan::SlotId;

pub(crate) fn lower(cx: &mut Cx, op: &ElementwiseOp) -> Lowered {
    match op {
        ElementwiseOp::Unary(u) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            Ok(vec![unary(cx, u, x, y)?])
        }
        ElementwiseOp::Binary(b) => {
            let y = cx.single_output()?;
            Ok(vec![binary(cx, *b, cx.input(0)?, cx.input(1)?, y)?])
        }
        ElementwiseOp::Compare(c) => {
            let y = cx.single_output()?;
            Ok(vec![compare(cx, compare_code(*c), cx.input(0)?, cx.input(1)?, y)?])
        }
        ElementwiseOp::Logic(l) => {
            let y = cx.single_output()?;
            Ok(vec![compare(cx, logic_code(*l), cx.input(0)?, cx.input(1)?, y)?])
        }
        ElementwiseOp::Not => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let t = cx.temp(DType::Bool, &[]);
            Ok(vec![Kernel::Fill { dtype: DType::Bool, y: t, value: 1.0 }, compare(cx, CompareCode::Xor, x, t, y)?])
        }
        ElementwiseOp::Variadic(v) => variadic(cx, *v),
        ElementwiseOp::Where => {
            let (c, x, yv, out) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
            let dtype = cx.dtype(out);
            if cx.dtype(c) != DType::Bool || cx.dtype(x) != dtype || cx.dtype(yv) != dtype || !is_storage(dtype) {
                return Err(format!("dtypes {}, {}, {} into {dtype}", cx.dtype(c), cx.dtype(x), cx.dtype(yv)));
            }
            let shape = cx.shape(out);
            check_rank(shape.len())?;
            Strides3::broadcast(&cx.shape(c), &cx.shape(x), &cx.shape(yv), &shape)
                .ok_or_else(|| "inputs do not broadcast to the output".to_string())?;
            Ok(vec![Kernel::Where { dtype, cond: c, x, y: yv, out }])
        }
        ElementwiseOp::Cast { to, saturate } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            Ok(vec![cast_sat(cx, x, y, *to, *saturate)?])
        }
        ElementwiseOp::CastLike { saturate } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            Ok(vec![cast_sat(cx, x, y, cx.dtype(y), *saturate)?])
        }
        ElementwiseOp::Clip { min, max } => clip(cx, *min, *max),
        ElementwiseOp::Identity => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            Ok(vec![cx.copy_all(x, y)])
        }
        ElementwiseOp::Dropout { .. } => {
            // A training_mode input known only at run time: read on the device.
            if let Some(t) = cx.opt_input(2).filter(|_| cx.constant(2).is_none()) {
                return dropout(cx, t);
            }
            // A constant training_mode: true with a ratio of 0 is the identity (and an
            // all-true mask); true with another ratio draws random masks, which cannot
            // match another implementation's, so it is refused. False is the identity.
            if cx.opt_input(2).is_some() {
                let training = cx.const_ints(2, "training_mode")?;
                let zero_ratio =
                    cx.constant(1).and_then(|r| r.to_f64_vec().ok()).is_some_and(|v| v.iter().all(|&r| r == 0.0));
                if training.iter().any(|&v| v != 0) && !zero_ratio {
                    return Err("training mode (random masks) is not supported".into());
                }
            }
            let x = cx.input(0)?;
            let y = cx.output(0)?;
            let mut ks = vec![cx.copy_all(x, y)];
            if let Ok(mask) = cx.output(1) {
                ks.push(Kernel::Fill { dtype: cx.dtype(mask), y: mask, value: 1.0 });
            }
            Ok(ks)
        }
        ElementwiseOp::IsNaN | ElementwiseOp::IsInf { .. } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = cx.dtype(x);
            if !dtype.is_float() || cx.dtype(y) != DType::Bool || cx.len(x) != cx.len(y) {
                return Err(format!("{} of {dtype} into {}", op_name(op), cx.dtype(y)));
            }
            let inf = match op {
                ElementwiseOp::IsInf { detect_positive, detect_negative } => Some((*detect_positive, *detect_negative)),
                _ => None,
            };
            Ok(vec![Kernel::Classify { dtype, inf, x, y, n: cx.len(y) }])
        }
    }
}

pub(crate) fn check_rank(rank: usize) -> Result<(), String> {
    if rank > MAX_RANK { Err(format!("rank {rank} (at most {MAX_RANK})")) } else { Ok(()) }
}

/// The unary kernel of `u` from `x` into `y` (same shape and dtype).
pub(crate) fn unary(cx: &Cx, u: &UnaryOp, x: SlotId, y: SlotId) -> Result<Kernel, String> {
    let (code, p) = unary_code(u).ok_or_else(|| format!("no CUDA kernel for {} yet", u.name()))?;
    let dtype = cx.dtype(y);
    let ok = match dtype {
        DType::F64 => unary_f64_ok(code),
        d if is_float(d) => code != UnaryCode::BitNot,
        d => d.is_integer() && unary_int_ok(code),
    };
    if !ok {
        return Err(format!("{} of dtype {dtype} has no CUDA kernel", u.name()));
    }
    if cx.dtype(x) != dtype || cx.len(x) != cx.len(y) {
        return Err("input and output differ in dtype or size".into());
    }
    Ok(Kernel::Unary { code, p, dtype, x, y, n: cx.len(y) })
}

/// The broadcasting kernel `y = a op b`.
pub(crate) fn binary_code_kernel(cx: &Cx, code: BinaryCode, a: SlotId, b: SlotId, y: SlotId) -> Result<Kernel, String> {
    let dtype = cx.dtype(y);
    if !binary_ok(code, dtype) {
        return Err(format!("{code:?} of dtype {dtype} has no CUDA kernel"));
    }
    if cx.dtype(a) != dtype || cx.dtype(b) != dtype {
        return Err(format!("mixed dtypes {} and {} into {dtype}", cx.dtype(a), cx.dtype(b)));
    }
    let out = cx.shape(y);
    check_rank(out.len())?;
    Strides::broadcast(&cx.shape(a), &cx.shape(b), &out)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast to {out:?}", cx.shape(a), cx.shape(b)))?;
    Ok(Kernel::Binary { code, dtype, a, b, y })
}

pub(crate) fn binary(cx: &Cx, op: BinaryOp, a: SlotId, b: SlotId, y: SlotId) -> Result<Kernel, String> {
    let code = binary_code(op).ok_or_else(|| format!("no CUDA kernel for {} yet", op.name()))?;
    let dtype = cx.dtype(y);
    let mixed = cx.dtype(a) != cx.dtype(b);
    if code == BinaryCode::Pow && (mixed || !is_float(dtype) && dtype != DType::F64) {
        return pow_any(cx, a, b, y);
    }
    binary_code_kernel(cx, code, a, b, y)
}

/// Pow of integers, or of a base and an exponent of different dtypes: in double,
/// rounded (integers: saturated) into the base's dtype. A constant exponent of exactly
/// 2 is a product (as on the CPU: integers wrap).
fn pow_any(cx: &Cx, a: SlotId, b: SlotId, y: SlotId) -> Result<Kernel, String> {
    let (base, exp) = (cx.dtype(a), cx.dtype(b));
    let arith = |d: DType| matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64) || d.is_integer();
    if !arith(base) || !arith(exp) || cx.dtype(y) != base {
        return Err(format!("Pow of {base} and {exp} into {}", cx.dtype(y)));
    }
    let out = cx.shape(y);
    check_rank(out.len())?;
    Strides::broadcast(&cx.shape(a), &cx.shape(b), &out)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast to {out:?}", cx.shape(a), cx.shape(b)))?;
    let exp_two = cx.plan.constant(b).filter(|t| t.len() == 1).and_then(|t| t.to_f64_vec().ok()) == Some(vec![2.0]);
    if exp_two && cx.shape(a) == out {
        return binary_code_kernel(cx, BinaryCode::Mul, a, a, y);
    }
    Ok(Kernel::PowAny { base, exp, a, b, y })
}

fn compare(cx: &Cx, code: CompareCode, a: SlotId, b: SlotId, y: SlotId) -> Result<Kernel, String> {
    let dtype = cx.dtype(a);
    let logic = matches!(code, CompareCode::And | CompareCode::Or | CompareCode::Xor);
    let numeric = is_numeric(dtype) || dtype == DType::F64 || dtype.is_integer();
    let ok = if logic { dtype == DType::Bool } else { dtype == DType::Bool || numeric };
    if !ok || cx.dtype(b) != dtype || cx.dtype(y) != DType::Bool {
        return Err(format!("{code:?} of {} and {} into {}", dtype, cx.dtype(b), cx.dtype(y)));
    }
    let out = cx.shape(y);
    check_rank(out.len())?;
    Strides::broadcast(&cx.shape(a), &cx.shape(b), &out)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast to {out:?}", cx.shape(a), cx.shape(b)))?;
    Ok(Kernel::Compare { code, dtype, a, b, y })
}

/// A Cast between any of Kiln's dtypes (FP8 targets saturating).
#[allow(dead_code)]
pub(crate) fn cast(cx: &Cx, x: SlotId, y: SlotId, to: DType) -> Result<Kernel, String> {
    cast_sat(cx, x, y, to, true)
}

/// A Cast with ONNX's `saturate` (it matters for FP8 targets only).
pub(crate) fn cast_sat(cx: &Cx, x: SlotId, y: SlotId, to: DType, saturate: bool) -> Result<Kernel, String> {
    let from = cx.dtype(x);
    if !cast_ok(from) || !cast_ok(to) || cx.dtype(y) != to || cx.len(x) != cx.len(y) {
        return Err(format!("Cast from {from} to {to} has no CUDA kernel"));
    }
    if from == to {
        return Ok(cx.copy_all(x, y));
    }
    let n = cx.len(y);
    if !saturate && matches!(to, DType::F8E4M3FN | DType::F8E5M2) {
        return Ok(Kernel::CastSat { from, to, saturate, x, y, n });
    }
    Ok(Kernel::Cast { from, to, x, y, n })
}

/// Dropout whose training_mode is known only at run time.
fn dropout(cx: &Cx, training: SlotId) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.output(0)?);
    let dtype = cx.dtype(y);
    if !dtype.is_float() || cx.dtype(x) != dtype || cx.len(x) != cx.len(y) {
        return Err(format!("Dropout of {} into {dtype}", cx.dtype(x)));
    }
    if cx.dtype(training) != DType::Bool || cx.len(training) != 1 {
        return Err(format!("training_mode of {}{:?}", cx.dtype(training), cx.shape(training)));
    }
    let ratio = cx.opt_input(1);
    if let Some(r) = ratio
        && (!cx.dtype(r).is_float() || cx.len(r) != 1)
    {
        return Err(format!("ratio of {}{:?}", cx.dtype(r), cx.shape(r)));
    }
    let mask = cx.output(1).ok();
    if let Some(m) = mask
        && cx.len(m) != cx.len(y)
    {
        return Err("the mask differs in size from the output".into());
    }
    // A seed per node, so that two dropouts of one graph differ.
    let seed = cx.step.node_id as u64 ^ 0x5eed_d12a_0b07_u64;
    Ok(vec![Kernel::Dropout { dtype, x, y, mask, ratio, training, seed }])
}

fn op_name(op: &ElementwiseOp) -> &'static str {
    match op {
        ElementwiseOp::IsNaN => "IsNaN",
        _ => "IsInf",
    }
}

/// Sum/Max/Min/Mean of one or more inputs: a chain of in-place broadcasting binaries.
fn variadic(cx: &mut Cx, v: VariadicOp) -> Lowered {
    let y = cx.single_output()?;
    let inputs: Vec<SlotId> = (0..cx.step.inputs.len()).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    let code = match v {
        VariadicOp::Sum | VariadicOp::Mean => BinaryCode::Add,
        VariadicOp::Max => BinaryCode::Max,
        VariadicOp::Min => BinaryCode::Min,
    };
    let dtype = cx.dtype(y);
    let mut ks = Vec::new();
    match inputs.as_slice() {
        [] => return Err("no inputs".into()),
        [x] => ks.push(expand_into(cx, *x, y)?),
        [a, b, rest @ ..] => {
            // The running value must not be broadcast over the output as it is written.
            let (a, b) = (*a, *b);
            ks.push(binary_code_kernel(cx, code, a, b, y)?);
            if !rest.is_empty() && cx.len(y) != cx.len(a).max(cx.len(b)) {
                // y holds the broadcast of a and b only if their shape is y's.
                return Err("more than two inputs that broadcast to a larger output".into());
            }
            for &c in rest {
                ks.push(binary_code_kernel(cx, code, y, c, y)?);
            }
        }
    }
    if v == VariadicOp::Mean {
        if !is_float(dtype) && dtype != DType::F64 {
            return Err(format!("Mean of dtype {dtype}"));
        }
        let t = cx.temp(dtype, &[]);
        ks.push(Kernel::Fill { dtype, y: t, value: 1.0 / inputs.len() as f64 });
        ks.push(binary_code_kernel(cx, BinaryCode::Mul, y, t, y)?);
    }
    Ok(ks)
}

/// `x` broadcast into `y` (a copy when the shapes agree).
pub(crate) fn expand_into(cx: &Cx, x: SlotId, y: SlotId) -> Result<Kernel, String> {
    let (xs, out) = (cx.shape(x), cx.shape(y));
    if cx.dtype(x) != cx.dtype(y) {
        return Err(format!("{} into {}", cx.dtype(x), cx.dtype(y)));
    }
    let copy = super::movement::expand_spec(&xs, &out)?;
    Ok(Kernel::Copy { dtype: cx.dtype(y), src: x, dst: y, copy })
}

/// Clip: bounds from the attributes (older opsets) or inputs 1 and 2 (constants: one
/// unary kernel; tensors: broadcasting Max and Min).
fn clip(cx: &mut Cx, min: Option<f32>, max: Option<f32>) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.single_output()?);
    let dtype = cx.dtype(y);
    let scalar = |cx: &Cx, i: usize| -> Result<Option<Option<f32>>, String> {
        match cx.opt_input(i) {
            None => Ok(Some(None)),
            Some(_) => match cx.constant(i) {
                Some(t) if t.len() == 1 => Ok(Some(Some(t.to_f64_vec().map_err(|e| e.to_string())?[0] as f32))),
                _ => Ok(None),
            },
        }
    };
    let (lo, hi) = if cx.step.inputs.len() > 1 { (scalar(cx, 1)?, scalar(cx, 2)?) } else { (Some(min), Some(max)) };
    if let (Some(lo), Some(hi), true) = (lo, hi, is_float(dtype)) {
        if cx.dtype(x) != dtype {
            return Err("input and output differ in dtype".into());
        }
        let p = [lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY)];
        return Ok(vec![Kernel::Unary { code: UnaryCode::Clip, p, dtype, x, y, n: cx.len(y) }]);
    }
    // Bounds as tensors (or integer data): y = min(max(x, lo), hi).
    let mut ks = vec![];
    let mut cur = x;
    for (i, code) in [(1, BinaryCode::Max), (2, BinaryCode::Min)] {
        if let Some(b) = cx.opt_input(i) {
            ks.push(binary_code_kernel(cx, code, cur, b, y)?);
            cur = y;
        }
    }
    if cur != y {
        ks.push(cx.copy_all(x, y));
    }
    Ok(ks)
}
