//! Conv (im2col + GEMM, a direct path for depthwise), ConvTranspose (GEMM + col2im)
//! and Col2Im.

use kiln_ir::Tensor;
use kiln_ir::ops::nn::{Conv, ConvTranspose, Window};
use rayon::prelude::*;

use super::scalar::{Acc, Mat, NnElem, acc_data, from_acc, gemm};
use super::window::Geom;
use crate::{CpuError, Result};

/// Channel-block sizes of one convolution.
struct Groups {
    batch: usize,
    group: usize,
    /// Input channels per group.
    cin: usize,
    /// Output channels per group.
    cout: usize,
}

fn check_bias<A>(bias: Option<&[A]>, channels: usize, op: &str) -> Result<()> {
    match bias {
        Some(b) if b.len() != channels => {
            Err(CpuError::invalid(op, format!("bias has {} values for {channels} output channels", b.len())))
        }
        _ => Ok(()),
    }
}

pub fn conv<T: NnElem>(c: &Conv, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let op = "Conv";
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(CpuError::invalid(op, format!("X {xs:?} and W {ws:?} must both have rank >= 3")));
    }
    let (n, ch, m) = (xs[0], xs[1], ws[0]);
    if c.group == 0 || ch != ws[1] * c.group || !m.is_multiple_of(c.group) {
        return Err(CpuError::invalid(op, format!("X {xs:?}, W {ws:?} and group {} do not fit", c.group)));
    }
    let kernel = c.window.kernel(Some(&ws[2..])).unwrap_or(&ws[2..]);
    if kernel != &ws[2..] {
        return Err(CpuError::invalid(op, format!("kernel_shape {kernel:?} differs from W's {:?}", &ws[2..])));
    }
    let geom = Geom::forward(&c.window, &xs[2..], kernel, false, op)?;
    let g = Groups { batch: n, group: c.group, cin: ws[1], cout: m / c.group };
    let (xd, wd) = (acc_data::<T>(x)?, acc_data::<T>(w)?);
    let bias = b.map(acc_data::<T>).transpose()?;
    check_bias(bias.as_deref(), m, op)?;
    let out = if g.cin == 1 {
        depthwise(&g, &geom, &xd, &wd, bias.as_deref())
    } else {
        im2col_conv(&g, &geom, &xd, &wd, bias.as_deref())?
    };
    let mut shape = vec![n, m];
    shape.extend(geom.out_dims());
    from_acc::<T>(shape, out)
}

/// Output planes, each starting with its channel's bias (or zero).
fn init_output<A: Acc>(planes: usize, channels: usize, size: usize, bias: Option<&[A]>) -> Vec<A> {
    let mut out = vec![A::ZERO; planes * size];
    if let Some(b) = bias {
        out.par_chunks_mut(size.max(1)).enumerate().for_each(|(p, plane)| plane.fill(b[p % channels]));
    }
    out
}

