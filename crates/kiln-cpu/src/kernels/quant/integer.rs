//! Integer matmul and convolution on quantized tensors: operands shifted by their zero
//! points, exact i32 accumulation (wrapping, as the hardware kernels do), then for the
//! QLinear ops a requantization to the output's scale and zero point.

use kiln_ir::Tensor;
use kiln_ir::ops::quant::ConvGeometry;
use rayon::prelude::*;

use super::{int_range, int_tensor, round_to, saturate_int, values_f64};
use crate::array::{opt, req};
use crate::{CpuError, Result};

/// `out[m×n] = a[m×k] · b[k×n]` in wrapping i32 arithmetic, rows in parallel.
fn gemm_i32(a: &[i32], b: &[i32], out: &mut [i32], k: usize, n: usize) {
    if n == 0 {
        return;
    }
    out.par_chunks_mut(n).zip(a.par_chunks(k.max(1))).for_each(|(row, a_row)| {
        row.fill(0);
        for (kk, &av) in a_row.iter().enumerate().take(k) {
            if av == 0 {
                continue;
            }
            for (o, &bv) in row.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *o = o.wrapping_add(av.wrapping_mul(bv));
            }
        }
    });
}

/// u8/i8 tensor values as i32.
fn ints(t: &Tensor, op: &str) -> Result<Vec<i32>> {
    if !matches!(t.dtype(), kiln_ir::DType::U8 | kiln_ir::DType::I8) {
        return Err(CpuError::dtype(op, t.dtype()));
    }
    Ok(t.to_i64_vec()?.into_iter().map(|v| v as i32).collect())
}

/// A zero point: one value, or one per row (`along` = rows) / column.
fn zero_points(t: Option<&Tensor>, x: &Tensor, along: usize, what: &str, op: &str) -> Result<Vec<i32>> {
    let Some(t) = t else { return Ok(vec![0]) };
    if t.dtype() != x.dtype() {
        return Err(CpuError::invalid(
            op,
            format!("{what} type {} differs from its operand's {}", t.dtype(), x.dtype()),
        ));
    }
    let v = ints(t, op)?;
    if v.len() == 1 || v.len() == along {
        Ok(v)
    } else {
        Err(CpuError::invalid(op, format!("{what} of shape {:?} must have 1 or {along} values", t.shape())))
    }
}

/// Shapes of a numpy matmul: batch pairs, and m, k, n.
struct MatMulPlan {
    out_shape: Vec<usize>,
    /// For each output batch: (a batch index, b batch index).
    batches: Vec<(usize, usize)>,
    m: usize,
    k: usize,
    n: usize,
}

