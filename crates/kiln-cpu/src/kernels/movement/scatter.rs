//! Writing updates at given indices: ScatterND and ScatterElements (and `Scatter`).
//! Both reduce to "combine block `src` of the updates into block `dst` of a copy of
//! the data", in index order (so later duplicates win for `none`).

use kiln_ir::ops::movement::{Reduction, strides_of};
use kiln_ir::{Element, Tensor, with_storage};

use super::gather::nd_offsets;
use super::{axis_of, for_each_coord, index_in, ints};
use crate::{CpuError, Result, dispatch};

/// (destination offset in the data, source offset in the updates) of each block.
type Moves = Vec<(usize, usize)>;

fn combine(data: &Tensor, updates: &Tensor, moves: &Moves, block: usize, r: Reduction, op: &str) -> Result<Tensor> {
    if data.dtype() != updates.dtype() {
        return Err(CpuError::invalid(op, format!("data is {} but updates are {}", data.dtype(), updates.dtype())));
    }
    if r == Reduction::None {
        return with_storage!(data.dtype(), T => apply::<T>(data, updates, moves, block, |_, v| v));
    }
    dispatch!(num, data.dtype(), op, T => {
        let f: fn(T, T) -> T = match r {
            Reduction::Add => |a, v| a + v,
            Reduction::Mul => |a, v| a * v,
            Reduction::Max => |a, v| if v > a { v } else { a },
            Reduction::Min => |a, v| if v < a { v } else { a },
            Reduction::None => |_, v| v,
        };
        apply::<T>(data, updates, moves, block, f)
    })
}

fn apply<T: Element>(
    data: &Tensor,
    updates: &Tensor,
    moves: &Moves,
    block: usize,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor> {
    let mut out = data.to_vec::<T>()?;
    let upd = updates.as_slice::<T>()?;
    for &(dst, src) in moves {
        for (o, &u) in out[dst..dst + block].iter_mut().zip(&upd[src..src + block]) {
            *o = f(*o, u);
        }
    }
    Ok(Tensor::from_vec_as(data.dtype(), data.shape().to_vec(), out)?)
}

pub fn scatter_nd(data: &Tensor, indices: &Tensor, updates: &Tensor, r: Reduction) -> Result<Tensor> {
    let op = "ScatterND";
    let (offsets, inner) = nd_offsets(data.shape(), indices, 0, op)?;
    let is = indices.shape();
    let k = is[is.len() - 1];
    let want: Vec<usize> = is[..is.len() - 1].iter().chain(&data.shape()[k..]).copied().collect();
    if updates.shape() != want.as_slice() {
        return Err(CpuError::invalid(op, format!("updates have shape {:?}, expected {want:?}", updates.shape())));
    }
    let moves: Moves = offsets.into_iter().enumerate().map(|(n, p)| (p, n * inner)).collect();
    combine(data, updates, &moves, inner, r, op)
}

pub fn scatter_elements(data: &Tensor, indices: &Tensor, updates: &Tensor, axis: i64, r: Reduction) -> Result<Tensor> {
    let op = "ScatterElements";
    if indices.shape() != updates.shape() || indices.rank() != data.rank() {
        return Err(CpuError::invalid(
            op,
            format!(
                "indices {:?}, updates {:?} and data {:?} do not fit",
                indices.shape(),
                updates.shape(),
                data.shape()
            ),
        ));
    }
    let a = axis_of(axis, data.rank(), op)?;
    let idx = ints(indices)?;
    let st = strides_of(data.shape());
    let mut moves: Moves = Vec::with_capacity(idx.len());
    for_each_coord(indices.shape(), |c| {
        let n = moves.len();
        let mut p = 0usize;
        for (k, (&ck, &sk)) in c.iter().zip(&st).enumerate() {
            let v = if k == a { index_in(idx[n], data.shape()[a], op)? } else { ck };
            if v >= data.shape()[k] {
                return Err(CpuError::invalid(op, format!("indices shape {:?} exceeds data", indices.shape())));
            }
            p += v * sk;
        }
        moves.push((p, n));
        Ok(())
    })?;
    combine(data, updates, &moves, 1, r, op)
}

/// TensorScatter: row `s` of each update sequence goes to cache row `write_index + s`
/// (modulo the cache length in circular mode).
pub fn tensor_scatter(
    cache: &Tensor,
    update: &Tensor,
    write_indices: Option<&Tensor>,
    axis: i64,
    circular: bool,
) -> Result<Tensor> {
    let op = "TensorScatter";
    let a = axis_of(axis, cache.rank(), op)?;
    let (cs, us) = (cache.shape(), update.shape());
    let fits = a > 0 && cs.len() == us.len() && cs.iter().zip(us).enumerate().all(|(k, (c, u))| k == a || c == u);
    if !fits || us[a] > cs[a] {
        return Err(CpuError::invalid(op, format!("update {us:?} does not fit cache {cs:?} on axis {a}")));
    }
    let (max, seq, batch) = (cs[a], us[a], cs[0]);
    let starts = match write_indices {
        Some(t) => ints(t)?,
        None => vec![0; batch],
    };
    if starts.len() != batch {
        return Err(CpuError::invalid(op, format!("{} write indices for a batch of {batch}", starts.len())));
    }
    let inner: usize = cs[a + 1..].iter().product();
    let per_batch: usize = cs[1..a].iter().product();
    let mut moves: Moves = Vec::with_capacity(batch * per_batch * seq);
    for p in 0..batch * per_batch {
        let w = starts[p / per_batch.max(1)];
        for s in 0..seq {
            let row = w + s as i64;
            let row = if circular { row.rem_euclid(max as i64) } else { row };
            if !(0..max as i64).contains(&row) {
                return Err(CpuError::invalid(op, format!("write position {row} is outside the cache of {max}")));
            }
            moves.push(((p * max + row as usize) * inner, (p * seq + s) * inner));
        }
    }
    combine(cache, update, &moves, inner, Reduction::None, op)
}
