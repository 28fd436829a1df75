//! Slicing and stacking tensors along an axis by their raw bytes (any dtype).

use kiln_ir::Tensor;

use crate::{CpuError, Result};

/// Resolves a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize, op: &str) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(CpuError::invalid(op, format!("axis {a} is out of range for rank {rank}")))
    }
}

/// Element `index` along `axis`, with that axis removed.
pub fn slice(t: &Tensor, axis: usize, index: usize) -> Result<Tensor> {
    let shape = t.shape();
    let esize = t.dtype().size();
    let (outer, dim): (usize, usize) = (shape[..axis].iter().product(), shape[axis]);
    let inner = shape[axis + 1..].iter().product::<usize>() * esize;
    let src = t.bytes();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let start = (o * dim + index) * inner;
        out.extend_from_slice(&src[start..start + inner]);
    }
    let mut new_shape = shape.to_vec();
    new_shape.remove(axis);
    Ok(Tensor::from_bytes(t.dtype(), new_shape, out.into())?)
}

/// Stacks equally shaped `slices` along a new `axis` (last slice first if `reverse`).
pub fn stack(slices: &[Tensor], axis: usize, reverse: bool, op: &str) -> Result<Tensor> {
    let first = slices.first().ok_or_else(|| CpuError::invalid(op, "nothing to stack"))?;
    if let Some(t) = slices.iter().find(|t| t.shape() != first.shape() || t.dtype() != first.dtype()) {
        return Err(CpuError::invalid(
            op,
            format!("scan outputs differ between iterations: {:?} vs {:?}", first.shape(), t.shape()),
        ));
    }
    let shape = first.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner = shape[axis..].iter().product::<usize>() * first.dtype().size();
    let mut out = Vec::with_capacity(outer * inner * slices.len());
    for o in 0..outer {
        for k in 0..slices.len() {
            let t = &slices[if reverse { slices.len() - 1 - k } else { k }];
            out.extend_from_slice(&t.bytes()[o * inner..(o + 1) * inner]);
        }
    }
    let mut new_shape = shape.to_vec();
    new_shape.insert(axis, slices.len());
    Ok(Tensor::from_bytes(first.dtype(), new_shape, out.into())?)
}

/// The same (empty-safe) tensor with its axis 0 moved to `axis`: only the shape changes
/// when axis 0 has length 0.
pub fn move_axis0(t: &Tensor, axis: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    let d = shape.remove(0);
    shape.insert(axis, d);
    Ok(t.reshaped(shape)?)
}

/// The first `len` entries along axis 0.
pub fn prefix(t: &Tensor, len: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    if shape.is_empty() {
        return Err(CpuError::invalid("Scan", "a scan input has no sequence axis"));
    }
    let row = shape[1..].iter().product::<usize>() * t.dtype().size();
    shape[0] = len;
    Ok(Tensor::from_bytes(t.dtype(), shape, t.bytes().slice(..len * row))?)
}

/// Zero-pads axis 0 to `len` entries.
pub fn pad_axis0(t: &Tensor, len: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    if shape.first().is_none_or(|&d| d >= len) {
        return Ok(t.clone());
    }
    let row = shape[1..].iter().product::<usize>() * t.dtype().size();
    let mut data = t.bytes().to_vec();
    data.resize(len * row, 0);
    shape[0] = len;
    Ok(Tensor::from_bytes(t.dtype(), shape, data.into())?)
}
