//! Ops that only change the shape (no copy: the bytes are shared) and shape queries.

use kiln_ir::ops::movement::{fill_tensor, reshape_dims, shape_range, squeeze_dims, unsqueeze_dims};
use kiln_ir::{Dim, Tensor};

use super::ints;
use crate::{CpuError, Result};

fn known(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

fn numbers(dims: Vec<Dim>, op: &str) -> Result<Vec<usize>> {
    dims.iter().map(|d| d.known().ok_or_else(|| CpuError::invalid(op, "could not resolve the output shape"))).collect()
}

pub fn reshape(x: &Tensor, shape: &Tensor, allowzero: bool) -> Result<Tensor> {
    let dims = numbers(reshape_dims(&known(x.shape()), &ints(shape)?, allowzero)?, "Reshape")?;
    Ok(x.reshaped(dims)?)
}

pub fn flatten(x: &Tensor, axis: i64) -> Result<Tensor> {
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(CpuError::invalid("Flatten", format!("axis {axis} is out of range for rank {r}")));
    }
    let (head, tail) = x.shape().split_at(a as usize);
    Ok(x.reshaped(vec![head.iter().product(), tail.iter().product()])?)
}

pub fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> Result<Tensor> {
    let dims = squeeze_dims(&known(x.shape()), axes)?.unwrap_or_default();
    Ok(x.reshaped(numbers(dims, "Squeeze")?)?)
}

pub fn unsqueeze(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    Ok(x.reshaped(numbers(unsqueeze_dims(&known(x.shape()), axes)?, "Unsqueeze")?)?)
}

pub fn shape(x: &Tensor, start: i64, end: Option<i64>) -> Result<Tensor> {
    let (a, b) = shape_range(x.rank(), start, end);
    let dims: Vec<i64> = x.shape()[a..b].iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_vec(vec![dims.len()], dims)?)
}

pub fn constant_of_shape(shape: &Tensor, value: &Tensor) -> Result<Tensor> {
    let dims = ints(shape)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| CpuError::invalid("ConstantOfShape", format!("negative dim {d}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(fill_tensor(value, dims)?)
}
