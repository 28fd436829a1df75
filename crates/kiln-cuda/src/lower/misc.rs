//! Small ops with kernels of their own: Range, Trilu, EyeLike, ReverseSequence, CumSum/CumProd
//! (`misc.cu`, EyeLike in `elementwise.cu`) and Hardmax.

use kiln_ir::DType;
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::reduce::Softmax;

use super::elementwise::check_rank;
use super::{Cx, Lowered, axis, is_float, is_storage};
use crate::executor::Kernel;

/// The dtypes CumSum/CumProd run on: floats (f64 too) and every integer.
fn cumulate_ok(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64) || d.is_integer()
}

/// Input `i` as one integer read on the host (it must be a constant).
fn const_scalar(cx: &Cx, i: usize, what: &str) -> Result<i64, String> {
    match cx.const_ints(i, what)?.as_slice() {
        [v] => Ok(*v),
        v => Err(format!("{what} has {} values (one expected)", v.len())),
    }
}

pub(crate) fn lower_movement(cx: &mut Cx, op: &MovementOp) -> Lowered {
    match op {
        MovementOp::Trilu { upper } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = cx.dtype(y);
            if cx.dtype(x) != dtype || !is_storage(dtype) || cx.shape(x) != cx.shape(y) || cx.shape(y).len() < 2 {
                return Err(format!("Trilu of {}{:?} into {dtype}{:?}", cx.dtype(x), cx.shape(x), cx.shape(y)));
            }
            let (k, k_input) = match cx.opt_input(1) {
                None => (0, None),
                Some(_) if cx.constant(1).is_some() => (const_scalar(cx, 1, "k")?, None),
                Some(s) if cx.dtype(s) == DType::I64 && cx.len(s) == 1 => (0, Some(s)),
                Some(s) => return Err(format!("k of {}{:?}", cx.dtype(s), cx.shape(s))),
            };
            Ok(vec![Kernel::Trilu { dtype, upper: *upper, k, k_input, x, y }])
        }
        MovementOp::EyeLike { k, .. } => {
            let y = cx.single_output()?;
            let (dtype, shape) = (cx.dtype(y), cx.shape(y));
            if shape.len() != 2 || !is_storage(dtype) {
                return Err(format!("EyeLike into {dtype}{shape:?} (2-D expected)"));
            }
            Ok(vec![Kernel::Eye { dtype, k: *k, y }])
        }
        MovementOp::ReverseSequence { batch_axis, time_axis } => {
            let (x, lens, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let (dtype, shape) = (cx.dtype(y), cx.shape(y));
            let axes_ok = *batch_axis <= 1 && *time_axis <= 1 && batch_axis != time_axis;
            if cx.dtype(x) != dtype || !is_storage(dtype) || cx.shape(x) != shape || shape.len() < 2 || !axes_ok {
                return Err(format!(
                    "ReverseSequence of {dtype}{shape:?}, batch axis {batch_axis}, time axis {time_axis}"
                ));
            }
            if cx.dtype(lens) != DType::I64 || cx.len(lens) != shape[*batch_axis] {
                return Err(format!("sequence_lens of {}{:?}", cx.dtype(lens), cx.shape(lens)));
            }
            Ok(vec![Kernel::ReverseSequence { dtype, x, lens, batch_axis: *batch_axis, time_axis: *time_axis, y }])
        }
        MovementOp::CumSum { exclusive, reverse } | MovementOp::CumProd { exclusive, reverse } => {
            let prod = matches!(op, MovementOp::CumProd { .. });
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let (dtype, shape) = (cx.dtype(y), cx.shape(y));
            if cx.dtype(x) != dtype || !cumulate_ok(dtype) || cx.shape(x) != shape || shape.is_empty() {
                let name = if prod { "CumProd" } else { "CumSum" };
                return Err(format!("{name} of {}{:?} into {dtype}{shape:?}", cx.dtype(x), cx.shape(x)));
            }
            check_rank(shape.len())?;
            let (a, axis_input) = match cx.input(1)? {
                _ if cx.constant(1).is_some() => (axis(const_scalar(cx, 1, "axis")?, shape.len())? as i64, None),
                s if matches!(cx.dtype(s), DType::I32 | DType::I64) && cx.len(s) == 1 => (0, Some(s)),
                s => return Err(format!("axis of {}{:?}", cx.dtype(s), cx.shape(s))),
            };
            let (exclusive, reverse) = (*exclusive, *reverse);
            Ok(vec![Kernel::Cumulate { dtype, prod, exclusive, reverse, x, axis: a, axis_input, y }])
        }
        MovementOp::Range => {
            let (start, delta, y) = (cx.input(0)?, cx.input(2)?, cx.single_output()?);
            let dtype = cx.dtype(y);
            let ok = cumulate_ok(dtype) && cx.shape(y).len() == 1;
            if !ok || [start, delta].iter().any(|&s| cx.dtype(s) != dtype || cx.len(s) != 1) {
                return Err(format!(
                    "Range of {} and {} into {dtype}{:?}",
                    cx.dtype(start),
                    cx.dtype(delta),
                    cx.shape(y)
                ));
            }
            Ok(vec![Kernel::Range { dtype, start, delta, y }])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

pub(crate) fn hardmax(cx: &mut Cx, s: &Softmax) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.single_output()?);
    let dtype = cx.dtype(x);
    if !is_float(dtype) || cx.dtype(y) != dtype || cx.shape(x) != cx.shape(y) {
        return Err(format!("Hardmax of {dtype} (floats only)"));
    }
    let rank = cx.shape(x).len();
    if rank == 0 {
        return Err("a scalar input".into());
    }
    let ax = axis(s.axis, rank)?;
    Ok(vec![Kernel::Hardmax { dtype, x, axis: ax, coerce_2d: s.coerce_2d, y }])
}
