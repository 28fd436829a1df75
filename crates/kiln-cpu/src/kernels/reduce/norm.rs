//! The normalizations: statistics over rows, then an affine map per element.
//! Statistics accumulate in f64; each output element rounds once to its dtype.

use kiln_ir::Tensor;
use kiln_ir::ops::normalize_axis;
use kiln_ir::ops::reduce::{
    BatchNorm, GroupAffine, GroupNorm, InstanceNorm, LayerNorm, MeanVarianceNorm, RmsNorm, normalize_axes,
};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::real::{Real, float_tensor};
use super::rows::{map_along, map_rows, shaped};
use crate::array::{opt, req, tensor, view};
use crate::{CpuError, Result, dispatch};

/// Mean and (population) variance of a row, two-pass for accuracy.
fn moments<T: Real>(row: &[T]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// `[N, C, spatial…]` split into (N, C, spatial size).
fn nc_split(shape: &[usize], name: &str) -> Result<(usize, usize, usize)> {
    match shape {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(CpuError::invalid(name, format!("input must have rank >= 2, got shape {shape:?}"))),
    }
}

/// A per-channel parameter of length `len` as f64.
fn channel_param(t: &Tensor, len: usize, what: &str, name: &str) -> Result<Vec<f64>> {
    let v = t.to_f64_vec()?;
    if v.len() != len {
        return Err(CpuError::invalid(name, format!("{what} has {} elements, expected {len}", v.len())));
    }
    Ok(v)
}

/// A parameter broadcast (numpy rules, to the right) to `target`, flattened.
fn broadcast_param(t: &Tensor, target: &[usize], what: &str, name: &str) -> Result<Vec<f64>> {
    let a = ArrayD::from_shape_vec(IxDyn(t.shape()), t.to_f64_vec()?)
        .map_err(|e| CpuError::invalid(name, e.to_string()))?;
    let b = a.broadcast(IxDyn(target)).ok_or_else(|| {
        CpuError::invalid(name, format!("{what} of shape {:?} does not broadcast to {target:?}", t.shape()))
    })?;
    Ok(b.iter().copied().collect())
}

// ---- BatchNormalization ----

pub fn batch_norm(b: &BatchNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0, name)?;
    let (n, c, s) = nc_split(x.shape(), name)?;
    let mean_in = req(inputs, 3, name)?;
    let params: Vec<Vec<f64>> =
        (1..5).map(|i| req(inputs, i, name)?.to_f64_vec().map_err(Into::into)).collect::<Result<_>>()?;
    // Old opsets with spatial = 0 give one parameter per activation ([C, D1, …]).
    let per = params[0].len() / c.max(1);
    for (p, what) in params.iter().zip(["scale", "B", "input_mean", "input_var"]) {
        if p.len() != c && p.len() != c * s {
            return Err(CpuError::invalid(name, format!("{what} has {} elements, expected {c}", p.len())));
        }
    }
    let (mean, var) =
        if b.training { channel_moments(x, n, c, s, name)? } else { (params[2].clone(), params[3].clone()) };
    let affine =
        ChannelAffine { scale: &params[0], bias: &params[1], mean: &mean, var: &var, per, c, s, eps: b.epsilon as f64 };
    let y = dispatch!(float, x.dtype(), name, T => affine.apply::<T>(x))?;
    let stat = |v: Vec<f64>| float_tensor(mean_in.dtype(), shaped(vec![v.len()], v)?, name);
    let mut out = vec![y];
    if b.training {
        let m = b.momentum as f64;
        let run =
            |old: &[f64], new: &[f64]| old.iter().zip(new).map(|(o, v)| o * m + v * (1.0 - m)).collect::<Vec<_>>();
        out.push(stat(run(&params[2], &mean))?);
        out.push(stat(run(&params[3], &var))?);
        out.push(stat(mean)?);
        out.push(stat(var)?);
    } else {
        out.push(req(inputs, 3, name)?.clone());
        out.push(req(inputs, 4, name)?.clone());
    }
    Ok(out)
}

