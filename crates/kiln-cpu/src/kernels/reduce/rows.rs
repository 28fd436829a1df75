//! Axis arithmetic shared by every kernel of the family: the input is rearranged so the
//! elements an output depends on form one contiguous row, and rows run in parallel.

use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn};
use rayon::prelude::*;

use crate::{CpuError, Result};

/// Roughly how many elements one parallel task should handle (small tensors stay serial).
const GRAIN: usize = 1 << 14;

/// Rows of `row_len` per parallel task.
fn rows_per_task(row_len: usize) -> usize {
    (GRAIN / row_len.max(1)).max(1)
}

/// `x` with `axes` moved last (the others keep their order), in row-major layout:
/// each row holds the elements of `axes` for one index of the other axes.
/// No copy when `axes` are already the trailing axes of a standard-layout array.
pub struct Rows<'a, T> {
    data: CowArray<'a, T, IxDyn>,
    /// The permutation that was applied (new axis i = old axis perm[i]).
    perm: Vec<usize>,
    pub row_len: usize,
    pub n_rows: usize,
}

impl<'a, T: Clone> Rows<'a, T> {
    /// `axes` must be distinct and in range.
    pub fn new(x: ArrayViewD<'a, T>, axes: &[usize]) -> Rows<'a, T> {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        let kept = (0..x.ndim()).filter(|a| !sorted.contains(a));
        let perm: Vec<usize> = kept.chain(sorted.iter().copied()).collect();
        let row_len = sorted.iter().map(|&a| x.shape()[a]).product();
        let n_rows = (0..x.ndim()).filter(|a| !sorted.contains(a)).map(|a| x.shape()[a]).product();
        let permuted = x.permuted_axes(IxDyn(&perm));
        let data = if permuted.is_standard_layout() {
            CowArray::from(permuted)
        } else {
            CowArray::from(permuted.as_standard_layout().into_owned())
        };
        Rows { data, perm, row_len, n_rows }
    }

    pub fn slice(&self) -> &[T] {
        self.data.as_slice().unwrap_or(&[])
    }

    /// Shape of the rearranged array.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// An array laid out like the rows (`values` in row order) put back in the
    /// original axis order; `last` replaces the size of the last rearranged axis.
    pub fn restore<U>(&self, values: Vec<U>, last: Option<usize>) -> Result<ArrayD<U>> {
        let mut shape = self.shape().to_vec();
        if let (Some(n), Some(l)) = (last, shape.last_mut()) {
            *l = n;
        }
        let a = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| CpuError::invalid("rows", e.to_string()))?;
        let mut inverse = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(a.permuted_axes(IxDyn(&inverse)))
    }
}

/// One value per row of `data` (rows of `row_len`; `n_rows` of them even when empty).
pub fn reduce_rows<T, S, F>(data: &[T], row_len: usize, n_rows: usize, f: F) -> Vec<S>
where
    T: Sync,
    S: Send,
    F: Fn(&[T]) -> S + Sync + Send,
{
    if row_len == 0 {
        return (0..n_rows).map(|_| f(&[])).collect();
    }
    data.par_chunks(row_len).with_min_len(rows_per_task(row_len)).map(f).collect()
}

/// Runs `f(row_index, input_row, output_row)` on each row in parallel; returns what
/// each call returned (per-row statistics).
pub fn map_rows<T, U, S, F>(data: &[T], in_len: usize, out: &mut [U], out_len: usize, f: F) -> Vec<S>
where
    T: Sync,
    U: Send,
    S: Send,
    F: Fn(usize, &[T], &mut [U]) -> S + Sync + Send,
{
    if in_len == 0 || out_len == 0 {
        let n = if in_len == 0 { out.len().checked_div(out_len) } else { data.len().checked_div(in_len) };
        let n = n.unwrap_or(0);
        let mut none: [U; 0] = [];
        return (0..n).map(|i| f(i, &[], &mut none)).collect();
    }
    out.par_chunks_mut(out_len)
        .zip(data.par_chunks(in_len))
        .enumerate()
        .with_min_len(rows_per_task(in_len.max(out_len)))
        .map(|(i, (o, x))| f(i, x, o))
        .collect()
}

/// Applies a same-length row function along `axes` of `x` and returns the result in
/// the original layout.
pub fn map_along<T, U, F>(x: ArrayViewD<'_, T>, axes: &[usize], f: F) -> Result<ArrayD<U>>
where
    T: Clone + Sync,
    U: Clone + Default + Send,
    F: Fn(&[T], &mut [U]) + Sync + Send,
{
    let rows = Rows::new(x, axes);
    let mut out = vec![U::default(); rows.n_rows * rows.row_len];
    map_rows(rows.slice(), rows.row_len, &mut out, rows.row_len, |_, x, y| f(x, y));
    rows.restore(out, None)
}

/// The dims of `shape` with `axes` set to 1 (`keepdims`) or dropped.
pub fn reduced_dims(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// `values` (one per row, in row order) as an array of `dims`.
pub fn shaped<U>(dims: Vec<usize>, values: Vec<U>) -> Result<ArrayD<U>> {
    ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(|e| CpuError::invalid("rows", e.to_string()))
}
