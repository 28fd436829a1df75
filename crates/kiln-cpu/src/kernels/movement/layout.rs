//! Ops that are one strided copy of their input (Transpose, Slice, Expand, Tile,
//! DepthToSpace, SpaceToDepth, Split) and block copies (Concat, ReverseSequence).

use kiln_ir::ops::movement::{
    AxisSlice, DepthToSpaceMode, SliceAttrs, coalesce, concat_blocks, concat_plan, permutation, slice_axes,
    slice_layout, split_sizes, strided_copy, strides_of,
};
use kiln_ir::{Tensor, with_storage};
use rayon::prelude::*;

use super::{axis_of, ints, signed_strides};
use crate::{CpuError, Result};

/// Below this many elements a copy runs on one thread.
const PAR_MIN: usize = 1 << 15;

/// The tensor of `shape` with `out[i] = x[offset + Σ i_k * strides_k]`, in parallel
/// over the outermost (coalesced) dim for large outputs.
pub fn strided(x: &Tensor, offset: isize, shape: &[usize], strides: &[isize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let mut out = vec![T::default(); n];
        if n > 0 {
            par_strided_copy(&src, offset, shape, strides, &mut out);
        }
        Ok(Tensor::from_vec_as(x.dtype(), shape.to_vec(), out)?)
    })
}

fn par_strided_copy<T: Copy + Send + Sync>(
    src: &[T],
    offset: isize,
    shape: &[usize],
    strides: &[isize],
    out: &mut [T],
) {
    let (sh, st) = coalesce(shape, strides);
    if let Some(p) = tiled_axis(&sh, &st) {
        return tiled_copy(src, offset, &sh, &st, p, out);
    }
    if out.len() < PAR_MIN || sh.len() < 2 {
        return strided_copy(src, offset, &sh, &st, out);
    }
    let row: usize = sh[1..].iter().product();
    let rows_per_task = sh[0].div_ceil(rayon::current_num_threads() * 4).max(1);
    out.par_chunks_mut(rows_per_task * row).enumerate().for_each(|(k, chunk)| {
        let first = k * rows_per_task;
        let mut sub = sh.clone();
        sub[0] = chunk.len() / row;
        strided_copy(src, offset + first as isize * st[0], &sub, &st, chunk);
    });
}

/// For transposes: an output axis (not the last) that reads the source contiguously
/// while the last output axis does not. Copying tiles of these two axes keeps both
/// the reads and the writes in cache.
fn tiled_axis(sh: &[usize], st: &[isize]) -> Option<usize> {
    let last = sh.len().checked_sub(1)?;
    if st[last] == 1 || sh[last] < 8 {
        return None;
    }
    (0..last).rev().find(|&k| st[k] == 1 && sh[k] >= 8)
}

fn tiled_copy<T: Copy>(src: &[T], offset: isize, sh: &[usize], st: &[isize], p: usize, out: &mut [T]) {
    const TILE: usize = 32;
    let last = sh.len() - 1;
    let ost = strides_of(sh);
    let (np, nj, sj, op) = (sh[p], sh[last], st[last], ost[p]);
    let others: Vec<usize> = (0..last).filter(|&k| k != p).collect();
    let n_outer: usize = others.iter().map(|&k| sh[k]).product();
    for o in 0..n_outer {
        let (mut rem, mut sbase, mut obase) = (o, offset, 0usize);
        for &k in others.iter().rev() {
            let c = rem % sh[k];
            rem /= sh[k];
            sbase += c as isize * st[k];
            obase += c * ost[k];
        }
        for i0 in (0..np).step_by(TILE) {
            let i1 = (i0 + TILE).min(np);
            for j0 in (0..nj).step_by(TILE) {
                for j in j0..(j0 + TILE).min(nj) {
                    let s = (sbase + j as isize * sj) as usize;
                    let row = &src[s + i0..s + i1];
                    for (i, &v) in (i0..i1).zip(row) {
                        out[obase + j + i * op] = v;
                    }
                }
            }
        }
    }
}