/// Per-channel mean and variance over the batch and spatial axes.
fn channel_moments(x: &Tensor, n: usize, c: usize, s: usize, name: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let v = dispatch!(float, x.dtype(), name, T => Ok(view::<T>(x)?.iter().map(|v| v.to_f64()).collect::<Vec<f64>>()))?;
    let plane = |ch: usize| (0..n).flat_map(move |i| (i * c + ch) * s..(i * c + ch + 1) * s);
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let count = (n * s) as f64;
            let mean = plane(ch).map(|i| v[i]).sum::<f64>() / count;
            let var = plane(ch).map(|i| (v[i] - mean).powi(2)).sum::<f64>() / count;
            (mean, var)
        })
        .collect();
    Ok(stats.into_iter().unzip())
}

/// `(x - mean) / sqrt(var + eps) * scale + bias` with parameters per channel
/// (`per` = 1) or per activation (`per` = spatial size).
struct ChannelAffine<'a> {
    scale: &'a [f64],
    bias: &'a [f64],
    mean: &'a [f64],
    var: &'a [f64],
    per: usize,
    c: usize,
    s: usize,
    eps: f64,
}

impl ChannelAffine<'_> {
    fn apply<T: Real>(&self, x: &Tensor) -> Result<Tensor> {
        // The per-parameter factor scale / sqrt(var + eps), computed once.
        let factor: Vec<f64> = self.scale.iter().zip(self.var).map(|(s, v)| s / (v + self.eps).sqrt()).collect();
        let xv = view::<T>(x)?;
        let xs = xv.as_standard_layout();
        let data = xs.as_slice().unwrap_or(&[]);
        let mut out = vec![T::default(); data.len()];
        map_rows(data, self.s, &mut out, self.s, |row, xr, yr| {
            let ch = row % self.c.max(1);
            let affine = |p: usize, v: &T| T::of_f64((v.to_f64() - self.mean[p]) * factor[p] + self.bias[p]);
            if self.per == 1 {
                yr.iter_mut().zip(xr).for_each(|(y, v)| *y = affine(ch, v));
            } else {
                yr.iter_mut().zip(xr).enumerate().for_each(|(j, (y, v))| *y = affine(ch * self.per + j, v));
            }
        });
        Ok(tensor(shaped(x.shape().to_vec(), out)?))
    }
}

// ---- InstanceNormalization and GroupNormalization ----

pub fn instance_norm(i: &InstanceNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let (_, c, _) = nc_split(x.shape(), name)?;
    let scale = channel_param(req(inputs, 1, name)?, c, "scale", name)?;
    let bias = channel_param(req(inputs, 2, name)?, c, "B", name)?;
    // Instance norm is group norm with one channel per group.
    let g = Grouped { groups: c, scale: &scale, bias: &bias, affine: GroupAffine::PerChannel, eps: i.epsilon as f64 };
    dispatch!(float, x.dtype(), name, T => g.apply::<T>(x, name))
}

pub fn group_norm(gn: &GroupNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let (_, c, _) = nc_split(x.shape(), name)?;
    let groups = gn.num_groups as usize;
    if groups == 0 || c % groups != 0 {
        return Err(CpuError::invalid(name, format!("{c} channels do not split into {groups} groups")));
    }
    let len = match gn.affine {
        GroupAffine::PerGroup => groups,
        GroupAffine::PerChannel => c,
    };
    let scale = channel_param(req(inputs, 1, name)?, len, "scale", name)?;
    let bias = channel_param(req(inputs, 2, name)?, len, "bias", name)?;
    let g = Grouped { groups, scale: &scale, bias: &bias, affine: gn.affine, eps: gn.epsilon as f64 };
    dispatch!(float, x.dtype(), name, T => g.apply::<T>(x, name))
}

/// Normalisation over each (instance, group of channels), then scale and bias.
struct Grouped<'a> {
    groups: usize,
    scale: &'a [f64],
    bias: &'a [f64],
    affine: GroupAffine,
    eps: f64,
}

impl Grouped<'_> {
    fn apply<T: Real>(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let (_, c, s) = nc_split(x.shape(), name)?;
        let per_group = c / self.groups;
        let xv = view::<T>(x)?;
        let xs = xv.as_standard_layout();
        let data = xs.as_slice().unwrap_or(&[]);
        let mut out = vec![T::default(); data.len()];
        let row_len = per_group * s;
        map_rows(data, row_len, &mut out, row_len, |row, xr, yr| {
            let g = row % self.groups;
            let (mean, var) = moments(xr);
            let inv = 1.0 / (var + self.eps).sqrt();
            for (j, (y, v)) in yr.iter_mut().zip(xr).enumerate() {
                let p = match self.affine {
                    GroupAffine::PerGroup => g,
                    GroupAffine::PerChannel => g * per_group + j / s,
                };
                *y = T::of_f64((v.to_f64() - mean) * inv * self.scale[p] + self.bias[p]);
            }
        });
        Ok(tensor(shaped(x.shape().to_vec(), out)?))
    }
}

