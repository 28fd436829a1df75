//! Quantisation ops (`kernels/quant.cu`): QuantizeLinear, DequantizeLinear (per tensor,
//! per axis, blocked; integer and FP8 types), DynamicQuantizeLinear, MatMulInteger and
//! QLinearMatMul (exact wrapping i32 accumulation in a direct kernel).

use kiln_ir::DType;
use kiln_ir::ops::quant::QuantOp;

use super::index::slot;
use super::{Cx, Lowered};
use crate::executor::Kernel;
use crate::kernels::QUANT;
use crate::launch::call::{Arg, Call, Grid};
use crate::plan::SlotId;

/// `quant.cu`'s element type codes.
fn code(d: DType) -> Result<i32, String> {
    Ok(match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::I8 => 3,
        DType::U8 => 4,
        DType::I16 => 5,
        DType::U16 => 6,
        DType::I32 => 7,
        DType::F8E4M3FN => 8,
        DType::F8E5M2 => 9,
        d => return Err(format!("dtype {d}")),
    })
}

/// The kernel's `QLayout`: how an element finds its scale.
#[derive(Clone, Copy, Debug, Default)]
struct QLayout {
    mode: i64,
    dim: i64,
    inner: i64,
    block: i64,
    blocks: i64,
}

/// `QLayout` as the `Dims` argument it is laid out like: {mode, dim, inner, block, blocks}.
fn layout_arg(l: QLayout) -> Result<Arg, String> {
    Ok(Arg::Dims(crate::launch::call::Dims::of(&[l.mode, l.dim, l.inner, l.block, l.blocks, 0, 0, 0])?))
}

fn layout(x: &[usize], param: &[usize], a: i64, block: usize) -> Result<QLayout, String> {
    let n: usize = param.iter().product();
    if param.is_empty() || (n == 1 && block == 0 && param.len() == 1) {
        return Ok(QLayout::default());
    }
    let a = super::axis(a, x.len())?;
    let (dim, inner) = (x[a], x[a + 1..].iter().product::<usize>());
    if block == 0 {
        if param.len() != 1 || param[0] != dim {
            return Err(format!("scale {param:?} does not fit x {x:?} on axis {a}"));
        }
        return Ok(QLayout { mode: 1, dim: dim as i64, inner: inner as i64, block: 0, blocks: 0 });
    }
    let blocks = dim.div_ceil(block);
    let fits = param.len() == x.len()
        && param.iter().zip(x).enumerate().all(|(i, (&p, &d))| if i == a { p == blocks } else { p == d });
    if !fits {
        return Err(format!("blocked scale {param:?} does not fit x {x:?} with block {block}"));
    }
    Ok(QLayout { mode: 2, dim: dim as i64, inner: inner as i64, block: block as i64, blocks: blocks as i64 })
}

fn call(function: &str, args: Vec<Arg>, grid: Grid) -> Kernel {
    Kernel::Call(Call { module: QUANT.name, function: function.into(), args, grid })
}

/// The type numpy divides `a / b` in (kiln-cpu's `wider`), as a precision code (-1: f64).
fn precision(a: DType, b: DType) -> i32 {
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 => 2,
        DType::F16 | DType::BF16 => 1,
        _ => 3,
    };
    let d = if a == b && a.is_float() {
        a
    } else if rank(a) == 3 || rank(b) == 3 {
        DType::F64
    } else if rank(a) == rank(b) {
        DType::F32
    } else if rank(a) > rank(b) {
        a
    } else {
        b
    };
    code(d).unwrap_or(-1)
}