/// One input channel per group: each output plane is a weighted sum of shifted copies
/// of one input plane, done directly (im2col would copy the plane once per tap).
fn depthwise<A: Acc>(g: &Groups, geom: &Geom, x: &[A], w: &[A], bias: Option<&[A]>) -> Vec<A> {
    let (in_size, out_size, taps) = (geom.in_size(), geom.out_size(), geom.taps());
    let m = g.group * g.cout;
    let mut out = init_output(g.batch * m, m, out_size, bias);
    let step = geom.step();
    out.par_chunks_mut(out_size.max(1)).enumerate().for_each(|(p, plane)| {
        let (batch, oc) = (p / m, p % m);
        let ic = oc / g.cout;
        let src = &x[(batch * g.group + ic) * in_size..][..in_size];
        for tap in 0..taps {
            let wt = w[oc * taps + tap];
            geom.for_each_line(tap, |l| {
                let dst = l.dst(plane);
                if step == 1 {
                    for (d, &v) in dst.iter_mut().zip(&src[l.inp..l.inp + l.len]) {
                        *d = d.add(wt.mul(v));
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(l.src(src, step)) {
                        *d = d.add(wt.mul(v));
                    }
                }
            });
        }
    });
    out
}

/// Writes the im2col matrix of `channels` planes of `src`: row `c·taps + tap` holds,
/// for every output position, the input value under that tap (zero in the padding).
fn im2col<A: Acc>(geom: &Geom, src: &[A], channels: usize, col: &mut [A]) {
    let (in_size, out_size, taps, step) = (geom.in_size(), geom.out_size(), geom.taps(), geom.step());
    col[..channels * taps * out_size].par_chunks_mut(out_size.max(1)).enumerate().for_each(|(row, dst)| {
        let plane = &src[(row / taps) * in_size..][..in_size];
        dst.fill(A::ZERO);
        geom.for_each_line(row % taps, |l| {
            let d = l.dst(dst);
            if step == 1 {
                d.copy_from_slice(&plane[l.inp..l.inp + l.len]);
            } else {
                d.iter_mut().zip(l.src(plane, step)).for_each(|(d, &v)| *d = v);
            }
        });
    });
}

fn im2col_conv<A: Acc>(g: &Groups, geom: &Geom, x: &[A], w: &[A], bias: Option<&[A]>) -> Result<Vec<A>> {
    let (in_size, out_size, taps) = (geom.in_size(), geom.out_size(), geom.taps());
    let m = g.group * g.cout;
    let kdim = g.cin * taps;
    let mut out = init_output(g.batch * m, m, out_size, bias);
    let beta = if bias.is_some() { A::ONE } else { A::ZERO };
    let pointwise = geom.is_pointwise();
    let unit = |u: usize, dst: &mut [A], col: &mut Vec<A>| -> Result<()> {
        let (batch, grp) = (u / g.group, u % g.group);
        let src = &x[(batch * g.group * g.cin + grp * g.cin) * in_size..][..g.cin * in_size];
        let cols: &[A] = if pointwise {
            src
        } else {
            col.resize(kdim * out_size, A::ZERO);
            im2col(geom, src, g.cin, col);
            col
        };
        let wg = Mat::row_major(&w[grp * g.cout * kdim..][..g.cout * kdim], g.cout, kdim);
        gemm(A::ONE, wg, Mat::row_major(cols, kdim, out_size), beta, dst, out_size)
    };
    let chunk = g.cout * out_size;
    if g.batch * g.group == 1 || chunk == 0 {
        let mut col = Vec::new();
        for (u, dst) in out.chunks_mut(chunk.max(1)).enumerate() {
            unit(u, dst, &mut col)?;
        }
    } else {
        out.par_chunks_mut(chunk).enumerate().try_for_each_init(Vec::new, |col, (u, dst)| unit(u, dst, col))?;
    }
    Ok(out)
}

/// Adds each row `c·taps + tap` of `col` back onto the image planes it was read from
/// (the adjoint of [`im2col`]); one image plane per channel, in parallel.
fn col2im<A: Acc>(geom: &Geom, col: &[A], image: &mut [A]) {
    let (in_size, out_size, taps, step) = (geom.in_size(), geom.out_size(), geom.taps(), geom.step());
    image.par_chunks_mut(in_size.max(1)).enumerate().for_each(|(c, plane)| {
        for tap in 0..taps {
            let row = &col[(c * taps + tap) * out_size..][..out_size];
            geom.for_each_line(tap, |l| {
                let src = &row[l.out..l.out + l.len];
                if step == 1 {
                    for (d, &v) in plane[l.inp..l.inp + l.len].iter_mut().zip(src) {
                        *d = d.add(v);
                    }
                } else {
                    for (d, &v) in plane[l.inp..].iter_mut().step_by(step).zip(src) {
                        *d = d.add(v);
                    }
                }
            });
        }
    });
}

pub fn conv_transpose<T: NnElem>(c: &ConvTranspose, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let op = "ConvTranspose";
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(CpuError::invalid(op, format!("X {xs:?} and W {ws:?} must both have rank >= 3")));
    }
    let (n, ch) = (xs[0], xs[1]);
    if c.group == 0 || ws[0] != ch || !ch.is_multiple_of(c.group) {
        return Err(CpuError::invalid(op, format!("X {xs:?}, W {ws:?} and group {} do not fit", c.group)));
    }
    let g = Groups { batch: n, group: c.group, cin: ch / c.group, cout: ws[1] };
    let m = g.group * g.cout;
    let kernel = c.window.kernel(Some(&ws[2..])).unwrap_or(&ws[2..]);
    if kernel != &ws[2..] {
        return Err(CpuError::invalid(op, format!("kernel_shape {kernel:?} differs from W's {:?}", &ws[2..])));
    }
    let d = xs.len() - 2;
    c.window.check(d, op)?;
    let axes = (0..d).map(|i| c.axis(i, d, xs[2 + i], kernel[i], op)).collect::<kiln_ir::Result<Vec<_>>>()?;
    // The geometry of the forward convolution whose adjoint this is: its input is our output.
    let geom = Geom { axes };
    let (in_size, out_size, taps) = (geom.out_size(), geom.in_size(), geom.taps());
    let (xd, wd) = (acc_data::<T>(x)?, acc_data::<T>(w)?);
    let bias = b.map(acc_data::<T>).transpose()?;
    check_bias(bias.as_deref(), m, op)?;
    let rows = g.cout * taps;
    let mut out = vec![T::A::ZERO; n * m * out_size];
    let unit = |u: usize, dst: &mut [T::A], col: &mut Vec<T::A>| -> Result<()> {
        let (batch, grp) = (u / g.group, u % g.group);
        let src = Mat::row_major(&xd[(batch * ch + grp * g.cin) * in_size..][..g.cin * in_size], g.cin, in_size);
        let wg = Mat::row_major(&wd[grp * g.cin * rows..][..g.cin * rows], g.cin, rows).t();
        col.resize(rows * in_size, T::A::ZERO);
        gemm(T::A::ONE, wg, src, T::A::ZERO, col, in_size)?;
        col2im(&geom, col, dst);
        Ok(())
    };
    let chunk = g.cout * out_size;
    if chunk > 0 {
        let mut col = Vec::new();
        for (u, dst) in out.chunks_mut(chunk).enumerate() {
            unit(u, dst, &mut col)?;
        }
    }
    if let Some(b) = bias.as_deref() {
        out.par_chunks_mut(out_size.max(1)).enumerate().for_each(|(p, plane)| {
            plane.iter_mut().for_each(|v| *v = v.add(b[p % m]));
        });
    }
    let mut shape = vec![n, m];
    shape.extend(geom.in_dims());
    from_acc::<T>(shape, out)
}

