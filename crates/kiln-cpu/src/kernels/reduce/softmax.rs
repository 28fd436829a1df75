//! `Softmax`, `LogSoftmax`, `Hardmax`: each row normalised on its own.

use std::cell::RefCell;

use kiln_ir::Tensor;
use kiln_ir::ops::normalize_axis;
use kiln_ir::ops::reduce::{Softmax, SoftmaxKind};
use num_traits::{Float, One, Zero};

use super::real::Real;
use super::rows::map_along;
use crate::array::{req, tensor, view};
use crate::{Result, dispatch};

pub fn eval(s: &Softmax, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let rank = x.rank();
    // Before opset 13 the rows are everything from `axis` on (the input coerced to 2-D,
    // axis == rank giving rows of one element); from 13 on, the one axis.
    let axes: Vec<usize> = if s.coerce_2d {
        let first = if s.axis == rank as i64 { rank } else { normalize_axis(s.axis, rank, name)? };
        (first..rank).collect()
    } else {
        vec![normalize_axis(s.axis, rank, name)?]
    };
    dispatch!(float, x.dtype(), name, T => typed::<T>(s.kind, x, &axes))
}

fn typed<T: Real>(kind: SoftmaxKind, x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let x = view::<T>(x)?;
    let out = match kind {
        SoftmaxKind::Softmax => map_along(x.view(), axes, softmax_row::<T>)?,
        SoftmaxKind::LogSoftmax => map_along(x.view(), axes, log_softmax_row::<T>)?,
        SoftmaxKind::Hardmax => map_along(x.view(), axes, hardmax_row::<T>)?,
    };
    Ok(tensor(out))
}

fn row_max<T: Real>(x: &[T]) -> T::Acc {
    x.iter().fold(T::Acc::neg_infinity(), |m, v| m.max(v.acc()))
}

thread_local! {
    /// Per-thread scratch for a row's exponentials (no allocation per row).
    static EXPS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

fn softmax_row<T: Real>(x: &[T], y: &mut [T]) {
    let m = row_max(x);
    EXPS.with_borrow_mut(|e| {
        e.clear();
        let mut sum = T::Acc::zero();
        for v in x {
            let ev = (v.acc() - m).exp();
            sum = sum + ev;
            e.push(ev.into());
        }
        let inv = 1.0 / sum.into();
        for (o, &v) in y.iter_mut().zip(e.iter()) {
            *o = T::of_f64(v * inv);
        }
    });
}

fn log_softmax_row<T: Real>(x: &[T], y: &mut [T]) {
    let m = row_max(x);
    let sum = x.iter().fold(T::Acc::zero(), |s, v| s + (v.acc() - m).exp());
    let shift = m + sum.ln();
    for (o, v) in y.iter_mut().zip(x) {
        *o = T::of_acc(v.acc() - shift);
    }
}

/// 1 at the first maximum of the row, 0 elsewhere.
fn hardmax_row<T: Real>(x: &[T], y: &mut [T]) {
    let mut best: Option<usize> = None;
    for (i, v) in x.iter().enumerate() {
        if best.is_none_or(|b| *v > x[b]) {
            best = Some(i);
        }
    }
    for (i, o) in y.iter_mut().enumerate() {
        *o = T::of_acc(if Some(i) == best { T::Acc::one() } else { T::Acc::zero() });
    }
}
