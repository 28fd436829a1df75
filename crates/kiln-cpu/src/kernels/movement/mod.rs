//! Data movement kernels. Most move elements by storage (`u8`/`u16`/`u32`/`u64` for
//! every dtype of that size), so one generic routine serves all dtypes; the index
//! arithmetic they share lives in `kiln_ir::ops::movement` (also used for folding).

mod gather;
mod generate;
mod layout;
mod pad;
mod scatter;
mod shape;

use kiln_ir::ops::MovementOp;
use kiln_ir::ops::OpFamily;
use kiln_ir::{DType, Tensor};

use crate::array::req;
use crate::{CpuError, EvalContext, Result, dispatch};

pub fn eval(op: &MovementOp, inputs: &[Option<Tensor>], n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    let x = req(inputs, 0, name)?;
    use MovementOp::*;
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        Reshape { allowzero } => one(shape::reshape(x, req(inputs, 1, name)?, *allowzero)),
        Flatten { axis } => one(shape::flatten(x, *axis)),
        Squeeze { axes } => one(shape::squeeze(x, axes_arg(axes, inputs, 1)?.as_deref())),
        Unsqueeze { axes } => {
            let axes = axes_arg(axes, inputs, 1)?.ok_or_else(|| CpuError::invalid(name, "axes are required"))?;
            one(shape::unsqueeze(x, &axes))
        }
        Shape { start, end } => one(shape::shape(x, *start, *end)),
        Size => Ok(vec![Tensor::scalar(x.len() as i64)]),
        ConstantOfShape { value } => one(shape::constant_of_shape(x, value)),
        Transpose { perm } => one(layout::transpose(x, perm.as_deref())),
        Slice { attrs } => one(layout::slice(x, attrs.as_ref(), inputs)),
        Expand => one(layout::expand(x, req(inputs, 1, name)?)),
        Tile => one(layout::tile(x, req(inputs, 1, name)?)),
        DepthToSpace { blocksize, mode } => one(layout::depth_to_space(x, *blocksize, *mode)),
        SpaceToDepth { blocksize } => one(layout::space_to_depth(x, *blocksize)),
        Concat { axis } => one(layout::concat(inputs, *axis)),
        Split { axis, split, num_outputs } => {
            let split = match split {
                Some(s) => Some(s.clone()),
                None => inputs.get(1).and_then(Option::as_ref).map(ints).transpose()?,
            };
            layout::split(x, *axis, split.as_deref(), num_outputs.unwrap_or(n_outputs))
        }
        ReverseSequence { batch_axis, time_axis } => {
            one(layout::reverse_sequence(x, req(inputs, 1, name)?, *batch_axis, *time_axis))
        }
        Gather { axis } => one(gather::gather(x, req(inputs, 1, name)?, *axis)),
        GatherElements { axis } => one(gather::gather_elements(x, req(inputs, 1, name)?, *axis)),
        GatherND { batch_dims } => one(gather::gather_nd(x, req(inputs, 1, name)?, *batch_dims)),
        Compress { axis } => one(gather::compress(x, req(inputs, 1, name)?, *axis)),
        NonZero => one(gather::nonzero(x)),
        ScatterND { reduction } => {
            one(scatter::scatter_nd(x, req(inputs, 1, name)?, req(inputs, 2, name)?, *reduction))
        }
        ScatterElements { axis, reduction, .. } => {
            one(scatter::scatter_elements(x, req(inputs, 1, name)?, req(inputs, 2, name)?, *axis, *reduction))
        }
        Pad { mode, pads, value } => one(pad::pad(x, *mode, pads.as_deref(), *value, inputs)),
        Range => one(generate::range(x, req(inputs, 1, name)?, req(inputs, 2, name)?)),
        Trilu { upper } => one(generate::trilu(x, inputs.get(1).and_then(Option::as_ref), *upper)),
        OneHot { axis } => one(generate::one_hot(x, req(inputs, 1, name)?, req(inputs, 2, name)?, *axis)),
        CumSum { exclusive, reverse } => one(generate::cumsum(x, req(inputs, 1, name)?, *exclusive, *reverse)),
        CumProd { exclusive, reverse } => one(generate::cumprod(x, req(inputs, 1, name)?, *exclusive, *reverse)),
        TensorScatter { axis, circular } => {
            let (update, indices) = (req(inputs, 1, name)?, inputs.get(2).and_then(Option::as_ref));
            one(scatter::tensor_scatter(x, update, indices, *axis, *circular))
        }
        EyeLike { dtype, k } => one(generate::eye_like(x, dtype.unwrap_or(x.dtype()), *k)),
    }
}

/// Any integer tensor's elements as i64.
fn ints(t: &Tensor) -> Result<Vec<i64>> {
    Ok(t.to_i64_vec()?)
}

/// A scalar (or one-element) integer input.
fn scalar_int(t: &Tensor, op: &str, what: &str) -> Result<i64> {
    match ints(t)?.as_slice() {
        [v] => Ok(*v),
        _ => Err(CpuError::invalid(op, format!("{what} must have exactly one element, got shape {:?}", t.shape()))),
    }
}

/// Axes from the attribute, else from input `i` if present.
fn axes_arg(attr: &Option<Vec<i64>>, inputs: &[Option<Tensor>], i: usize) -> Result<Option<Vec<i64>>> {
    match attr {
        Some(a) => Ok(Some(a.clone())),
        None => inputs.get(i).and_then(Option::as_ref).map(ints).transpose(),
    }
}

/// One element of `dtype` holding `v` (cast as ONNX `Cast` would for exact values).
fn scalar_of(dtype: DType, v: f64, op: &str) -> Result<Tensor> {
    if v == 0.0 {
        return Ok(Tensor::zeros(dtype, vec![]));
    }
    if dtype == DType::Bool {
        return Ok(Tensor::from_bools(vec![], vec![v != 0.0])?);
    }
    dispatch!(num, dtype, op, T => {
        let t: T = num_traits::NumCast::from(v).ok_or_else(|| CpuError::invalid(op, format!("{v} does not fit {dtype}")))?;
        Ok(Tensor::scalar(t))
    })
}

/// Row-major strides of `shape` as signed numbers.
fn signed_strides(shape: &[usize]) -> Vec<isize> {
    kiln_ir::ops::movement::strides_of(shape).into_iter().map(|s| s as isize).collect()
}

/// Resolves an axis against `rank`.
fn axis_of(axis: i64, rank: usize, op: &str) -> Result<usize> {
    Ok(kiln_ir::ops::normalize_axis(axis, rank, op)?)
}

/// Calls `f(coords)` for every position of `shape` in row-major order.
fn for_each_coord(shape: &[usize], mut f: impl FnMut(&[usize]) -> Result<()>) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    let mut c = vec![0usize; shape.len()];
    loop {
        f(&c)?;
        let mut k = shape.len();
        loop {
            if k == 0 {
                return Ok(());
            }
            k -= 1;
            c[k] += 1;
            if c[k] < shape[k] {
                break;
            }
            c[k] = 0;
        }
    }
}

/// Resolves one possibly negative index against `dim`.
fn index_in(i: i64, dim: usize, op: &str) -> Result<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if (0..dim as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(CpuError::invalid(op, format!("index {i} is out of range for a dim of {dim}")))
    }
}