pub fn col2im_op<T: NnElem>(w: &Window, x: &Tensor, image: &Tensor, block: &Tensor) -> Result<Tensor> {
    let op = "Col2Im";
    let to_sizes = |t: &Tensor, what: &str| -> Result<Vec<usize>> {
        t.to_i64_vec()?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| CpuError::invalid(op, format!("{what} has a negative value {v}"))))
            .collect()
    };
    let (image, block) = (to_sizes(image, "image_shape")?, to_sizes(block, "block_shape")?);
    let xs = x.shape();
    let taps: usize = block.iter().product();
    if xs.len() != 3 || image.len() != block.len() || taps == 0 || !xs[1].is_multiple_of(taps) {
        return Err(CpuError::invalid(op, format!("input {xs:?}, image {image:?} and block {block:?} do not fit")));
    }
    let geom = Geom::forward(w, &image, &block, false, op)?;
    if geom.out_size() != xs[2] {
        return Err(CpuError::invalid(op, format!("{} blocks expected, input has {}", geom.out_size(), xs[2])));
    }
    let channels = xs[1] / taps;
    let xd = acc_data::<T>(x)?;
    let mut out = vec![T::A::ZERO; xs[0] * channels * geom.in_size()];
    col2im(&geom, &xd, &mut out);
    let mut shape = vec![xs[0], channels];
    shape.extend(image);
    from_acc::<T>(shape, out)
}
