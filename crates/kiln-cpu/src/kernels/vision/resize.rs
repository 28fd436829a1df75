//! Resize / Upsample. Interpolation is separable, so an N-D resize is a 1-D resize per
//! changed axis: each output position along the axis reads a few input positions
//! ("taps") with weights that depend only on that position.

use kiln_ir::ops::vision::{CoordMode, Interp, NearestMode, Resize, ResizePlan, tensor_f32};
use kiln_ir::{Element, Tensor};
use num_traits::{Bounded, NumCast};
use rayon::prelude::*;

use super::num::{Real, from_real, to_real, with_real};
use crate::array::{opt, req, tensor_as};
use crate::{CpuError, Result, dispatch};

/// The taps of one axis: `width` (index, weight) pairs per output position, or
/// "extrapolated" (tf_crop_and_resize outside the input).
struct Taps {
    width: usize,
    idx: Vec<usize>,
    weight: Vec<f64>,
    extrapolated: Vec<bool>,
}

impl Taps {
    fn is_identity(&self, in_len: usize) -> bool {
        self.width == 1
            && self.idx.len() == in_len
            && self.idx.iter().enumerate().all(|(i, &j)| i == j)
            && self.weight.iter().all(|&w| w == 1.0)
            && !self.extrapolated.iter().any(|&e| e)
    }
}

pub fn resize(r: &Resize, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let name = r.name();
    let x = req(inputs, 0, name)?;
    let (si, zi, ri) = r.input_slots();
    let scales = si.and_then(|i| opt(inputs, i)).map(tensor_f32).transpose()?.filter(|v| !v.is_empty());
    let sizes = zi.and_then(|i| opt(inputs, i)).map(Tensor::to_i64_vec).transpose()?.filter(|v| !v.is_empty());
    let roi = ri.and_then(|i| opt(inputs, i)).map(Tensor::to_f64_vec).transpose()?.filter(|v| !v.is_empty());
    let plan = r.plan(x.shape(), scales.as_deref(), sizes.as_deref(), roi.as_deref())?;
    let in_shape = x.shape().to_vec();
    let mut axes = Vec::new();
    for (a, &n) in in_shape.iter().enumerate() {
        let out = plan.out_shape[a];
        if n == 0 && out > 0 {
            return Err(CpuError::invalid(name, format!("cannot resize an empty axis {a} to {out}")));
        }
        let taps = axis_taps(r, &plan, a, n, out);
        if !taps.is_identity(n) {
            axes.push((a, taps));
        }
    }
    if r.mode == Interp::Nearest {
        // Pure gathers: copy elements of any dtype exactly.
        let extrap = r.extrapolation_value;
        return dispatch!(any, x.dtype(), name, T => {
            let fill = extrapolation_bits::<T>(x.dtype(), extrap);
            let data = x.as_slice::<T>()?.into_owned();
            let (shape, data) = apply_axes(data, in_shape, &axes, |src, taps, j, inner, o| {
                if taps.extrapolated[j] {
                    o.fill(fill);
                } else {
                    let i = taps.idx[j];
                    o.copy_from_slice(&src[i * inner..(i + 1) * inner]);
                }
            });
            Ok(tensor_as(x.dtype(), ndarray::ArrayD::from_shape_vec(shape, data).map_err(|e| CpuError::invalid(name, e.to_string()))?))
        });
    }
    with_real!(x.dtype(), name, T, A => interpolate::<T, A>(x, in_shape, &axes, r.extrapolation_value))
}

