//! GridSample (sample an image at normalised grid points) and AffineGrid (make such a
//! grid from affine matrices), N-D.

use kiln_ir::ops::vision::{GridPadding, GridSample, Interp};
use kiln_ir::{Element, Tensor};
use num_traits::{Bounded, NumCast};
use rayon::prelude::*;

use super::num::{Real, from_real, to_real, with_real};
use crate::array::req;
use crate::{CpuError, Result, dispatch};

pub fn grid_sample(g: &GridSample, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0, "GridSample")?;
    with_real!(x.dtype(), "GridSample", T, A => grid_sample_t::<T, A>(g, inputs))
}

/// Reflects `x` into `[lo, hi]` by bouncing off the borders (as ONNX Runtime).
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let d = lo - x;
        let n = (d / range).trunc();
        let r = d - n * range;
        if n as i64 % 2 == 0 { lo + r } else { hi - r }
    } else if x > hi {
        let d = x - hi;
        let n = (d / range).trunc();
        let r = d - n * range;
        if n as i64 % 2 == 0 { hi - r } else { lo + r }
    } else {
        x
    }
}

fn cubic_coeffs(t: f64) -> [f64; 4] {
    let a = -0.75;
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// One spatial dim's sampling rule.
struct Dim1 {
    len: usize,
    lo: f64,
    hi: f64,
}

impl Dim1 {
    /// The input index that a (possibly outside) integer position reads, or `None` for a zero.
    fn pixel(&self, i: i64, padding: GridPadding) -> Option<usize> {
        let last = self.len as i64 - 1;
        match padding {
            GridPadding::Zeros => (0..=last).contains(&i).then_some(i as usize),
            GridPadding::Border => Some(i.clamp(0, last.max(0)) as usize),
            GridPadding::Reflection => {
                Some((reflect(i as f64, self.lo, self.hi) as i64).clamp(0, last.max(0)) as usize)
            }
        }
    }

    /// Taps (index or zero, weight) along this dim for normalised coordinate `v`.
    fn taps(&self, v: f32, g: &GridSample) -> Vec<(Option<usize>, f64)> {
        let len = self.len as f32;
        // Denormalised in f32, as the reference.
        let x = if g.align_corners { (v + 1.0) / 2.0 * (len - 1.0) } else { ((v + 1.0) * len - 1.0) / 2.0 };
        let mut x = x as f64;
        if g.mode == Interp::Nearest {
            x = x.round_ties_even();
        }
        if x < self.lo || x > self.hi {
            match g.padding {
                GridPadding::Border => x = x.clamp(0.0, (self.len as f64 - 1.0).max(0.0)),
                GridPadding::Reflection => x = reflect(x, self.lo, self.hi),
                GridPadding::Zeros => {}
            }
        }
        match g.mode {
            Interp::Nearest => vec![(self.pixel(x as i64, g.padding), 1.0)],
            Interp::Linear => {
                let x0 = x.floor();
                let t = x - x0;
                vec![(self.pixel(x0 as i64, g.padding), 1.0 - t), (self.pixel(x0 as i64 + 1, g.padding), t)]
            }
            Interp::Cubic => {
                let x0 = x.floor();
                let c = cubic_coeffs(x - x0);
                (0..4).map(|k| (self.pixel(x0 as i64 - 1 + k as i64, g.padding), c[k])).collect()
            }
        }
    }
}

fn grid_sample_t<T: Element + NumCast + Bounded + Copy, A: Real>(
    g: &GridSample,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let op = "GridSample";
    let (xt, gt) = (req(inputs, 0, op)?, req(inputs, 1, op)?);
    let (xs, gs) = (xt.shape(), gt.shape());
    let r = xs.len().saturating_sub(2);
    if xs.len() < 3 || gs.len() != xs.len() || gs[0] != xs[0] || gs[gs.len() - 1] != r {
        return Err(CpuError::invalid(op, format!("X {xs:?} and grid {gs:?} do not fit")));
    }
    let (n, c) = (xs[0], xs[1]);
    if xs[2..].contains(&0) && gs[1..gs.len() - 1].iter().product::<usize>() > 0 {
        return Err(CpuError::invalid(op, format!("cannot sample an empty image {xs:?}")));
    }
    let dims: Vec<Dim1> = xs[2..]
        .iter()
        .map(|&len| {
            let (lo, hi) = if g.align_corners { (0.0, len as f64 - 1.0) } else { (-0.5, len as f64 - 0.5) };
            Dim1 { len, lo, hi }
        })
        .collect();
    let spatial: usize = xs[2..].iter().product();
    let points: usize = gs[1..gs.len() - 1].iter().product();
    let x: Vec<A> = to_real::<T, A>(xt)?;
    let grid: Vec<f32> = dispatch!(float, gt.dtype(), op, G => Ok::<_, CpuError>(
        gt.as_slice::<G>()?.iter().map(|&v| <f32 as NumCast>::from(v).unwrap_or(f32::NAN)).collect::<Vec<f32>>()
    ))?;
    let mut out = vec![A::zero(); n * c * points];
    if c * points > 0 {
        out.par_chunks_mut(c * points).enumerate().for_each(|(b, dst)| {
            // Taps of every grid point, shared by all channels.
            let taps: Vec<Vec<(usize, A)>> = (0..points)
                .map(|p| {
                    let coords = &grid[(b * points + p) * r..(b * points + p + 1) * r];
                    let mut acc: Vec<(usize, f64)> = vec![(0, 1.0)];
                    let mut zero = vec![false];
                    for (d, dim) in dims.iter().enumerate() {
                        // grid's last axis is (x, y, z…): reversed against the dims.
                        let t = dim.taps(coords[r - 1 - d], g);
                        let mut next = Vec::with_capacity(acc.len() * t.len());
                        let mut next_zero = Vec::with_capacity(acc.len() * t.len());
                        for (&(o, w), &z) in acc.iter().zip(&zero) {
                            for &(i, tw) in &t {
                                next.push((o * dim.len + i.unwrap_or(0), w * tw));
                                next_zero.push(z || i.is_none());
                            }
                        }
                        acc = next;
                        zero = next_zero;
                    }
                    acc.into_iter()
                        .zip(zero)
                        .filter(|&(_, z)| !z)
                        .map(|((o, w), _)| (o, <A as NumCast>::from(w).unwrap_or_else(A::zero)))
                        .collect()
                })
                .collect();
            for (ch, d) in dst.chunks_mut(points).enumerate() {
                let img = &x[(b * c + ch) * spatial..(b * c + ch + 1) * spatial];
                for (o, t) in d.iter_mut().zip(&taps) {
                    *o = t.iter().fold(A::zero(), |s, &(i, w)| s + w * img[i]);
                }
            }
        });
    }
    let mut shape = vec![n, c];
    shape.extend_from_slice(&gs[1..gs.len() - 1]);
    from_real::<T, A>(out, shape)
}

pub fn affine_grid(align_corners: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let op = "AffineGrid";
    let theta = req(inputs, 0, op)?;
    with_real!(theta.dtype(), op, T, A => affine_grid_t::<T, A>(align_corners, inputs))
}

fn affine_grid_t<T: Element + NumCast + Bounded + Copy, A: Real>(
    align_corners: bool,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let op = "AffineGrid";
    let (tt, st) = (req(inputs, 0, op)?, req(inputs, 1, op)?);
    let size = st.to_i64_vec()?;
    if size.len() < 3 || size.iter().any(|&v| v < 0) {
        return Err(CpuError::invalid(op, format!("size {size:?} must be [N, C, D1..] and non-negative")));
    }
    let r = size.len() - 2;
    let n = size[0] as usize;
    if tt.shape() != [n, r, r + 1] {
        return Err(CpuError::invalid(op, format!("theta {:?} must be [{n}, {r}, {}]", tt.shape(), r + 1)));
    }
    let theta: Vec<A> = to_real::<T, A>(tt)?;
    let lens: Vec<usize> = size[2..].iter().map(|&v| v as usize).collect();
    // Normalised base coordinate of index i along a dim of length len.
    let base = |i: usize, len: usize| -> A {
        let v = if align_corners {
            if len <= 1 { -1.0 } else { -1.0 + 2.0 * i as f64 / (len - 1) as f64 }
        } else {
            (2.0 * i as f64 + 1.0) / len as f64 - 1.0
        };
        <A as NumCast>::from(v).unwrap_or_else(A::zero)
    };
    let points: usize = lens.iter().product();
    let mut out = Vec::with_capacity(n * points * r);
    for b in 0..n {
        let th = &theta[b * r * (r + 1)..(b + 1) * r * (r + 1)];
        for p in 0..points {
            // Homogeneous point (x, y, z…, 1): x runs along the last dim.
            let mut rem = p;
            let mut idx = vec![0usize; r];
            for d in (0..r).rev() {
                idx[d] = rem % lens[d];
                rem /= lens[d];
            }
            let pt: Vec<A> = (0..r).map(|k| base(idx[r - 1 - k], lens[r - 1 - k])).collect();
            for row in th.chunks(r + 1) {
                let v = row[..r].iter().zip(&pt).fold(row[r], |s, (&a, &x)| s + a * x);
                out.push(v);
            }
        }
    }
    let mut shape = vec![n];
    shape.extend_from_slice(&lens);
    shape.push(r);
    from_real::<T, A>(out, shape)
}