/// `x` read through a permutation of its axes.
fn permuted(x: &Tensor, shape: &[usize], perm: &[usize]) -> Result<Tensor> {
    let st = signed_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let out_strides: Vec<isize> = perm.iter().map(|&a| st[a]).collect();
    strided(x, 0, &out_shape, &out_strides)
}

pub fn transpose(x: &Tensor, perm: Option<&[i64]>) -> Result<Tensor> {
    let p = permutation(perm, x.rank())?;
    permuted(x, x.shape(), &p)
}

pub fn slice(x: &Tensor, attrs: Option<&SliceAttrs>, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let input = |i: usize| inputs.get(i).and_then(Option::as_ref).map(ints).transpose();
    let (starts, ends, axes, steps) = match attrs {
        Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
        None => {
            let req = |i: usize, what: &str| {
                input(i)?.ok_or_else(|| CpuError::invalid("Slice", format!("{what} (input {i}) is required")))
            };
            (req(1, "starts")?, req(2, "ends")?, input(3)?, input(4)?)
        }
    };
    let sl = slice_axes(x.shape(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
    slice_by(x, &sl)
}

fn slice_by(x: &Tensor, sl: &[AxisSlice]) -> Result<Tensor> {
    let (offset, shape, strides) = slice_layout(x.shape(), sl);
    strided(x, offset, &shape, &strides)
}

/// Target dims of Expand/Tile as numbers.
fn dims_of(t: &Tensor, op: &str) -> Result<Vec<usize>> {
    ints(t)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| CpuError::invalid(op, format!("negative value {d}"))))
        .collect()
}

pub fn expand(x: &Tensor, shape: &Tensor) -> Result<Tensor> {
    let target = dims_of(shape, "Expand")?;
    let out = crate::array::broadcast_shape(x.shape(), &target, "Expand")?;
    // Broadcast dims read with stride 0.
    let st = signed_strides(x.shape());
    let lead = out.len() - x.rank();
    let strides: Vec<isize> =
        (0..out.len()).map(|i| if i < lead || x.shape()[i - lead] == 1 { 0 } else { st[i - lead] }).collect();
    strided(x, 0, &out, &strides)
}

pub fn tile(x: &Tensor, repeats: &Tensor) -> Result<Tensor> {
    let reps = dims_of(repeats, "Tile")?;
    if reps.len() != x.rank() {
        return Err(CpuError::invalid("Tile", format!("{} repeats for rank {}", reps.len(), x.rank())));
    }
    // Output [r0*d0, r1*d1, …] is the view [r0, d0, r1, d1, …] with stride 0 on repeats.
    let st = signed_strides(x.shape());
    let shape: Vec<usize> = reps.iter().zip(x.shape()).flat_map(|(&r, &d)| [r, d]).collect();
    let strides: Vec<isize> = st.iter().flat_map(|&s| [0, s]).collect();
    let t = strided(x, 0, &shape, &strides)?;
    Ok(t.reshaped(reps.iter().zip(x.shape()).map(|(r, d)| r * d).collect())?)
}

fn dims4(x: &Tensor, op: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(x.shape())
        .map_err(|_| CpuError::invalid(op, format!("input must be 4-D, got {:?}", x.shape())))
}

pub fn depth_to_space(x: &Tensor, b: usize, mode: DepthToSpaceMode) -> Result<Tensor> {
    let op = "DepthToSpace";
    let [n, c, h, w] = dims4(x, op)?;
    if b == 0 || c % (b * b) != 0 {
        return Err(CpuError::invalid(op, format!("channels {c} are not divisible by blocksize² ({b}²)")));
    }
    let c2 = c / (b * b);
    // View the input as 6-D, permute to [n, c2, h, b, w, b], then merge.
    let (view, perm): ([usize; 6], [usize; 6]) = match mode {
        DepthToSpaceMode::Dcr => ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2]),
        DepthToSpaceMode::Crd => ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3]),
    };
    let t = permuted(x, &view, &perm)?;
    Ok(t.reshaped(vec![n, c2, h * b, w * b])?)
}