/// The extrapolation value stored as `T`'s bits (nearest mode copies raw elements).
fn extrapolation_bits<T: Element + Default>(dtype: kiln_ir::DType, v: f32) -> T {
    let t = match dtype {
        kiln_ir::DType::F32 => Tensor::scalar(v),
        kiln_ir::DType::F64 => Tensor::scalar(v as f64),
        kiln_ir::DType::F16 => Tensor::scalar(half::f16::from_f32(v)),
        kiln_ir::DType::BF16 => Tensor::scalar(half::bf16::from_f32(v)),
        kiln_ir::DType::I8 => Tensor::scalar(v as i8),
        kiln_ir::DType::I16 => Tensor::scalar(v as i16),
        kiln_ir::DType::I32 => Tensor::scalar(v as i32),
        kiln_ir::DType::I64 => Tensor::scalar(v as i64),
        kiln_ir::DType::U16 => Tensor::scalar(v as u16),
        kiln_ir::DType::U32 => Tensor::scalar(v as u32),
        kiln_ir::DType::U64 => Tensor::scalar(v as u64),
        _ => Tensor::scalar(v as u8),
    };
    t.as_slice::<T>().ok().and_then(|s| s.first().copied()).unwrap_or_default()
}

fn interpolate<T: Element + NumCast + Bounded + Copy, A: Real>(
    x: &Tensor,
    in_shape: Vec<usize>,
    axes: &[(usize, Taps)],
    extrap: f32,
) -> Result<Tensor> {
    let data = to_real::<T, A>(x)?;
    let fill = <A as NumCast>::from(extrap).unwrap_or_else(A::zero);
    let (shape, data) = apply_axes(data, in_shape, axes, |src, taps, j, inner, o| {
        if taps.extrapolated[j] {
            o.fill(fill);
            return;
        }
        o.fill(A::zero());
        for t in j * taps.width..(j + 1) * taps.width {
            let w = <A as NumCast>::from(taps.weight[t]).unwrap_or_else(A::zero);
            if w == A::zero() {
                continue;
            }
            let s = &src[taps.idx[t] * inner..(taps.idx[t] + 1) * inner];
            o.iter_mut().zip(s).for_each(|(o, &v)| *o = *o + w * v);
        }
    });
    from_real::<T, A>(data, shape)
}

/// Resamples `data` along each listed axis in turn. `step(src, taps, j, inner, out)`
/// writes output position `j` (a run of `inner` elements) from one outer slice `src`.
fn apply_axes<E, F>(mut data: Vec<E>, mut shape: Vec<usize>, axes: &[(usize, Taps)], step: F) -> (Vec<usize>, Vec<E>)
where
    E: Copy + Default + Send + Sync,
    F: Fn(&[E], &Taps, usize, usize, &mut [E]) + Sync,
{
    for (axis, taps) in axes {
        let n_in = shape[*axis];
        let n_out = taps.extrapolated.len();
        let inner: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..*axis].iter().product();
        let mut out = vec![E::default(); outer * n_out * inner];
        if inner > 0 && n_out > 0 {
            out.par_chunks_mut(n_out * inner).enumerate().for_each(|(o, dst)| {
                let src = &data[o * n_in * inner..(o + 1) * n_in * inner];
                for (j, d) in dst.chunks_mut(inner).enumerate() {
                    step(src, taps, j, inner, d);
                }
            });
        }
        data = out;
        shape[*axis] = n_out;
    }
    (shape, data)
}

/// Input coordinate of output position `j`, and whether it lies outside the input
/// (tf_crop_and_resize only).
fn source_coord(r: &Resize, j: usize, scale: f64, in_len: usize, out_len: usize, roi: (f64, f64)) -> (f64, bool) {
    let y = j as f64;
    let in_f = in_len as f64;
    // As the ONNX reference: the "float output length" scale·in, not the integer one.
    let out_f = scale * in_f;
    let x = match r.coord {
        CoordMode::HalfPixel => (y + 0.5) / scale - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adjustment = out_len as f64 / out_f;
            let offset = in_f / 2.0 * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
        CoordMode::PytorchHalfPixel => {
            if out_f == 1.0 {
                -0.5
            } else {
                (y + 0.5) / scale - 0.5
            }
        }
        CoordMode::AlignCorners => {
            if out_f == 1.0 {
                0.0
            } else {
                y * (in_f - 1.0) / (out_f - 1.0)
            }
        }
        CoordMode::Asymmetric => y / scale,
        CoordMode::TfHalfPixelForNn => (y + 0.5) / scale,
        CoordMode::TfCropAndResize => {
            let (start, end) = roi;
            let x = if out_f == 1.0 {
                (end - start) * (in_f - 1.0) / 2.0
            } else {
                y * (end - start) * (in_f - 1.0) / (out_f - 1.0)
            };
            let x = x + start * (in_f - 1.0);
            return (x, x < 0.0 || x > in_f - 1.0);
        }
    };
    (x, false)
}