pub(crate) fn lower(cx: &mut Cx, op: &QuantOp) -> Lowered {
    match op {
        QuantOp::Quantize(q) => {
            let (x, scale, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let zero = cx.opt_input(2);
            let (xd, sd, yd) = (cx.dtype(x), cx.dtype(scale), cx.dtype(y));
            if !matches!(xd, DType::F32 | DType::F16 | DType::BF16)
                || !matches!(sd, DType::F32 | DType::F16 | DType::BF16)
            {
                return Err(format!("x {xd}, scale {sd}"));
            }
            if matches!(yd, DType::F32 | DType::F16 | DType::BF16 | DType::I32) {
                return Err(format!("output {yd}"));
            }
            let l = layout(&cx.shape(x), &cx.shape(scale), q.axis, q.block_size)?;
            if let Some(z) = zero
                && (cx.dtype(z) != yd || cx.len(z) != cx.len(scale))
            {
                return Err(format!("zero point {}{:?}", cx.dtype(z), cx.shape(z)));
            }
            let prec = match q.precision {
                Some(DType::F64) => -1,
                Some(p) => code(p)?,
                None => precision(xd, sd),
            };
            if prec > 2 {
                return Err("precision of an integer type".into());
            }
            let args = vec![
                slot(cx, x),
                Arg::I32(code(xd)?),
                slot(cx, scale),
                Arg::I32(code(sd)?),
                zero.map_or(Arg::Null, |z| slot(cx, z)),
                slot(cx, y),
                Arg::I32(code(yd)?),
                Arg::I64(cx.len(y) as i64),
                layout_arg(l)?,
                Arg::I32(prec),
                Arg::I32(i32::from(q.saturate)),
            ];
            Ok(vec![call("kiln_quantize", args, Grid::Items(cx.len(y)))])
        }
        QuantOp::Dequantize(d) => {
            let (x, scale, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let zero = cx.opt_input(2);
            let (xd, sd, yd) = (cx.dtype(x), cx.dtype(scale), cx.dtype(y));
            if matches!(xd, DType::F32 | DType::F16 | DType::BF16)
                || !matches!(sd, DType::F32 | DType::F16 | DType::BF16)
                || !matches!(yd, DType::F32 | DType::F16 | DType::BF16)
            {
                return Err(format!("x {xd}, scale {sd}, y {yd}"));
            }
            let l = layout(&cx.shape(x), &cx.shape(scale), d.axis, d.block_size)?;
            if let Some(z) = zero
                && (cx.dtype(z) != xd || cx.len(z) != cx.len(scale))
            {
                return Err(format!("zero point {}{:?}", cx.dtype(z), cx.shape(z)));
            }
            let args = vec![
                slot(cx, x),
                Arg::I32(code(xd)?),
                slot(cx, scale),
                Arg::I32(code(sd)?),
                zero.map_or(Arg::Null, |z| slot(cx, z)),
                slot(cx, y),
                Arg::I32(code(yd)?),
                Arg::I64(cx.len(y) as i64),
                layout_arg(l)?,
            ];
            Ok(vec![call("kiln_dequantize", args, Grid::Items(cx.len(y)))])
        }
        QuantOp::DynamicQuantize => {
            let x = cx.input(0)?;
            let (y, s, z) = (cx.output(0)?, cx.output(1)?, cx.output(2)?);
            if cx.dtype(x) != DType::F32 || cx.dtype(y) != DType::U8 || cx.dtype(s) != DType::F32 {
                return Err(format!("x {}", cx.dtype(x)));
            }
            if cx.len(s) != 1 || cx.len(z) != 1 || cx.dtype(z) != DType::U8 {
                return Err("scale and zero point must be scalars".into());
            }
            let n = Arg::I64(cx.len(x) as i64);
            let params = vec![slot(cx, x), n.clone(), slot(cx, s), slot(cx, z)];
            let apply = vec![slot(cx, x), n, slot(cx, s), slot(cx, z), slot(cx, y)];
            Ok(vec![
                call("kiln_dynamic_quantize_params", params, Grid::OneBlock),
                call("kiln_dynamic_quantize", apply, Grid::Items(cx.len(x))),
            ])
        }
        QuantOp::MatMulInteger => {
            let (a, b, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            if cx.dtype(y) != DType::I32 {
                return Err(format!("output {}", cx.dtype(y)));
            }
            let args = matmul_args(cx, (a, cx.opt_input(2)), (b, cx.opt_input(3)), None, None, y)?;
            Ok(vec![call("kiln_matmul_integer", args, Grid::Items(cx.len(y)))])
        }
        QuantOp::QLinearMatMul => {
            let (a, b, y) = (cx.input(0)?, cx.input(3)?, cx.single_output()?);
            let scales = (cx.input(1)?, cx.input(4)?, cx.input(6)?);
            let args = matmul_args(cx, (a, cx.opt_input(2)), (b, cx.opt_input(5)), Some(scales), cx.opt_input(7), y)?;
            Ok(vec![call("kiln_matmul_integer", args, Grid::Items(cx.len(y)))])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

/// The arguments of `kiln_matmul_integer` for `a · b` (numpy matmul shapes, each with an
/// optional zero point), requantized when `scales` (a, b, y) are given.
fn matmul_args(
    cx: &Cx,
    (a, az): (SlotId, Option<SlotId>),
    (b, bz): (SlotId, Option<SlotId>),
    scales: Option<(SlotId, SlotId, SlotId)>,
    y_zero: Option<SlotId>,
    y: SlotId,
) -> Result<Vec<Arg>, String> {
    let (ad, bd) = (cx.dtype(a), cx.dtype(b));
    for d in [ad, bd] {
        if !matches!(d, DType::I8 | DType::U8) {
            return Err(format!("operand of dtype {d}"));
        }
    }
    let (sa, sb) = (cx.shape(a), cx.shape(b));
    if sa.is_empty() || sb.is_empty() {
        return Err("scalar operand".into());
    }
    let a2 = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
    let b2 = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("inner dims of {sa:?} and {sb:?} differ"));
    }
    let ab: usize = a2[..a2.len() - 2].iter().product();
    let bb: usize = b2[..b2.len() - 2].iter().product();
    let batch = cx.len(y) / (m * n).max(1);
    let bs = |nb: usize, stride: usize| -> Result<i64, String> {
        if nb == batch {
            Ok(stride as i64)
        } else if nb == 1 {
            Ok(0)
        } else {
            Err(format!("batch broadcasting of {sa:?} · {sb:?}"))
        }
    };
    let (a_bs, b_bs) = (bs(ab, m * k)?, bs(bb, k * n)?);
    let zlen = |z: Option<SlotId>, d: DType, along: usize| -> Result<i64, String> {
        match z {
            None => Ok(1),
            Some(z) if cx.dtype(z) == d && (cx.len(z) == 1 || cx.len(z) == along) => Ok(cx.len(z) as i64),
            Some(z) => Err(format!("zero point {}{:?}", cx.dtype(z), cx.shape(z))),
        }
    };
    let (az_len, bz_len) = (zlen(az, ad, m)?, zlen(bz, bd, n)?);
    let mut bs_len = 1i64;
    let mut s_code = 0;
    if let Some((s_a, s_b, s_y)) = scales {
        let sd = cx.dtype(s_a);
        if cx.dtype(s_b) != sd || cx.dtype(s_y) != sd || !matches!(sd, DType::F32 | DType::F16 | DType::BF16) {
            return Err("scales of different or non-float dtypes".into());
        }
        if cx.len(s_a) != 1 || cx.len(s_y) != 1 || (cx.len(s_b) != 1 && cx.len(s_b) != n) {
            return Err("input and output scales must be scalars, b's one per column".into());
        }
        bs_len = cx.len(s_b) as i64;
        s_code = code(sd)?;
        let yd = cx.dtype(y);
        if !matches!(yd, DType::I8 | DType::U8) || y_zero.is_some_and(|z| cx.dtype(z) != yd) {
            return Err(format!("output {yd}"));
        }
    }
    let desc = [batch as i64, m as i64, n as i64, k as i64, a_bs, b_bs, az_len, bz_len];
    let opt = |s: Option<SlotId>| s.map_or(Arg::Null, |s| slot(cx, s));
    Ok(vec![
        slot(cx, a),
        Arg::I32(code(ad)?),
        slot(cx, b),
        Arg::I32(code(bd)?),
        opt(az),
        opt(bz),
        Arg::Dims(crate::launch::call::Dims::of(&desc)?),
        Arg::I64(bs_len),
        opt(scales.map(|s| s.0)),
        opt(scales.map(|s| s.1)),
        opt(scales.map(|s| s.2)),
        Arg::I32(s_code),
        opt(y_zero),
        slot(cx, y),
        Arg::I32(code(cx.dtype(y))?),
    ])
}
