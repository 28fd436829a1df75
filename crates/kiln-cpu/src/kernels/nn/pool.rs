//! MaxPool (with Indices), AveragePool, LpPool, their global forms, and MaxUnpool.
//! Every (n, c) plane is pooled independently, in parallel.

use kiln_ir::ops::nn::{Pool, PoolKind, Window, unpool_size};
use kiln_ir::{Element, Tensor};
use rayon::prelude::*;

use super::matmul::strides;
use super::scalar::{Acc, NnElem, acc_data, from_acc};
use super::window::Geom;
use crate::{CpuError, Result};

fn planes(x: &Tensor, op: &str) -> Result<(usize, usize)> {
    let s = x.shape();
    if s.len() < 3 {
        return Err(CpuError::invalid(op, format!("X must have rank >= 3, got {s:?}")));
    }
    Ok((s[0] * s[1], s[2..].iter().product()))
}

/// Pools with a window; returns the output and, for MaxPool, the Indices.
pub fn pool<T: NnElem>(p: &Pool, x: &Tensor, want_indices: bool, op: &str) -> Result<Vec<Tensor>> {
    let (n_planes, in_size) = planes(x, op)?;
    let kernel = p.window.kernel_shape.as_deref().ok_or_else(|| CpuError::invalid(op, "kernel_shape is required"))?;
    let geom = Geom::forward(&p.window, &x.shape()[2..], kernel, p.ceil_mode, op)?;
    let out_size = geom.out_size();
    let xd = acc_data::<T>(x)?;
    let mut shape = x.shape()[..2].to_vec();
    shape.extend(geom.out_dims());
    let mut out = vec![T::A::ZERO; n_planes * out_size];
    let (taps, step) = (geom.taps(), geom.step());
    let planes_of = |p: usize| &xd[p * in_size..][..in_size];
    match p.kind {
        PoolKind::Max { column_major_indices } => {
            let mut idx = vec![0i64; if want_indices { n_planes * out_size } else { 0 }];
            let fill = |p: usize, dst: &mut [T::A], ix: Option<&mut [i64]>| {
                let src = planes_of(p);
                dst.fill(T::A::LOWEST);
                let mut best = vec![0usize; if ix.is_some() { out_size } else { 0 }];
                for tap in 0..taps {
                    geom.for_each_line(tap, |l| {
                        // Strictly greater: the first maximum in window order wins, as in
                        // ORT; a NaN wins over numbers.
                        let wins = |v: T::A, d: T::A| v > d || (v.is_nan() && !d.is_nan());
                        if best.is_empty() {
                            for (d, &v) in l.dst(dst).iter_mut().zip(l.src(src, step)) {
                                if wins(v, *d) {
                                    *d = v;
                                }
                            }
                            return;
                        }
                        for k in 0..l.len {
                            let (i, o) = (l.inp + k * step, l.out + k);
                            if wins(src[i], dst[o]) {
                                dst[o] = src[i];
                                best[o] = i;
                            }
                        }
                    });
                }
                if let Some(ix) = ix {
                    let dims = geom.in_dims();
                    for (d, &b) in ix.iter_mut().zip(&best) {
                        let spatial = if column_major_indices { column_major(b, &dims) } else { b };
                        *d = (p * in_size + spatial) as i64;
                    }
                }
            };
            let chunk = out_size.max(1);
            if want_indices {
                out.par_chunks_mut(chunk)
                    .zip(idx.par_chunks_mut(chunk))
                    .enumerate()
                    .for_each(|(p, (d, ix))| fill(p, d, Some(ix)));
            } else {
                out.par_chunks_mut(chunk).enumerate().for_each(|(p, d)| fill(p, d, None));
            }
            let mut outs = vec![from_acc::<T>(shape.clone(), out)?];
            if want_indices {
                outs.push(Tensor::from_vec(shape, idx)?);
            }
            Ok(outs)
        }
        PoolKind::Average { count_include_pad } => {
            let counts = geom.tap_counts(count_include_pad);
            out.par_chunks_mut(out_size.max(1)).enumerate().for_each(|(p, dst)| {
                let src = planes_of(p);
                for tap in 0..taps {
                    geom.for_each_line(tap, |l| {
                        for (d, &v) in l.dst(dst).iter_mut().zip(l.src(src, step)) {
                            *d = d.add(v);
                        }
                    });
                }
                for (d, &c) in dst.iter_mut().zip(&counts) {
                    *d = T::A::from_f64(d.to_f64() / c.max(1) as f64);
                }
            });
            Ok(vec![from_acc::<T>(shape, out)?])
        }
        PoolKind::Lp { p: power } => {
            let power = power as f64;
            out.par_chunks_mut(out_size.max(1)).enumerate().for_each(|(p, dst)| {
                let src = planes_of(p);
                let mut acc = vec![0f64; out_size];
                for tap in 0..taps {
                    geom.for_each_line(tap, |l| {
                        for (d, &v) in l.dst(&mut acc).iter_mut().zip(l.src(src, step)) {
                            *d += v.to_f64().abs().powf(power);
                        }
                    });
                }
                for (d, a) in dst.iter_mut().zip(acc) {
                    *d = T::A::from_f64(a.powf(1.0 / power));
                }
            });
            Ok(vec![from_acc::<T>(shape, out)?])
        }
    }
}