fn axis_taps(r: &Resize, plan: &ResizePlan, axis: usize, in_len: usize, out_len: usize) -> Taps {
    let scale = plan.scales[axis];
    let roi = plan.roi[axis];
    let mut taps = Taps { width: 0, idx: vec![], weight: vec![], extrapolated: vec![] };
    let last = in_len.saturating_sub(1) as i64;
    for j in 0..out_len {
        let (x, extrapolated) = source_coord(r, j, scale, in_len, out_len, roi);
        taps.extrapolated.push(extrapolated);
        if r.mode == Interp::Nearest {
            taps.width = 1;
            taps.idx.push(nearest_index(r.nearest, x, scale).clamp(0, last) as usize);
            taps.weight.push(1.0);
            continue;
        }
        let floor = x.floor();
        // The reference takes ratio 1 (not 0) at integer coordinates, with the window
        // one step to the left: the same value, but the weights differ under
        // exclude_outside, so keep its convention.
        let ratio = if x == floor { 1.0 } else { x - floor };
        let coeffs = coefficients(r, ratio, scale);
        let n = coeffs.len() as i64;
        let first = floor as i64 - n / 2 + (x != floor) as i64;
        let mut ws: Vec<f64> = coeffs;
        if r.exclude_outside {
            for (k, w) in ws.iter_mut().enumerate() {
                let i = first + k as i64;
                if i < 0 || i > last {
                    *w = 0.0;
                }
            }
            let sum: f64 = ws.iter().sum();
            if sum != 0.0 {
                ws.iter_mut().for_each(|w| *w /= sum);
            }
        }
        taps.width = ws.len();
        for (k, w) in ws.into_iter().enumerate() {
            taps.idx.push((first + k as i64).clamp(0, last) as usize);
            taps.weight.push(w);
        }
    }
    taps
}

fn nearest_index(mode: NearestMode, x: f64, scale: f64) -> i64 {
    let floor = x.floor();
    if x == floor {
        return floor as i64;
    }
    let ratio = x - floor;
    let up = match mode {
        NearestMode::RoundPreferFloor => ratio > 0.5,
        NearestMode::RoundPreferCeil => ratio >= 0.5,
        NearestMode::Floor => false,
        NearestMode::Ceil => true,
        NearestMode::Simple => return if scale < 1.0 { x.ceil() as i64 } else { x.trunc() as i64 },
    };
    floor as i64 + up as i64
}

/// Weights of the window around a coordinate with fractional part `ratio` ∈ (0, 1].
fn coefficients(r: &Resize, ratio: f64, scale: f64) -> Vec<f64> {
    let a = r.cubic_coeff_a as f64;
    let cubic = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    let normalized = |v: Vec<f64>| {
        let s: f64 = v.iter().sum();
        if s == 0.0 { v } else { v.into_iter().map(|c| c / s).collect() }
    };
    match (r.mode, r.antialias) {
        (Interp::Linear, false) => vec![1.0 - ratio, ratio],
        (Interp::Cubic, false) => vec![cubic(ratio + 1.0), cubic(ratio), cubic(1.0 - ratio), cubic(2.0 - ratio)],
        (Interp::Linear, true) => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let n = 2 - 2 * start;
            normalized((0..n).map(|k| (1.0 - (((start + k) as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect())
        }
        (Interp::Cubic, true) => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            let n = 2 - 2 * start;
            normalized((0..n).map(|k| cubic(s * ((start + k) as f64 - ratio))).collect())
        }
        (Interp::Nearest, _) => vec![1.0],
    }
}
