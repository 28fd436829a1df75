//! Index-selecting reductions: `ArgMax`/`ArgMin` and `TopK`.

use kiln_ir::Tensor;
use kiln_ir::ops::normalize_axis;
use kiln_ir::ops::reduce::{ArgKind, ArgReduce, TopK};

use super::real::{is_nan, nan_last};
use super::rows::{Rows, map_rows, reduce_rows, reduced_dims, shaped};
use crate::array::{opt, req, tensor, view};
use crate::{CpuError, Result, dispatch};

pub fn arg(a: &ArgReduce, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let axis = normalize_axis(a.axis, x.rank(), name)?;
    if x.shape().get(axis) == Some(&0) {
        return Err(CpuError::invalid(name, format!("axis {axis} is empty: no extreme to select")));
    }
    dispatch!(num, x.dtype(), name, T => arg_typed::<T>(a, x, axis))
}

fn arg_typed<T: kiln_ir::Element + PartialOrd>(a: &ArgReduce, x: &Tensor, axis: usize) -> Result<Tensor> {
    let dims = reduced_dims(x.shape(), &[axis], a.keepdims);
    let x = view::<T>(x)?;
    let rows = Rows::new(x.view(), &[axis]);
    let values =
        reduce_rows(rows.slice(), rows.row_len, rows.n_rows, |row| extreme_index(row, a.kind, a.select_last_index));
    Ok(tensor(shaped(dims, values)?))
}

/// Index of the max (min) of a non-empty row; ties go to the first (last) index.
/// A NaN beats every number, and the first NaN wins (numpy's argmax/argmin).
fn extreme_index<T: PartialOrd>(row: &[T], kind: ArgKind, last: bool) -> i64 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate().skip(1) {
        let b = &row[best];
        let better = match kind {
            ArgKind::Max => v > b,
            ArgKind::Min => v < b,
        };
        if better || (last && v == b) || (is_nan(v) && !is_nan(b)) {
            best = i;
        }
    }
    best as i64
}

pub fn topk(t: &TopK, inputs: &[Option<Tensor>], name: &str) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0, name)?;
    let axis = normalize_axis(t.axis, x.rank(), name)?;
    let k = match (t.k, opt(inputs, 1)) {
        (Some(k), _) => k,
        (None, Some(k)) => match k.to_i64_vec()?.as_slice() {
            [k] => *k,
            other => return Err(CpuError::invalid(name, format!("K must hold one value, got {}", other.len()))),
        },
        (None, None) => return Err(CpuError::invalid(name, "input K is required")),
    };
    let n = x.shape().get(axis).copied().unwrap_or(1);
    if k < 0 || k as usize > n {
        return Err(CpuError::invalid(name, format!("k = {k} is out of range for axis {axis} of size {n}")));
    }
    dispatch!(num, x.dtype(), name, T => topk_typed::<T>(t.largest, x, axis, k as usize))
}

fn topk_typed<T>(largest: bool, x: &Tensor, axis: usize, k: usize) -> Result<Vec<Tensor>>
where
    T: kiln_ir::Element + PartialOrd + Default,
{
    let x = view::<T>(x)?;
    let rows = Rows::new(x.view(), &[axis]);
    let mut picked = vec![(T::default(), 0i64); rows.n_rows * k];
    map_rows(rows.slice(), rows.row_len, &mut picked, k, |_, row, out| top_of_row(row, largest, out));
    let picked = rows.restore(picked, Some(k))?;
    Ok(vec![tensor(picked.mapv(|p| p.0)), tensor(picked.mapv(|p| p.1))])
}

/// The first `out.len()` elements of `row` in order: largest (or smallest) first, equal
/// values by lower index, NaN above every number.
fn top_of_row<T: PartialOrd + Copy>(row: &[T], largest: bool, out: &mut [(T, i64)]) {
    let order = |a: &usize, b: &usize| {
        let o = nan_last(&row[*a], &row[*b]);
        let o = if largest { o.reverse() } else { o };
        o.then(a.cmp(b))
    };
    let k = out.len();
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    for (o, &i) in out.iter_mut().zip(&idx) {
        *o = (row[i], i as i64);
    }
}
