//! Ops that compute their elements from positions: Range, Trilu, OneHot, EyeLike, CumSum, CumProd.

use kiln_ir::ops::movement::range_len;
use kiln_ir::{DType, Element, Tensor, with_storage};
use num_traits::{NumCast, One, Zero};

use super::{axis_of, scalar_int, scalar_of};
use crate::{CpuError, Result, dispatch};

fn scalar_f64(t: &Tensor, op: &str, what: &str) -> Result<f64> {
    match t.to_f64_vec()?.as_slice() {
        [v] => Ok(*v),
        _ => Err(CpuError::invalid(op, format!("{what} must be a scalar, got shape {:?}", t.shape()))),
    }
}

pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    let op = "Range";
    let dt = start.dtype();
    if limit.dtype() != dt || delta.dtype() != dt {
        return Err(CpuError::invalid(op, "start, limit and delta differ in dtype"));
    }
    if dt.is_integer() {
        let [s, l, d] = [start, limit, delta].map(|t| scalar_int(t, op, "start, limit and delta"));
        let (s, l, d) = (s? as i128, l? as i128, d? as i128);
        if d == 0 {
            return Err(CpuError::invalid(op, "delta is 0"));
        }
        let n = ((l - s) + d - d.signum()) / d;
        let n = n.max(0) as usize;
        return dispatch!(int, dt, op, T => {
            let v: Vec<T> = (0..n).map(|i| NumCast::from(s + i as i128 * d).unwrap_or_default()).collect();
            Ok(Tensor::from_vec(vec![n], v)?)
        });
    }
    let [s, l, d] = [start, limit, delta].map(|t| scalar_f64(t, op, "start, limit and delta"));
    let (s, l, d) = (s?, l?, d?);
    let n = range_len(s, l, d)?;
    dispatch!(float, dt, op, T => {
        let v: Vec<T> = (0..n).map(|i| NumCast::from(s + i as f64 * d).unwrap_or_default()).collect();
        Ok(Tensor::from_vec(vec![n], v)?)
    })
}

pub fn trilu(x: &Tensor, k: Option<&Tensor>, upper: bool) -> Result<Tensor> {
    let op = "Trilu";
    if x.rank() < 2 {
        return Err(CpuError::invalid(op, "input must have rank >= 2"));
    }
    let k = k.map(|t| scalar_int(t, op, "k")).transpose()?.unwrap_or(0);
    let (rows, cols) = (x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]);
    with_storage!(x.dtype(), T => {
        let mut v = x.to_vec::<T>()?;
        if rows * cols > 0 {
            for m in v.chunks_mut(rows * cols) {
                for (i, row) in m.chunks_mut(cols).enumerate() {
                    for (j, e) in row.iter_mut().enumerate() {
                        let d = j as i64 - i as i64;
                        let keep = if upper { d >= k } else { d <= k };
                        if !keep {
                            *e = 0;
                        }
                    }
                }
            }
        }
        Ok(Tensor::from_vec_as(x.dtype(), x.shape().to_vec(), v)?)
    })
}

pub fn one_hot(indices: &Tensor, depth: &Tensor, values: &Tensor, axis: i64) -> Result<Tensor> {
    let op = "OneHot";
    let depth = scalar_f64(depth, op, "depth")? as i64;
    if depth < 1 {
        return Err(CpuError::invalid(op, format!("depth {depth} must be positive")));
    }
    if values.len() != 2 {
        return Err(CpuError::invalid(op, "values must have two elements [off, on]"));
    }
    let a = axis_of(axis, indices.rank() + 1, op)?;
    let idx: Vec<i64> = indices.to_f64_vec()?.into_iter().map(|v| v as i64).collect();
    let inner: usize = indices.shape()[a..].iter().product();
    let mut shape = indices.shape().to_vec();
    shape.insert(a, depth as usize);
    with_storage!(values.dtype(), T => {
        let v = values.as_slice::<T>()?;
        let (off, on) = (v[0], v[1]);
        let mut out = vec![off; idx.len() * depth as usize];
        for (n, &i) in idx.iter().enumerate() {
            let i = if i < 0 { i + depth } else { i };
            if (0..depth).contains(&i) {
                let (o, r) = (n / inner.max(1), n % inner.max(1));
                out[(o * depth as usize + i as usize) * inner + r] = on;
            }
        }
        Ok(Tensor::from_vec_as(values.dtype(), shape, out)?)
    })
}

pub fn eye_like(x: &Tensor, dtype: DType, k: i64) -> Result<Tensor> {
    let op = "EyeLike";
    let [rows, cols] = <[usize; 2]>::try_from(x.shape()).map_err(|_| CpuError::invalid(op, "input must be 2-D"))?;
    let one = scalar_of(dtype, 1.0, op)?;
    with_storage!(dtype, T => {
        let one = one.as_slice::<T>()?[0];
        let mut out = vec![T::default(); rows * cols];
        for i in 0..rows {
            let j = i as i64 + k;
            if (0..cols as i64).contains(&j) {
                out[i * cols + j as usize] = one;
            }
        }
        Ok(Tensor::from_vec_as(dtype, vec![rows, cols], out)?)
    })
}

pub fn cumsum(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let op = "CumSum";
    let a = axis_of(scalar_int(axis, op, "axis")?, x.rank(), op)?;
    dispatch!(num, x.dtype(), op, T => cumulate::<T>(x, a, (exclusive, reverse), T::zero(), |a, b| a + b))
}

pub fn cumprod(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let op = "CumProd";
    let a = axis_of(scalar_int(axis, op, "axis")?, x.rank(), op)?;
    dispatch!(num, x.dtype(), op, T => cumulate::<T>(x, a, (exclusive, reverse), T::one(), |a, b| a * b))
}

/// Running `f`-accumulation along axis `a` from `identity`; `(exclusive, reverse)` as
/// CumSum/CumProd define them.
fn cumulate<T: Element>(
    x: &Tensor,
    a: usize,
    (exclusive, reverse): (bool, bool),
    identity: T,
    f: fn(T, T) -> T,
) -> Result<Tensor> {
    let s = x.shape();
    let (dim, inner) = (s[a], s[a + 1..].iter().product::<usize>());
    let src = x.as_slice::<T>()?;
    let mut out = vec![identity; src.len()];
    if dim * inner > 0 {
        for (o, block) in out.chunks_mut(dim * inner).enumerate() {
            let base = o * dim * inner;
            for r in 0..inner {
                let mut acc = identity;
                for step in 0..dim {
                    let i = if reverse { dim - 1 - step } else { step };
                    let v = src[base + i * inner + r];
                    if exclusive {
                        block[i * inner + r] = acc;
                        acc = f(acc, v);
                    } else {
                        acc = f(acc, v);
                        block[i * inner + r] = acc;
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec_as(x.dtype(), s.to_vec(), out)?)
}
