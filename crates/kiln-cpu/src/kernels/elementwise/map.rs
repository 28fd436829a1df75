//! Applying a per-element function over one, two or three (broadcast) tensors.
//!
//! The broadcast bookkeeping (`Layout`) is computed once and is not generic, so each
//! op×dtype instantiation is only a small loop: the output is cut into rows of
//! `inner` elements along which every input either advances by one or stays put
//! (a broadcast dim); rows are split across threads for large tensors.

use kiln_ir::{DType, Element, Tensor};
use rayon::prelude::*;

use crate::Result;
use crate::array::broadcast_shape;

/// Below this many elements a loop stays on one thread (spawning costs more than it saves).
const PAR_MIN: usize = 1 << 15;

/// How inputs of some shapes map onto rows of the broadcast output.
struct Layout {
    shape: Vec<usize>,
    /// Elements per row (the product of the coalesced innermost dims).
    inner: usize,
    /// Per input: its step along a row (1, or 0 when broadcast along it).
    step: Vec<usize>,
    /// Per input: the offset at which each row starts.
    starts: Vec<Vec<usize>>,
}

impl Layout {
    fn new(shapes: &[&[usize]], op: &str) -> Result<Layout> {
        let mut shape: Vec<usize> = vec![];
        for s in shapes {
            shape = broadcast_shape(&shape, s, op)?;
        }
        let rank = shape.len();
        // Per input, element strides in the output's index space (0 where broadcast).
        let strides: Vec<Vec<usize>> = shapes
            .iter()
            .map(|s| {
                let mut st = vec![0; rank];
                let mut acc = 1;
                for k in (0..s.len()).rev() {
                    st[rank - s.len() + k] = if s[k] == 1 { 0 } else { acc };
                    acc *= s[k];
                }
                st
            })
            .collect();
        // Coalesce innermost dims while every input keeps the mode it has on the innermost
        // one: contiguous (it advances by one) or broadcast (it stays put).
        let full: Vec<bool> = strides.iter().map(|st| rank > 0 && st[rank - 1] != 0).collect();
        let (mut split, mut inner) = (rank, 1);
        while split > 0 {
            let k = split - 1;
            let keeps = |(st, &f): (&Vec<usize>, &bool)| if f { st[k] == inner } else { st[k] == 0 };
            if shape[k] != 1 && !strides.iter().zip(&full).all(keeps) {
                break;
            }
            inner *= shape[k];
            split -= 1;
        }
        let step: Vec<usize> = full.iter().map(|&f| usize::from(f)).collect();
        let rows: usize = shape[..split].iter().product();
        let starts = strides
            .iter()
            .map(|st| {
                (0..rows)
                    .map(|mut r| {
                        let mut off = 0;
                        for k in (0..split).rev() {
                            off += (r % shape[k]) * st[k];
                            r /= shape[k];
                        }
                        off
                    })
                    .collect()
            })
            .collect();
        Ok(Layout { shape, inner, step, starts })
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Fills an output of `n` elements row by row (`inner` per row), in parallel when large.
/// `row` is a trait object so that the threading code is compiled once per output type,
/// not once per op (the per-element loop inside `row` is still fully monomorphised).
fn fill<O: Default + Clone + Send>(n: usize, inner: usize, row: &(dyn Fn(usize, &mut [O]) + Sync)) -> Vec<O> {
    let mut out = vec![O::default(); n];
    if inner == 0 || n == 0 {
        return out;
    }
    if n >= PAR_MIN {
        // Group short rows so each task has a worthwhile amount of work.
        let per_task = (PAR_MIN / 4 / inner).max(1);
        out.par_chunks_mut(inner * per_task).enumerate().for_each(|(t, chunk)| {
            for (i, r) in chunk.chunks_mut(inner).enumerate() {
                row(t * per_task + i, r);
            }
        });
    } else {
        out.chunks_mut(inner).enumerate().for_each(|(i, r)| row(i, r));
    }
    out
}

fn out<O: Element>(dtype: DType, shape: Vec<usize>, v: Vec<O>) -> Result<Tensor> {
    Ok(Tensor::from_vec_as(dtype, shape, v)?)
}

/// `f` over every element of `x`; the output has dtype `dtype` (storage of `O`).
pub fn map1<A: Element, O: Element + Default>(x: &Tensor, dtype: DType, f: impl Fn(A) -> O + Sync) -> Result<Tensor> {
    let s = x.as_slice::<A>()?;
    let n = s.len();
    let chunk = PAR_MIN.min(n.max(1));
    let v = fill(n, chunk, &|r, o: &mut [O]| {
        let base = r * chunk;
        for (j, y) in o.iter_mut().enumerate() {
            *y = f(s[base + j]);
        }
    });
    out(dtype, x.shape().to_vec(), v)
}

/// `f` over the broadcast of `a` and `b`.
pub fn map2<A: Element, B: Element, O: Element + Default>(
    a: &Tensor,
    b: &Tensor,
    dtype: DType,
    op: &str,
    f: impl Fn(A, B) -> O + Sync,
) -> Result<Tensor> {
    let l = Layout::new(&[a.shape(), b.shape()], op)?;
    let (sa, sb) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let (pa, pb) = (l.step[0], l.step[1]);
    let v = fill(l.len(), l.inner, &|r, o: &mut [O]| {
        let (oa, ob) = (l.starts[0][r], l.starts[1][r]);
        match (pa, pb) {
            // Same-shape runs and scalar operands get loops the compiler can vectorise.
            (1, 1) => o.iter_mut().zip(&sa[oa..]).zip(&sb[ob..]).for_each(|((y, &x), &z)| *y = f(x, z)),
            (1, 0) => {
                let z = sb[ob];
                o.iter_mut().zip(&sa[oa..]).for_each(|(y, &x)| *y = f(x, z))
            }
            (0, 1) => {
                let x = sa[oa];
                o.iter_mut().zip(&sb[ob..]).for_each(|(y, &z)| *y = f(x, z))
            }
            _ => o.iter_mut().for_each(|y| *y = f(sa[oa], sb[ob])),
        }
    });
    out(dtype, l.shape, v)
}

/// `f` over the broadcast of three tensors (Where).
pub fn map3<A: Element, B: Element, C: Element, O: Element + Default>(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    dtype: DType,
    op: &str,
    f: impl Fn(A, B, C) -> O + Sync,
) -> Result<Tensor> {
    let l = Layout::new(&[a.shape(), b.shape(), c.shape()], op)?;
    let (sa, sb, sc) = (a.as_slice::<A>()?, b.as_slice::<B>()?, c.as_slice::<C>()?);
    let v = fill(l.len(), l.inner, &|r, o: &mut [O]| {
        let (oa, ob, oc) = (l.starts[0][r], l.starts[1][r], l.starts[2][r]);
        for (j, y) in o.iter_mut().enumerate() {
            *y = f(sa[oa + j * l.step[0]], sb[ob + j * l.step[1]], sc[oc + j * l.step[2]]);
        }
    });
    out(dtype, l.shape, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_coalesces_and_broadcasts() {
        let l = Layout::new(&[&[2, 3, 4], &[2, 3, 4]], "t").unwrap();
        assert_eq!((l.inner, l.starts[0].len()), (24, 1));
        let l = Layout::new(&[&[2, 3, 4], &[3, 1]], "t").unwrap();
        assert_eq!(l.inner, 4);
        assert_eq!(l.step, vec![1, 0]);
        assert_eq!(l.starts[1], vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(l.starts[0], vec![0, 4, 8, 12, 16, 20]);
        let l = Layout::new(&[&[], &[]], "t").unwrap();
        assert_eq!((l.inner, l.len()), (1, 1));
    }
}