// ---- LayerNormalization and RMSNormalization ----

pub fn layer_norm(l: &LayerNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0, name)?;
    let axis = normalize_axis(l.axis, x.rank(), name)?;
    let inner = &x.shape()[axis..];
    let scale = broadcast_param(req(inputs, 1, name)?, inner, "scale", name)?;
    let bias = opt(inputs, 2).map(|b| broadcast_param(b, inner, "B", name)).transpose()?;
    let eps = l.epsilon as f64;
    let (y, stats) = dispatch!(float, x.dtype(), name, T => trailing_rows::<T, _>(x, axis, |xr, yr| {
        let (mean, var) = moments(xr);
        let inv = 1.0 / (var + eps).sqrt();
        for (j, (y, v)) in yr.iter_mut().zip(xr).enumerate() {
            let b = bias.as_ref().map_or(0.0, |b| b[j]);
            *y = T::of_f64((v.to_f64() - mean) * inv * scale[j] + b);
        }
        (mean, inv)
    }))?;
    let stat_dims: Vec<usize> = x.shape().iter().enumerate().map(|(i, &d)| if i < axis { d } else { 1 }).collect();
    let (means, invs): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
    Ok(vec![
        y,
        float_tensor(l.stash_type, shaped(stat_dims.clone(), means)?, name)?,
        float_tensor(l.stash_type, shaped(stat_dims, invs)?, name)?,
    ])
}

pub fn rms_norm(r: &RmsNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let axis = normalize_axis(r.axis, x.rank(), name)?;
    let scale = broadcast_param(req(inputs, 1, name)?, &x.shape()[axis..], "scale", name)?;
    let eps = r.epsilon as f64;
    let (y, _) = dispatch!(float, x.dtype(), name, T => trailing_rows::<T, _>(x, axis, |xr, yr| {
        let mean_sq = xr.iter().map(|v| v.to_f64().powi(2)).sum::<f64>() / xr.len() as f64;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for (j, (y, v)) in yr.iter_mut().zip(xr).enumerate() {
            *y = T::of_f64(v.to_f64() * inv * scale[j]);
        }
    }))?;
    Ok(y)
}

/// Runs `f` on the rows made of axes `axis..` (contiguous in row-major order).
fn trailing_rows<T: Real, S: Send>(
    x: &Tensor,
    axis: usize,
    f: impl Fn(&[T], &mut [T]) -> S + Sync + Send,
) -> Result<(Tensor, Vec<S>)> {
    let row_len: usize = x.shape()[axis..].iter().product();
    let xv = view::<T>(x)?;
    let xs = xv.as_standard_layout();
    let data = xs.as_slice().unwrap_or(&[]);
    let mut out = vec![T::default(); data.len()];
    let stats = if row_len == 0 {
        // Empty rows: nothing to normalise; statistics are NaN like the reference's 0/0.
        let rows: usize = x.shape()[..axis].iter().product();
        (0..rows).map(|_| f(&[], &mut [])).collect()
    } else {
        map_rows(data, row_len, &mut out, row_len, |_, xr, yr| f(xr, yr))
    };
    Ok((tensor(shaped(x.shape().to_vec(), out)?), stats))
}

// ---- MeanVarianceNormalization ----

pub fn mvn(m: &MeanVarianceNorm, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    let axes = normalize_axes(&m.axes, x.rank(), name)?;
    dispatch!(float, x.dtype(), name, T => {
        let xv = view::<T>(x)?;
        map_along(xv.view(), &axes, |xr: &[T], yr: &mut [T]| {
            let (mean, var) = moments(xr);
            let std = var.sqrt() + 1e-9;
            for (y, v) in yr.iter_mut().zip(xr) {
                *y = T::of_f64((v.to_f64() - mean) / std);
            }
        })
        .map(tensor)
    })
}
