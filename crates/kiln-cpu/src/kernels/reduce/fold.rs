//! `Reduce*`: one value from the elements along the reduced axes.

use kiln_ir::ops::reduce::{Reduce, ReduceKind, resolve_reduce_axes};
use kiln_ir::{DType, Tensor};

use super::real::{Int, Real, is_nan};
use super::rows::{Rows, reduce_rows, reduced_dims, shaped};
use crate::array::{opt, req, tensor, tensor_as, view};
use ndarray::ArrayD;

use crate::{Result, dispatch};

pub fn eval(r: &Reduce, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let axes_input = match (&r.axes, opt(inputs, 1)) {
        (None, Some(a)) => Some(a.to_i64_vec()?),
        _ => None,
    };
    let Some(axes) = resolve_reduce_axes(r, axes_input, x.rank(), name)? else {
        return Ok(x.clone());
    };
    let dims = reduced_dims(x.shape(), &axes, r.keepdims);
    let kind = r.kind;
    match x.dtype() {
        // Max/min of bools are any/all: the same as on their 0/1 bytes.
        DType::Bool if matches!(kind, ReduceKind::Max | ReduceKind::Min) => {
            Ok(tensor_as(DType::Bool, int_reduce::<u8>(kind, x, &axes, dims)?))
        }
        d if d.is_float() => dispatch!(float, d, name, T => float_reduce::<T>(kind, x, &axes, dims)),
        d => dispatch!(int, d, name, T => int_reduce::<T>(kind, x, &axes, dims).map(tensor)),
    }
}

fn float_reduce<T: Real>(kind: ReduceKind, x: &Tensor, axes: &[usize], dims: Vec<usize>) -> Result<Tensor> {
    let x = view::<T>(x)?;
    let rows = Rows::new(x.view(), axes);
    let values = reduce_rows(rows.slice(), rows.row_len, rows.n_rows, |row| T::of_f64(fold_float(kind, row)));
    Ok(tensor(shaped(dims, values)?))
}

/// The reduction of one row, accumulated in f64 (so f16/bf16/f32 round once).
fn fold_float<T: Real>(kind: ReduceKind, row: &[T]) -> f64 {
    let vals = row.iter().map(|v| v.to_f64());
    let sum = |f: fn(f64) -> f64| vals.clone().map(f).sum::<f64>();
    match kind {
        ReduceKind::Sum => sum(|v| v),
        ReduceKind::Mean => sum(|v| v) / row.len() as f64,
        ReduceKind::Max => vals.fold(f64::NEG_INFINITY, nan_max),
        ReduceKind::Min => vals.fold(f64::INFINITY, nan_min),
        ReduceKind::Prod => vals.product(),
        ReduceKind::L1 => sum(f64::abs),
        ReduceKind::L2 => sum(|v| v * v).sqrt(),
        ReduceKind::LogSum => sum(|v| v).ln(),
        ReduceKind::SumSquare => sum(|v| v * v),
        ReduceKind::LogSumExp => {
            // Shift by the max so large inputs do not overflow exp.
            let m = vals.clone().fold(f64::NEG_INFINITY, nan_max);
            if m.is_infinite() || m.is_nan() { m } else { m + vals.map(|v| (v - m).exp()).sum::<f64>().ln() }
        }
    }
}

/// Max that propagates NaN (numpy's `maximum`).
fn nan_max(a: f64, b: f64) -> f64 {
    if is_nan(&a) || is_nan(&b) { f64::NAN } else { a.max(b) }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if is_nan(&a) || is_nan(&b) { f64::NAN } else { a.min(b) }
}

fn int_reduce<T: Int>(kind: ReduceKind, x: &Tensor, axes: &[usize], dims: Vec<usize>) -> Result<ArrayD<T>> {
    let x = view::<T>(x)?;
    let rows = Rows::new(x.view(), axes);
    let values = reduce_rows(rows.slice(), rows.row_len, rows.n_rows, |row| fold_int(kind, row));
    shaped(dims, values)
}

/// Integer reductions wrap on overflow (fixed-width arithmetic); the ones defined
/// through floating point (mean, L2, logs) compute in f64 and truncate back.
fn fold_int<T: Int>(kind: ReduceKind, row: &[T]) -> T {
    let wsum = |f: fn(T) -> T| row.iter().fold(T::zero(), |a, &v| a.wrapping_add(&f(v)));
    let fsum = || row.iter().map(|v| v.as_f64()).sum::<f64>();
    match kind {
        ReduceKind::Sum => wsum(|v| v),
        ReduceKind::Prod => row.iter().fold(T::one(), |a, v| a.wrapping_mul(v)),
        ReduceKind::Max => row.iter().copied().max().unwrap_or(T::min_value()),
        ReduceKind::Min => row.iter().copied().min().unwrap_or(T::max_value()),
        ReduceKind::L1 => wsum(T::wrapping_abs),
        ReduceKind::SumSquare => wsum(|v| v.wrapping_mul(&v)),
        ReduceKind::Mean => T::of_f64(fsum() / row.len() as f64),
        ReduceKind::L2 => T::of_f64(row.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>().sqrt()),
        ReduceKind::LogSum => T::of_f64(fsum().ln()),
        ReduceKind::LogSumExp => T::of_f64(row.iter().map(|v| v.as_f64().exp()).sum::<f64>().ln()),
    }
}
