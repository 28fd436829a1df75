//! RoiAlign: average (or max) of bilinear samples on a regular grid inside each bin of
//! each region of interest. Follows ONNX Runtime's sampling (and its max-mode quirk: the
//! max is over the weighted corner values, not over interpolated samples).

use kiln_ir::ops::vision::{RoiAlign, RoiPool};
use kiln_ir::{Element, Tensor};
use num_traits::{Bounded, NumCast};
use rayon::prelude::*;

use super::num::{Real, from_real, to_real};
use crate::array::req;
use crate::{CpuError, Result, dispatch};

const OP: &str = "RoiAlign";

pub fn roi_align(r: &RoiAlign, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0, OP)?;
    dispatch!(float, x.dtype(), OP, T => run::<T>(r, inputs))
}

/// Up to four (flat offset, weight) corners of one bilinear sample.
type Sample = [(usize, f64); 4];

fn sample(y: f64, x: f64, h: usize, w: usize) -> Sample {
    let (hf, wf) = (h as f64, w as f64);
    if y < -1.0 || y > hf || x < -1.0 || x > wf || h == 0 || w == 0 {
        return [(0, 0.0); 4];
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut yl, mut xl) = (y as usize, x as usize);
    let yh = if yl >= h - 1 {
        yl = h - 1;
        y = yl as f64;
        yl
    } else {
        yl + 1
    };
    let xh = if xl >= w - 1 {
        xl = w - 1;
        x = xl as f64;
        xl
    } else {
        xl + 1
    };
    let (ly, lx) = (y - yl as f64, x - xl as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    [(yl * w + xl, hy * hx), (yl * w + xh, hy * lx), (yh * w + xl, ly * hx), (yh * w + xh, ly * lx)]
}

fn run<T: Element + NumCast + Bounded + Copy>(r: &RoiAlign, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let (xt, rois_t, idx_t) = (req(inputs, 0, OP)?, req(inputs, 1, OP)?, req(inputs, 2, OP)?);
    let &[n, c, h, w] = xt.shape() else {
        return Err(CpuError::invalid(OP, format!("X must be 4-D, got {:?}", xt.shape())));
    };
    let &[nr, 4] = rois_t.shape() else {
        return Err(CpuError::invalid(OP, format!("rois must be [num_rois, 4], got {:?}", rois_t.shape())));
    };
    if (h == 0 || w == 0) && nr * c * r.output_height * r.output_width > 0 {
        return Err(CpuError::invalid(OP, format!("cannot pool from an empty image {:?}", xt.shape())));
    }
    let batch = idx_t.to_i64_vec()?;
    if batch.len() != nr {
        return Err(CpuError::invalid(OP, "batch_indices must have one entry per roi"));
    }
    if let Some(&b) = batch.iter().find(|&&b| b < 0 || b as usize >= n) {
        return Err(CpuError::invalid(OP, format!("batch index {b} out of range for batch {n}")));
    }
    let x: Vec<f64> = to_real::<T, f64>(xt)?;
    let rois = rois_t.to_f64_vec()?;
    let (oh, ow) = (r.output_height, r.output_width);
    let plane = oh * ow;
    let mut out = vec![0.0f64; nr * c * plane];
    if plane > 0 && c > 0 {
        out.par_chunks_mut(c * plane).enumerate().for_each(|(i, dst)| {
            let samples = roi_samples(r, &rois[i * 4..i * 4 + 4], h, w);
            let base = batch[i] as usize * c * h * w;
            for (ch, d) in dst.chunks_mut(plane).enumerate() {
                let img = &x[base + ch * h * w..base + (ch + 1) * h * w];
                for (bin, (s, count)) in samples.iter().enumerate() {
                    d[bin] = pool(r.mode, img, s, *count);
                }
            }
        });
    }
    from_real::<T, f64>(out, vec![nr, c, oh, ow])
}

/// Per output bin: its samples and the count to average by.
fn roi_samples(r: &RoiAlign, roi: &[f64], h: usize, w: usize) -> Vec<(Vec<Sample>, usize)> {
    let scale = r.spatial_scale as f64;
    let offset = if r.half_pixel { 0.5 } else { 0.0 };
    let (x0, y0) = (roi[0] * scale - offset, roi[1] * scale - offset);
    let (x1, y1) = (roi[2] * scale - offset, roi[3] * scale - offset);
    let (mut rw, mut rh) = (x1 - x0, y1 - y0);
    if !r.half_pixel {
        rw = rw.max(1.0);
        rh = rh.max(1.0);
    }
    let (oh, ow) = (r.output_height, r.output_width);
    let (bh, bw) = (rh / oh as f64, rw / ow as f64);
    let grid = |len: f64, n: usize| {
        if r.sampling_ratio > 0 { r.sampling_ratio } else { (len / n as f64).ceil().max(0.0) as usize }
    };
    let (gh, gw) = (grid(rh, oh), grid(rw, ow));
    let count = (gh * gw).max(1);
    let mut bins = Vec::with_capacity(oh * ow);
    for ph in 0..oh {
        for pw in 0..ow {
            let mut s = Vec::with_capacity(gh * gw);
            for iy in 0..gh {
                let y = y0 + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                for ix in 0..gw {
                    let x = x0 + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                    s.push(sample(y, x, h, w));
                }
            }
            bins.push((s, count));
        }
    }
    bins
}

fn pool<A: Real>(mode: RoiPool, img: &[A], samples: &[Sample], count: usize) -> A {
    let c = |v: f64| <A as NumCast>::from(v).unwrap_or_else(A::zero);
    match mode {
        RoiPool::Avg => {
            let sum = samples.iter().flat_map(|s| s.iter()).fold(A::zero(), |acc, &(p, wt)| acc + c(wt) * img[p]);
            sum / c(count as f64)
        }
        RoiPool::Max => samples
            .iter()
            .map(|s| s.iter().map(|&(p, wt)| c(wt) * img[p]).fold(A::neg_infinity(), A::max))
            .reduce(A::max)
            .unwrap_or_else(A::zero),
    }
}
