//! Reductions and normalisations: Reduce* (axes from the attribute or a constant input),
//! ArgMax/ArgMin, Softmax/LogSoftmax, LayerNormalization, RMSNormalization.

use kiln_ir::DType;
use kiln_ir::ops::reduce::{ArgKind, ReduceKind, ReduceOp, SoftmaxKind, resolve_reduce_axes};

use super::{Cx, Lowered, axis, is_float};
use crate::executor::Kernel;
use crate::kernels::MAX_RANK;
use crate::launch::reduce::ReducePlan;

pub(crate) fn lower(cx: &mut Cx, op: &ReduceOp) -> Lowered {
    match op {
        ReduceOp::Reduce(r) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let shape = cx.shape(x);
            let dtype = cx.dtype(x);
            let axes_in = match (&r.axes, cx.opt_input(1)) {
                (None, Some(_)) => Some(cx.const_ints(1, "axes")?),
                _ => None,
            };
            let axes = resolve_reduce_axes(r, axes_in, shape.len(), r.kind.name()).map_err(|e| e.to_string())?;
            let Some(axes) = axes else { return Ok(vec![cx.copy_all(x, y)]) };
            let int = matches!(dtype, DType::I32 | DType::I64);
            let int_ok = !matches!(r.kind, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp);
            let plan = ReducePlan::new(&shape, &axes);
            let kept = plan.groups.iter().filter(|g| !g.2).count();
            let red = plan.groups.len() - kept;
            if kept > MAX_RANK || red > MAX_RANK {
                return Err(format!("{} interleaved groups of axes", plan.groups.len()));
            }
            if cx.dtype(y) == dtype && narrow_int(dtype) && int_ok {
                return widened(cx, r.kind, x, axes, y);
            }
            if !(is_float(dtype) || (int && int_ok)) || cx.dtype(y) != dtype {
                return Err(format!("{} of dtype {dtype}", r.kind.name()));
            }
            Ok(vec![Kernel::Reduce { kind: r.kind, dtype, x, axes, y }])
        }
        ReduceOp::Arg(a) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let shape = cx.shape(x);
            let dtype = cx.dtype(x);
            if !is_float(dtype) {
                return Err(format!("dtype {dtype} (floats only)"));
            }
            let ax = axis(a.axis, shape.len())?;
            if shape[ax] == 0 {
                return Err("the axis is empty".into());
            }
            let (max, last) = (a.kind == ArgKind::Max, a.select_last_index);
            Ok(vec![Kernel::ArgReduce { max, last, dtype, x, axis: ax, y }])
        }
        ReduceOp::Softmax(s) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let log = match s.kind {
                SoftmaxKind::Softmax => false,
                SoftmaxKind::LogSoftmax => true,
                SoftmaxKind::Hardmax => return Err("Hardmax has no CUDA kernel yet".into()),
            };
            let dtype = cx.dtype(x);
            if !is_float(dtype) {
                return Err(format!("dtype {dtype} (floats only)"));
            }
            let rank = cx.shape(x).len();
            if rank == 0 {
                return Err("a scalar input".into());
            }
            let ax = axis(s.axis, rank)?;
            Ok(vec![Kernel::Softmax { log, dtype, x, axis: ax, coerce_2d: s.coerce_2d, y }])
        }
        ReduceOp::LayerNorm(l) => {
            let (x, scale, y) = (cx.input(0)?, cx.input(1)?, cx.output(0)?);
            let bias = cx.opt_input(2);
            let dtype = cx.dtype(x);
            if !is_float(dtype) {
                return Err(format!("dtype {dtype} (floats only)"));
            }
            let ax = axis(l.axis, cx.shape(x).len())?;
            check_suffix(cx, "scale", &cx.shape(scale), &cx.shape(x)[ax..])?;
            if let Some(b) = bias {
                check_suffix(cx, "bias", &cx.shape(b), &cx.shape(x)[ax..])?;
            }
            let stats = match (cx.step.outputs.get(1), cx.step.outputs.get(2)) {
                (None, None) => None,
                (Some(&m), Some(&r)) => {
                    if cx.dtype(m) != DType::F32 || cx.dtype(r) != DType::F32 {
                        return Err("Mean and InvStdDev outputs other than f32".into());
                    }
                    Some((m, r))
                }
                _ => return Err("a Mean output without InvStdDev".into()),
            };
            if cx.dtype(scale) != dtype || bias.is_some_and(|b| cx.dtype(b) != dtype) {
                return Err("scale or bias of another dtype".into());
            }
            Ok(vec![Kernel::LayerNorm { dtype, x, axis: ax, scale, bias, eps: l.epsilon, y, stats }])
        }
        ReduceOp::RmsNorm(r) => {
            let (x, scale, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let dtype = cx.dtype(x);
            if !is_float(dtype) || cx.dtype(scale) != dtype {
                return Err(format!("dtype {dtype} (floats only, scale of the same dtype)"));
            }
            let ax = axis(r.axis, cx.shape(x).len())?;
            check_suffix(cx, "scale", &cx.shape(scale), &cx.shape(x)[ax..])?;
            Ok(vec![Kernel::RmsNorm { dtype, x, axis: ax, scale, eps: r.epsilon, y }])
        }
        ReduceOp::TopK(t) => {
            let x = cx.input(0)?;
            let (values, indices) = (cx.output(0)?, cx.output(1)?);
            let shape = cx.shape(x);
            let dtype = cx.dtype(x);
            if !crate::launch::topk::topk_supports(dtype) {
                return Err(format!("dtype {dtype}"));
            }
            let ax = axis(t.axis, shape.len())?;
            let k = match t.k {
                Some(k) => k,
                None => *cx.const_ints(1, "K")?.first().ok_or("K is empty")?,
            };
            let k = usize::try_from(k).map_err(|_| format!("k = {k}"))?;
            if k > shape[ax] {
                return Err(format!("k = {k} is larger than axis {ax} ({})", shape[ax]));
            }
            // Unsorted output may be in any order: the sorted one is a valid answer.
            Ok(vec![Kernel::TopK { largest: t.largest, dtype, x, axis: ax, k, values, indices }])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

/// A scale or bias must broadcast to the normalised dims as a suffix.
fn check_suffix(_cx: &Cx, what: &str, shape: &[usize], norm: &[usize]) -> Result<(), String> {
    let lead = shape.iter().take_while(|&&n| n == 1).count();
    let rest = &shape[lead..];
    if rest.len() > norm.len() || rest != &norm[norm.len() - rest.len()..] {
        return Err(format!("{what} of shape {shape:?} for normalised dims {norm:?}"));
    }
    Ok(())
}

/// Bool and the integers narrower than the i64 kernels: reduced exactly in i64 (the sum,
/// product and mean wrap back the same way; Max/Min of bools are any/all).
fn narrow_int(d: DType) -> bool {
    matches!(d, DType::Bool | DType::I8 | DType::I16 | DType::U8 | DType::U16 | DType::U32)
}

fn widened(cx: &mut Cx, kind: ReduceKind, x: usize, axes: Vec<usize>, y: usize) -> Lowered {
    let (from, xs, ys) = (cx.dtype(x), cx.shape(x), cx.shape(y));
    let (wx, wy) = (cx.temp(DType::I64, &xs), cx.temp(DType::I64, &ys));
    Ok(vec![
        super::elementwise::cast_sat(cx, x, wx, DType::I64, true)?,
        Kernel::Reduce { kind, dtype: DType::I64, x: wx, axes, y: wy },
        super::elementwise::cast_sat(cx, wy, y, from, true)?,
    ])
}