pub fn space_to_depth(x: &Tensor, b: usize) -> Result<Tensor> {
    let op = "SpaceToDepth";
    let [n, c, h, w] = dims4(x, op)?;
    if b == 0 || h % b != 0 || w % b != 0 {
        return Err(CpuError::invalid(op, format!("spatial dims {h}x{w} are not divisible by blocksize {b}")));
    }
    let t = permuted(x, &[n, c, h / b, b, w / b, b], &[0, 3, 5, 1, 2, 4])?;
    Ok(t.reshaped(vec![n, c * b * b, h / b, w / b])?)
}

pub fn concat(inputs: &[Option<Tensor>], axis: i64) -> Result<Tensor> {
    let ts: Vec<&Tensor> = inputs.iter().flatten().collect();
    let first = ts.first().ok_or_else(|| CpuError::invalid("Concat", "no inputs"))?;
    if let Some(t) = ts.iter().find(|t| t.dtype() != first.dtype()) {
        return Err(CpuError::invalid(
            "Concat",
            format!("inputs differ in dtype: {} and {}", first.dtype(), t.dtype()),
        ));
    }
    let a = axis_of(axis, first.rank(), "Concat")?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let (shape, blocks) = concat_plan(&shapes, a)?;
    with_storage!(first.dtype(), T => {
        let slices = ts.iter().map(|t| t.as_slice::<T>()).collect::<kiln_ir::Result<Vec<_>>>()?;
        let parts: Vec<&[T]> = slices.iter().map(|c| c.as_ref()).collect();
        let mut out = Vec::with_capacity(shape.iter().product());
        concat_blocks(&parts, &blocks, &mut out);
        Ok(Tensor::from_vec_as(first.dtype(), shape, out)?)
    })
}

pub fn split(x: &Tensor, axis: i64, split: Option<&[i64]>, n: usize) -> Result<Vec<Tensor>> {
    let a = axis_of(axis, x.rank(), "Split")?;
    let sizes = split_sizes(x.shape()[a], split, n, "Split")?;
    let mut start = 0usize;
    sizes
        .iter()
        .map(|&len| {
            let mut sl: Vec<AxisSlice> = x.shape().iter().map(|&d| AxisSlice::full(d)).collect();
            sl[a] = AxisSlice { start: start as i64, step: 1, len };
            start += len;
            slice_by(x, &sl)
        })
        .collect()
}

pub fn reverse_sequence(x: &Tensor, lens: &Tensor, batch_axis: usize, time_axis: usize) -> Result<Tensor> {
    let op = "ReverseSequence";
    if x.rank() < 2 {
        return Err(CpuError::invalid(op, "input must have rank >= 2"));
    }
    let (nb, nt) = (x.shape()[batch_axis], x.shape()[time_axis]);
    let lens = ints(lens)?;
    if lens.len() != nb {
        return Err(CpuError::invalid(op, format!("{} sequence lengths for a batch of {nb}", lens.len())));
    }
    let inner: usize = x.shape()[2..].iter().product();
    let st = signed_strides(x.shape());
    let (sb, stt) = (st[batch_axis] as usize, st[time_axis] as usize);
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let mut out = src.to_vec();
        for (b, &len) in lens.iter().enumerate() {
            let len = usize::try_from(len).ok().filter(|&l| l <= nt).ok_or_else(|| {
                CpuError::invalid(op, format!("sequence length {len} is outside [0, {nt}]"))
            })?;
            for t in 0..len {
                let (to, from) = (b * sb + t * stt, b * sb + (len - 1 - t) * stt);
                out[to..to + inner].copy_from_slice(&src[from..from + inner]);
            }
        }
        Ok(Tensor::from_vec_as(x.dtype(), x.shape().to_vec(), out)?)
    })
}
