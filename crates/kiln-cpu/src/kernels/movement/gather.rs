//! Reading elements at given indices: Gather, GatherElements, GatherND, Compress, NonZero.

use kiln_ir::ops::movement::{gather_blocks, resolve_indices, strides_of};
use kiln_ir::{DType, Tensor, with_storage};

use super::{axis_of, for_each_coord, index_in, ints};
use crate::{CpuError, Result};

/// Gathers whole slices `x[.., i, ..]` along `axis` for each index (as block copies).
fn take_along(x: &Tensor, axis: usize, idx: &[usize], idx_shape: &[usize]) -> Result<Tensor> {
    let s = x.shape();
    let inner: usize = s[axis + 1..].iter().product();
    let shape: Vec<usize> = s[..axis].iter().chain(idx_shape).chain(&s[axis + 1..]).copied().collect();
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let mut out = Vec::with_capacity(shape.iter().product());
        gather_blocks(&src, s[axis], inner, idx, &mut out);
        Ok(Tensor::from_vec_as(x.dtype(), shape, out)?)
    })
}

pub fn gather(x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(CpuError::invalid("Gather", "data must have rank >= 1"));
    }
    let a = axis_of(axis, x.rank(), "Gather")?;
    let idx = resolve_indices(&ints(indices)?, x.shape()[a], "Gather")?;
    take_along(x, a, &idx, indices.shape())
}

pub fn gather_elements(x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor> {
    let op = "GatherElements";
    if x.rank() != indices.rank() {
        return Err(CpuError::invalid(op, format!("ranks differ: {} and {}", x.rank(), indices.rank())));
    }
    let a = axis_of(axis, x.rank(), op)?;
    let idx = ints(indices)?;
    let st = strides_of(x.shape());
    let dim = x.shape()[a];
    // The flat source position of each output element.
    let mut from = Vec::with_capacity(idx.len());
    for_each_coord(indices.shape(), |c| {
        let i = index_in(idx[from.len()], dim, op)?;
        let mut p = 0usize;
        for (k, (&ck, &sk)) in c.iter().zip(&st).enumerate() {
            let v = if k == a { i } else { ck };
            if k != a && ck >= x.shape()[k] {
                return Err(CpuError::invalid(op, format!("indices shape {:?} exceeds data", indices.shape())));
            }
            p += v * sk;
        }
        from.push(p);
        Ok(())
    })?;
    pick(x, &from, indices.shape().to_vec())
}

/// The elements of `x` at flat positions `from`, as a tensor of `shape`.
fn pick(x: &Tensor, from: &[usize], shape: Vec<usize>) -> Result<Tensor> {
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let out: Vec<T> = from.iter().map(|&p| src[p]).collect();
        Ok(Tensor::from_vec_as(x.dtype(), shape, out)?)
    })
}

/// Index tuples of GatherND/ScatterND resolved to flat offsets of the blocks they
/// address, and the block length. `b` leading dims are batch dims.
pub(super) fn nd_offsets(data: &[usize], indices: &Tensor, b: usize, op: &str) -> Result<(Vec<usize>, usize)> {
    let is = indices.shape();
    let q = is.len();
    let k = *is.last().ok_or_else(|| CpuError::invalid(op, "indices must have rank >= 1"))?;
    if b >= q || b > data.len() || b + k > data.len() || data[..b] != is[..b] {
        return Err(CpuError::invalid(op, format!("indices {is:?} do not fit data {data:?} with batch_dims {b}")));
    }
    let st = strides_of(data);
    let inner: usize = data[b + k..].iter().product();
    let batch_stride: usize = data[b..].iter().product();
    let per_batch: usize = is[b..q - 1].iter().product();
    let idx = ints(indices)?;
    let offsets = idx
        .chunks(k.max(1))
        .take(is[..q - 1].iter().product())
        .enumerate()
        .map(|(n, tuple)| {
            let tuple = if k == 0 { &[][..] } else { tuple };
            let mut p = n.checked_div(per_batch).unwrap_or(0) * batch_stride;
            for (j, &i) in tuple.iter().enumerate() {
                p += index_in(i, data[b + j], op)? * st[b + j];
            }
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((offsets, inner))
}

pub fn gather_nd(x: &Tensor, indices: &Tensor, b: usize) -> Result<Tensor> {
    let op = "GatherND";
    let (offsets, inner) = nd_offsets(x.shape(), indices, b, op)?;
    let is = indices.shape();
    let k = is[is.len() - 1];
    let shape: Vec<usize> = is[..is.len() - 1].iter().chain(&x.shape()[b + k..]).copied().collect();
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let mut out = Vec::with_capacity(offsets.len() * inner);
        for p in offsets {
            out.extend_from_slice(&src[p..p + inner]);
        }
        Ok(Tensor::from_vec_as(x.dtype(), shape, out)?)
    })
}

pub fn compress(x: &Tensor, cond: &Tensor, axis: Option<i64>) -> Result<Tensor> {
    let op = "Compress";
    if cond.rank() != 1 {
        return Err(CpuError::invalid(op, "condition must be 1-D"));
    }
    let flat;
    let (x, a) = match axis {
        Some(a) => (x, axis_of(a, x.rank(), op)?),
        None => {
            flat = x.reshaped(vec![x.len()])?;
            (&flat, 0)
        }
    };
    let dim = x.shape()[a];
    let keep: Vec<usize> = ints(cond)?.iter().enumerate().filter(|(_, v)| **v != 0).map(|(i, _)| i).collect();
    if keep.last().is_some_and(|&i| i >= dim) {
        return Err(CpuError::invalid(op, format!("condition selects past the dim {dim}")));
    }
    take_along(x, a, &keep, &[keep.len()])
}

/// Whether each element is non-zero (negative zero counts as zero; NaN does not).
fn nonzero_mask(x: &Tensor) -> Result<Vec<bool>> {
    Ok(match x.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => x.to_f64_vec()?.iter().map(|&v| v != 0.0).collect(),
        DType::F8E4M3FN | DType::F8E5M2 => x.bytes().iter().map(|&b| b & 0x7f != 0).collect(),
        _ => with_storage!(x.dtype(), T => x.as_slice::<T>()?.iter().map(|&v| v != 0).collect()),
    })
}

pub fn nonzero(x: &Tensor) -> Result<Tensor> {
    let mask = nonzero_mask(x)?;
    let nnz = mask.iter().filter(|&&m| m).count();
    let r = x.rank();
    let mut out = vec![0i64; r * nnz];
    let (mut n, mut flat) = (0usize, 0usize);
    for_each_coord(x.shape(), |c| {
        if mask[flat] {
            for (k, &ck) in c.iter().enumerate() {
                out[k * nnz + n] = ck as i64;
            }
            n += 1;
        }
        flat += 1;
        Ok(())
    })?;
    Ok(Tensor::from_vec(vec![r, nnz], out)?)
}