/// A row-major flat index over `dims` as the column-major flat index of the same position.
fn column_major(flat: usize, dims: &[usize]) -> usize {
    let mut rest = flat;
    let mut pos = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        pos[i] = rest % dims[i].max(1);
        rest /= dims[i].max(1);
    }
    let mut out = 0;
    for i in (0..dims.len()).rev() {
        out = out * dims[i] + pos[i];
    }
    out
}

pub fn global_pool<T: NnElem>(kind: PoolKind, x: &Tensor, op: &str) -> Result<Tensor> {
    let s = x.shape();
    if s.len() < 2 {
        return Err(CpuError::invalid(op, format!("X must have rank >= 2, got {s:?}")));
    }
    let n_planes = s[0] * s[1];
    let size: usize = s[2..].iter().product();
    let xd = acc_data::<T>(x)?;
    let out: Vec<T::A> = (0..n_planes)
        .into_par_iter()
        .map(|p| {
            let plane = &xd[p * size..][..size];
            match kind {
                PoolKind::Max { .. } => {
                    plane.iter().fold(T::A::LOWEST, |m, &v| if v > m || v.is_nan() { v } else { m })
                }
                PoolKind::Average { .. } => {
                    let sum: f64 = plane.iter().map(|v| v.to_f64()).sum();
                    T::A::from_f64(sum / size as f64)
                }
                PoolKind::Lp { p } => {
                    let p = p as f64;
                    let sum: f64 = plane.iter().map(|v| v.to_f64().abs().powf(p)).sum();
                    T::A::from_f64(sum.powf(1.0 / p))
                }
            }
        })
        .collect();
    let mut shape = s[..2].to_vec();
    shape.resize(s.len(), 1);
    from_acc::<T>(shape, out)
}

/// Scatters X into zeros at the flat positions given by I (MaxPool's Indices), which
/// index the default output (the input of the MaxPool). An `output_shape` input places
/// that result at the start of a zero tensor of its shape, as the ONNX reference does.
pub fn max_unpool<T: Element + Default>(
    w: &Window,
    x: &Tensor,
    indices: &Tensor,
    output_shape: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "MaxUnpool";
    let xs = x.shape();
    if xs.len() < 3 || indices.shape() != xs {
        return Err(CpuError::invalid(op, format!("X {xs:?} and I {:?} must match, rank >= 3", indices.shape())));
    }
    let d = xs.len() - 2;
    w.check(d, op)?;
    let kernel = w.kernel_shape.as_deref().ok_or_else(|| CpuError::invalid(op, "kernel_shape is required"))?;
    let mut inferred = xs[..2].to_vec();
    for i in 0..d {
        inferred.push(unpool_size(w, i, d, xs[2 + i], kernel[i], op)?);
    }
    let total: usize = inferred.iter().product();
    let mut out = vec![T::default(); total];
    let (xd, id) = (x.as_slice::<T>()?, indices.to_i64_vec()?);
    for (&v, &i) in xd.iter().zip(&id) {
        let slot = usize::try_from(i).ok().and_then(|i| out.get_mut(i));
        *slot.ok_or_else(|| CpuError::invalid(op, format!("index {i} is out of range for output {inferred:?}")))? = v;
    }
    let Some(t) = output_shape else { return Ok(Tensor::from_vec_as(x.dtype(), inferred, out)?) };
    let shape: Vec<usize> = t
        .to_i64_vec()?
        .into_iter()
        .map(|v| usize::try_from(v).map_err(|_| CpuError::invalid(op, format!("output_shape has {v}"))))
        .collect::<Result<_>>()?;
    if shape.len() != xs.len() || shape.iter().zip(&inferred).any(|(s, i)| s < i) {
        return Err(CpuError::invalid(op, format!("output_shape {shape:?} is smaller than {inferred:?}")));
    }
    let mut padded = vec![T::default(); shape.iter().product()];
    let (src_st, dst_st) = (strides(&inferred), strides(&shape));
    for (flat, v) in out.into_iter().enumerate() {
        let dst: usize = (0..shape.len()).map(|k| (flat / src_st[k]) % inferred[k] * dst_st[k]).sum();
        padded[dst] = v;
    }
    Ok(Tensor::from_vec_as(x.dtype(), shape, padded)?)
}