impl MatMulPlan {
    fn new(a: &[usize], b: &[usize], op: &str) -> Result<MatMulPlan> {
        if a.is_empty() || b.is_empty() {
            return Err(CpuError::invalid(op, "matmul operands must have rank >= 1"));
        }
        let (a2, b2): (Vec<usize>, Vec<usize>) = (
            if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() },
            if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() },
        );
        let (ar, br) = (a2.len(), b2.len());
        let (m, k, k2, n) = (a2[ar - 2], a2[ar - 1], b2[br - 2], b2[br - 1]);
        if k != k2 {
            return Err(CpuError::invalid(op, format!("inner dims of {a:?} and {b:?} differ")));
        }
        let (ab, bb) = (&a2[..ar - 2], &b2[..br - 2]);
        let batch = crate::array::broadcast_shape(ab, bb, op)?;
        let index_in = |src: &[usize], idx: &[usize]| {
            let off = idx.len() - src.len();
            src.iter().enumerate().fold(0, |acc, (i, &d)| acc * d + if d == 1 { 0 } else { idx[off + i] })
        };
        let total: usize = batch.iter().product();
        let mut batches = Vec::with_capacity(total);
        let mut idx = vec![0; batch.len()];
        for _ in 0..total {
            batches.push((index_in(ab, &idx), index_in(bb, &idx)));
            for d in (0..batch.len()).rev() {
                idx[d] += 1;
                if idx[d] < batch[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let mut out_shape = batch;
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        Ok(MatMulPlan { out_shape, batches, m, k, n })
    }

    /// The i32 product of a and b shifted by per-row / per-column zero points.
    fn run(&self, a: &[i32], b: &[i32], a_zero: &[i32], b_zero: &[i32]) -> Vec<i32> {
        let (m, k, n) = (self.m, self.k, self.n);
        let shift = |v: &[i32], zero: &[i32], at: &dyn Fn(usize) -> usize| -> Vec<i32> {
            v.iter().enumerate().map(|(i, &x)| x.wrapping_sub(zero[if zero.len() == 1 { 0 } else { at(i) }])).collect()
        };
        let a = shift(a, a_zero, &|i| (i / k) % m);
        let b = shift(b, b_zero, &|i| i % n);
        let mut out = vec![0i32; self.batches.len() * m * n];
        for (o, &(ia, ib)) in out.chunks_mut((m * n).max(1)).zip(&self.batches) {
            gemm_i32(&a[ia * m * k..(ia + 1) * m * k], &b[ib * k * n..(ib + 1) * k * n], o, k, n);
        }
        out
    }
}

pub fn matmul_integer(inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let (a, b) = (req(inputs, 0, op)?, req(inputs, 1, op)?);
    let plan = MatMulPlan::new(a.shape(), b.shape(), op)?;
    let az = zero_points(opt(inputs, 2), a, plan.m, "a_zero_point", op)?;
    let bz = zero_points(opt(inputs, 3), b, plan.n, "b_zero_point", op)?;
    let out = plan.run(&ints(a, op)?, &ints(b, op)?, &az, &bz);
    Ok(Tensor::from_vec(plan.out_shape, out)?)
}

/// Requantizes i32 accumulators: `saturate(round(acc · a_scale·b_scale / y_scale) + y_zero)`,
/// the multiplier computed in the scales' type and the product in f64 (as the
/// reference does); `channel(i)` picks per-channel parameters.
struct Requant {
    multipliers: Vec<f64>,
    y_zero: f64,
    range: (i64, i64),
}

impl Requant {
    fn new(
        a_scale: &Tensor,
        b_scale: &Tensor,
        y_scale: &Tensor,
        y_zero: Option<&Tensor>,
        fallback: &Tensor,
        op: &str,
    ) -> Result<Requant> {
        let dtype = a_scale.dtype();
        let (sa, sb, sy) = (values_f64(a_scale)?, values_f64(b_scale)?, values_f64(y_scale)?);
        if sa.len() != 1 || sy.len() != 1 {
            return Err(CpuError::invalid(op, "input and output scales must be scalars"));
        }
        let multipliers = sb.iter().map(|&b| round_to(dtype, round_to(dtype, sa[0] * b) / sy[0])).collect();
        let out_dtype = y_zero.map_or(fallback.dtype(), |z| z.dtype());
        let range = int_range(out_dtype).ok_or_else(|| CpuError::dtype(op, out_dtype))?;
        let y_zero = y_zero.map(values_f64).transpose()?.and_then(|v| v.first().copied()).unwrap_or(0.0);
        Ok(Requant { multipliers, y_zero, range })
    }

    fn apply(&self, acc: i32, channel: usize) -> i64 {
        let m = self.multipliers[if self.multipliers.len() == 1 { 0 } else { channel }];
        saturate_int(acc as f64 * m + self.y_zero, self.range)
    }
}

pub fn qlinear_matmul(inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let (a, b) = (req(inputs, 0, op)?, req(inputs, 3, op)?);
    let plan = MatMulPlan::new(a.shape(), b.shape(), op)?;
    let az = zero_points(opt(inputs, 2), a, plan.m, "a_zero_point", op)?;
    let bz = zero_points(opt(inputs, 5), b, plan.n, "b_zero_point", op)?;
    let rq = Requant::new(req(inputs, 1, op)?, req(inputs, 4, op)?, req(inputs, 6, op)?, opt(inputs, 7), a, op)?;
    if rq.multipliers.len() != 1 && rq.multipliers.len() != plan.n {
        return Err(CpuError::invalid(op, "b_scale must have 1 value or one per column"));
    }
    let acc = plan.run(&ints(a, op)?, &ints(b, op)?, &az, &bz);
    let n = plan.n.max(1);
    let out = acc.iter().enumerate().map(|(i, &v)| rq.apply(v, i % n)).collect();
    let dtype = opt(inputs, 7).map_or(a.dtype(), |z| z.dtype());
    int_tensor(dtype, plan.out_shape, out, op)
}

/// An N-d grouped convolution of zero-point-shifted integers (im2col then GEMM per
/// image and group); returns the i32 output and its shape.
fn conv_i32(
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    x_zero: i32,
    w_zero: &[i32],
    bias: Option<&[i32]>,
    op: &str,
) -> Result<(Vec<i32>, Vec<usize>)> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(CpuError::invalid(op, format!("input {xs:?} and weight {ws:?} must have the same rank >= 3")));
    }
    let (batch, c, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let groups = g.group;
    if groups == 0 || cg * groups != c || m % groups != 0 {
        return Err(CpuError::invalid(op, format!("channels of {xs:?} and {ws:?} do not fit group {groups}")));
    }
    if w_zero.len() != 1 && w_zero.len() != m {
        return Err(CpuError::invalid(op, "w_zero_point must have 1 value or one per output channel"));
    }
    if bias.is_some_and(|b| b.len() != m) {
        return Err(CpuError::invalid(op, format!("bias must have {m} values")));
    }
    let plan = g.plan(&xs[2..], &ws[2..], op)?;
    let spatial_in: Vec<usize> = xs[2..].to_vec();
    let (in_size, out_size): (usize, usize) = (spatial_in.iter().product(), plan.out.iter().product());
    let k_size: usize = plan.kernel.iter().product();
    let mg = m / groups;
    let xv: Vec<i32> = ints(x, op)?.into_iter().map(|v| v.wrapping_sub(x_zero)).collect();
    let wv: Vec<i32> = ints(w, op)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.wrapping_sub(w_zero[if w_zero.len() == 1 { 0 } else { i / (cg * k_size).max(1) }]))
        .collect();
    // For every (kernel offset, output position): the input position, or None in padding.
    let taps = tap_table(&plan, &spatial_in);
    let mut out = vec![0i32; batch * m * out_size];
    let mut col = vec![0i32; cg * k_size * out_size];
    for n in 0..batch {
        for grp in 0..groups {
            let x_base = (n * c + grp * cg) * in_size;
            col.par_chunks_mut(out_size.max(1)).enumerate().for_each(|(row, dst)| {
                let (ci, kk) = (row / k_size, row % k_size);
                let src = &xv[x_base + ci * in_size..x_base + (ci + 1) * in_size];
                for (d, t) in dst.iter_mut().zip(&taps[kk * out_size..(kk + 1) * out_size]) {
                    *d = t.map_or(0, |p| src[p]);
                }
            });
            let o_base = (n * m + grp * mg) * out_size;
            let w_g = &wv[grp * mg * cg * k_size..(grp + 1) * mg * cg * k_size];
            gemm_i32(w_g, &col, &mut out[o_base..o_base + mg * out_size], cg * k_size, out_size);
        }
    }
    if let Some(b) = bias {
        for (i, v) in out.iter_mut().enumerate() {
            *v = v.wrapping_add(b[(i / out_size.max(1)) % m]);
        }
    }
    let mut shape = vec![batch, m];
    shape.extend(&plan.out);
    Ok((out, shape))
}

