//! Sliding-window index arithmetic shared by im2col, col2im, the direct depthwise
//! convolution and the pools.
//!
//! Everything is expressed per kernel *tap* (one position of the kernel): for a tap,
//! the output positions whose input position falls inside the input form, along the
//! last axis, contiguous runs ("lines") whose input positions advance by the stride.
//! Looping taps outside and lines inside keeps the inner loops branch-free.

use kiln_ir::ops::nn::{AxisGeometry, Window};

use crate::{CpuError, Result};

/// The geometry of every spatial axis of one window op.
#[derive(Clone, Debug)]
pub struct Geom {
    pub axes: Vec<AxisGeometry>,
}

/// A run of `len` outputs from `out` whose input positions start at `inp`.
#[derive(Clone, Copy, Debug)]
pub struct Line {
    pub out: usize,
    pub inp: usize,
    pub len: usize,
}

impl Line {
    /// The input elements of this line in `plane`, `step` apart.
    #[inline]
    pub fn src<'a, A>(&self, plane: &'a [A], step: usize) -> impl Iterator<Item = &'a A> + use<'a, A> {
        plane[self.inp..].iter().step_by(step).take(self.len)
    }

    /// The output elements of this line in `plane`.
    #[inline]
    pub fn dst<'a, A>(&self, plane: &'a mut [A]) -> &'a mut [A] {
        &mut plane[self.out..self.out + self.len]
    }
}

impl Geom {
    /// Forward geometry (Conv, pools, Col2Im) for `input` spatial dims and `kernel` dims.
    pub fn forward(w: &Window, input: &[usize], kernel: &[usize], ceil_mode: bool, op: &str) -> Result<Geom> {
        let n = input.len();
        if n == 0 || kernel.len() != n {
            return Err(CpuError::invalid(op, format!("kernel {kernel:?} does not fit spatial dims {input:?}")));
        }
        w.check(n, op)?;
        let axes = (0..n).map(|i| w.axis(i, n, input[i], kernel[i], ceil_mode, op)).collect::<kiln_ir::Result<_>>()?;
        Ok(Geom { axes })
    }

    pub fn in_size(&self) -> usize {
        self.axes.iter().map(|a| a.input).product()
    }

    pub fn out_size(&self) -> usize {
        self.axes.iter().map(|a| a.output).product()
    }

    pub fn taps(&self) -> usize {
        self.axes.iter().map(|a| a.kernel).product()
    }

    pub fn out_dims(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.output).collect()
    }

    pub fn in_dims(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.input).collect()
    }

    /// Input step between consecutive outputs of a line.
    pub fn step(&self) -> usize {
        self.axes.last().map_or(1, |a| a.stride)
    }

    /// True when the window is the identity map (1×…×1 kernel, unit strides, no pads).
    pub fn is_pointwise(&self) -> bool {
        self.axes.iter().all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.pad_end == 0)
    }

    /// Calls `f` for every line of `tap` (row-major index over the kernel dims).
    pub fn for_each_line(&self, tap: usize, mut f: impl FnMut(Line)) {
        let d = self.axes.len();
        let mut offsets = vec![0usize; d];
        let mut t = tap;
        for i in (0..d).rev() {
            let k = self.axes[i].kernel.max(1);
            offsets[i] = t % k;
            t /= k;
        }
        // Valid output range of each axis for this tap, and the input position at its start.
        let mut ranges = Vec::with_capacity(d);
        for (a, &off) in self.axes.iter().zip(&offsets) {
            let shift = off * a.dilation;
            let lo = if shift >= a.pad_begin { 0 } else { (a.pad_begin - shift).div_ceil(a.stride) };
            let limit = a.input + a.pad_begin;
            let hi = if limit <= shift { 0 } else { (limit - shift).div_ceil(a.stride) }.min(a.output);
            if lo >= hi {
                return;
            }
            ranges.push((lo, hi, shift));
        }
        let in_pos = |a: &AxisGeometry, o: usize, shift: usize| o * a.stride + shift - a.pad_begin;
        let (last_lo, last_hi, last_shift) = ranges[d - 1];
        let last = &self.axes[d - 1];
        let mut idx: Vec<usize> = ranges[..d - 1].iter().map(|r| r.0).collect();
        loop {
            let (mut out, mut inp) = (0, 0);
            for i in 0..d - 1 {
                let a = &self.axes[i];
                out = out * a.output + idx[i];
                inp = inp * a.input + in_pos(a, idx[i], ranges[i].2);
            }
            out = out * last.output + last_lo;
            inp = inp * last.input + in_pos(last, last_lo, last_shift);
            f(Line { out, inp, len: last_hi - last_lo });
            // Odometer over the outer axes' valid ranges.
            let mut i = d - 1;
            loop {
                if i == 0 {
                    return;
                }
                i -= 1;
                idx[i] += 1;
                if idx[i] < ranges[i].1 {
                    break;
                }
                idx[i] = ranges[i].0;
            }
        }
    }

    /// For each output position, how many taps fall inside the input
    /// (`padded`: inside the input or its explicit pads, as `count_include_pad` counts).
    pub fn tap_counts(&self, padded: bool) -> Vec<usize> {
        let per_axis: Vec<Vec<usize>> = self
            .axes
            .iter()
            .map(|a| {
                let (lo, hi) =
                    if padded { (0, a.input + a.pad_begin + a.pad_end) } else { (a.pad_begin, a.input + a.pad_begin) };
                (0..a.output)
                    .map(|o| (0..a.kernel).filter(|t| (lo..hi).contains(&(o * a.stride + t * a.dilation))).count())
                    .collect()
            })
            .collect();
        let mut counts = vec![1usize];
        for axis in &per_axis {
            counts = counts.iter().flat_map(|c| axis.iter().map(move |k| c * k)).collect();
        }
        counts
    }
}