fn tap_table(plan: &kiln_ir::ops::quant::ConvPlan, input: &[usize]) -> Vec<Option<usize>> {
    let out_size: usize = plan.out.iter().product();
    let k_size: usize = plan.kernel.iter().product();
    let rank = input.len();
    let mut taps = Vec::with_capacity(k_size * out_size);
    let unravel = |mut i: usize, dims: &[usize]| {
        let mut idx = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            idx[d] = i % dims[d];
            i /= dims[d];
        }
        idx
    };
    for kk in 0..k_size {
        let kidx = unravel(kk, &plan.kernel);
        for o in 0..out_size {
            let oidx = unravel(o, &plan.out);
            let mut pos = 0usize;
            let mut inside = true;
            for d in 0..rank {
                let p = (oidx[d] * plan.strides[d] + kidx[d] * plan.dilations[d]) as i64 - plan.pad_begin[d] as i64;
                if p < 0 || p >= input[d] as i64 {
                    inside = false;
                    break;
                }
                pos = pos * input[d] + p as usize;
            }
            taps.push(inside.then_some(pos));
        }
    }
    taps
}

fn scalar_zero(t: Option<&Tensor>, x: &Tensor, what: &str, op: &str) -> Result<i32> {
    let v = zero_points(t, x, 1, what, op)?;
    Ok(v[0])
}

pub fn conv_integer(g: &ConvGeometry, inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let (x, w) = (req(inputs, 0, op)?, req(inputs, 1, op)?);
    let m = w.shape().first().copied().unwrap_or(0);
    let xz = scalar_zero(opt(inputs, 2), x, "x_zero_point", op)?;
    let wz = zero_points(opt(inputs, 3), w, m, "w_zero_point", op)?;
    let (out, shape) = conv_i32(g, x, w, xz, &wz, None, op)?;
    Ok(Tensor::from_vec(shape, out)?)
}

pub fn qlinear_conv(g: &ConvGeometry, inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let (x, w) = (req(inputs, 0, op)?, req(inputs, 3, op)?);
    let m = w.shape().first().copied().unwrap_or(0);
    let xz = scalar_zero(opt(inputs, 2), x, "x_zero_point", op)?;
    let wz = zero_points(opt(inputs, 5), w, m, "w_zero_point", op)?;
    let bias = opt(inputs, 8).map(|b| b.to_vec::<i32>()).transpose()?;
    let rq = Requant::new(req(inputs, 1, op)?, req(inputs, 4, op)?, req(inputs, 6, op)?, opt(inputs, 7), x, op)?;
    if rq.multipliers.len() != 1 && rq.multipliers.len() != m {
        return Err(CpuError::invalid(op, "w_scale must have 1 value or one per output channel"));
    }
    let (acc, shape) = conv_i32(g, x, w, xz, &wz, bias.as_deref(), op)?;
    let per_channel: usize = shape[2..].iter().product::<usize>().max(1);
    let out = acc.iter().enumerate().map(|(i, &v)| rq.apply(v, (i / per_channel) % m.max(1))).collect();
    let dtype = opt(inputs, 7).map_or(x.dtype(), |z| z.dtype());
    int_tensor(dtype, shape, out, op)
}
