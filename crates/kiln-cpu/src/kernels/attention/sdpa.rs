//! ONNX `Attention`: softmax(Q·Kᵀ·scale [softcap] + bias) · V per head, with KV cache
//! concatenation and grouped-query heads. f16/bf16 are computed in f32 and rounded once.

use kiln_ir::ops::attention::{Attention, QkOutputMode};
use kiln_ir::{DType, Element, Tensor};
use num_traits::{Float, NumCast};
use rayon::prelude::*;

use crate::array::{opt, req};
use crate::{CpuError, Result, dispatch};

const OP: &str = "Attention";

pub fn eval(a: &Attention, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let q = req(inputs, 0, OP)?;
    match q.dtype() {
        DType::F64 => attention::<f64, f64>(a, inputs, n_outputs),
        dt => dispatch!(float, dt, OP, T => attention::<T, f32>(a, inputs, n_outputs)),
    }
}

/// The accumulation type (f32 or f64) and its matrix product.
trait Acc: Float + Send + Sync + Default + std::iter::Sum + 'static {
    /// C (m×n) = alpha · A (m×k) · B (k×n), all row-major-ish through explicit strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
        c: &mut [Self],
    );
}

macro_rules! acc {
    ($t:ty, $f:path) => {
        impl Acc for $t {
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                rsa: isize,
                csa: isize,
                b: &[Self],
                rsb: isize,
                csb: isize,
                c: &mut [Self],
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                // Bounds: the callers pass slices starting at the matrix origin that
                // cover the last element ((m-1)·rsa + (k-1)·csa etc.), checked below.
                let need_a = if k == 0 { 0 } else { (m - 1) * rsa as usize + (k - 1) * csa as usize + 1 };
                let need_b = if k == 0 { 0 } else { (k - 1) * rsb as usize + (n - 1) * csb as usize + 1 };
                assert!(a.len() >= need_a && b.len() >= need_b && c.len() >= m * n);
                // SAFETY: the strides address only elements inside `a`, `b`, `c` (checked above).
                unsafe {
                    $f(m, k, n, alpha, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, 0.0, c.as_mut_ptr(), n as isize, 1)
                }
            }
        }
    };
}
acc!(f32, matrixmultiply::sgemm);
acc!(f64, matrixmultiply::dgemm);

fn to_acc<T: Element + NumCast + Copy, A: Acc>(t: &Tensor) -> Result<Vec<A>> {
    Ok(t.as_slice::<T>()?.iter().map(|&v| <A as NumCast>::from(v).unwrap_or_else(A::nan)).collect())
}

fn from_acc<T: Element + NumCast, A: Acc>(v: Vec<A>, shape: Vec<usize>) -> Result<Tensor> {
    let data: Vec<T> = v
        .into_iter()
        .map(|x| <T as NumCast>::from(x))
        .collect::<Option<_>>()
        .ok_or_else(|| CpuError::invalid(OP, "value not representable in the output dtype"))?;
    Ok(Tensor::from_vec(shape, data)?)
}

/// Q, K or V seen as `[batch, heads, seq, head_size]` over its own storage.
struct Heads<A> {
    data: Vec<A>,
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
    /// Whether the storage is `[batch, seq, heads·size]` (3-D input) rather than 4-D.
    packed: bool,
}

impl<A: Acc> Heads<A> {
    fn new(t: &Tensor, data: Vec<A>, n_heads: Option<usize>, what: &str) -> Result<Heads<A>> {
        match *t.shape() {
            [batch, heads, seq, size] => Ok(Heads { data, batch, heads, seq, size, packed: false }),
            [batch, seq, hidden] => {
                let heads =
                    n_heads.ok_or_else(|| CpuError::invalid(OP, "3-D inputs need q_num_heads and kv_num_heads"))?;
                if heads == 0 || !hidden.is_multiple_of(heads) {
                    return Err(CpuError::invalid(
                        OP,
                        format!("{what} hidden size {hidden} not divisible by {heads} heads"),
                    ));
                }
                Ok(Heads { data, batch, heads, seq, size: hidden / heads, packed: true })
            }
            _ => Err(CpuError::invalid(OP, format!("{what} must be 3-D or 4-D, got shape {:?}", t.shape()))),
        }
    }

    /// Offset of element (b, h, 0, 0) and the row stride.
    fn origin(&self, b: usize, h: usize) -> (usize, usize) {
        if self.packed {
            (b * self.seq * self.heads * self.size + h * self.size, self.heads * self.size)
        } else {
            ((b * self.heads + h) * self.seq * self.size, self.size)
        }
    }

    /// Past cache (4-D) followed by these rows, as a standard 4-D array.
    fn with_past(&self, past: Option<&Heads<A>>, what: &str) -> Result<Heads<A>> {
        let p = past.map_or(0, |p| p.seq);
        if let Some(past) = past
            && (past.packed || past.batch != self.batch || past.heads != self.heads || past.size != self.size)
        {
            return Err(CpuError::invalid(
                OP,
                format!("past_{what} shape does not match {what}'s [batch, heads, _, head_size]"),
            ));
        }
        let total = p + self.seq;
        let mut data = Vec::with_capacity(self.batch * self.heads * total * self.size);
        for b in 0..self.batch {
            for h in 0..self.heads {
                if let Some(past) = past {
                    let (o, _) = past.origin(b, h);
                    data.extend_from_slice(&past.data[o..o + p * self.size]);
                }
                let (o, rs) = self.origin(b, h);
                for l in 0..self.seq {
                    data.extend_from_slice(&self.data[o + l * rs..o + l * rs + self.size]);
                }
            }
        }
        Ok(Heads { data, batch: self.batch, heads: self.heads, seq: total, size: self.size, packed: false })
    }

    fn shape(&self) -> Vec<usize> {
        vec![self.batch, self.heads, self.seq, self.size]
    }
}

/// The additive bias of score (b, h, i, j): mask (broadcast, padded with -inf), causal
/// triangle and key padding.
struct Bias<A> {
    mask: Option<(Vec<A>, [usize; 4], usize)>,
    causal_offset: Option<usize>,
    nonpad: Option<Vec<i64>>,
}

impl<A: Acc> Bias<A> {
    fn new<T: Element + NumCast + Copy>(
        mask: Option<&Tensor>,
        dims: [usize; 4],
        causal_offset: Option<usize>,
        nonpad: Option<&Tensor>,
    ) -> Result<Bias<A>> {
        let mask = mask
            .map(|m| {
                let values: Vec<A> = if m.dtype() == DType::Bool {
                    m.to_bools()?.into_iter().map(|b| if b { A::zero() } else { A::neg_infinity() }).collect()
                } else {
                    to_acc::<T, A>(m)?
                };
                let shape = m.shape();
                if shape.len() > 4 {
                    return Err(CpuError::invalid(OP, format!("attn_mask rank {} > 4", shape.len())));
                }
                let mut full = [1usize; 4];
                full[4 - shape.len()..].copy_from_slice(shape);
                let width = full[3];
                if width > dims[3] {
                    return Err(CpuError::invalid(
                        OP,
                        format!("attn_mask is wider ({width}) than the keys ({})", dims[3]),
                    ));
                }
                let mut strides = [0usize; 4];
                let mut s = 1;
                for d in (0..4).rev() {
                    if d < 3 && full[d] != 1 && full[d] != dims[d] {
                        return Err(CpuError::invalid(OP, format!("attn_mask shape {shape:?} does not broadcast")));
                    }
                    strides[d] = if full[d] == 1 { 0 } else { s };
                    s *= full[d];
                }
                strides[3] = 1;
                Ok((values, strides, width))
            })
            .transpose()?;
        let nonpad = nonpad.map(|t| t.to_i64_vec()).transpose()?;
        if let Some(n) = &nonpad
            && n.len() != dims[0]
        {
            return Err(CpuError::invalid(OP, "nonpad_kv_seqlen must have one entry per batch"));
        }
        Ok(Bias { mask, causal_offset, nonpad })
    }

    fn add_row(&self, b: usize, h: usize, i: usize, row: &mut [A]) {
        if let Some((m, st, width)) = &self.mask {
            let o = b * st[0] + h * st[1] + i * st[2];
            for (j, r) in row.iter_mut().enumerate() {
                *r = *r + if j < *width { m[o + j] } else { A::neg_infinity() };
            }
        }
        if let Some(past) = self.causal_offset {
            for r in row.iter_mut().skip(i + past + 1) {
                *r = A::neg_infinity();
            }
        }
        if let Some(n) = &self.nonpad {
            let valid = n[b].max(0) as usize;
            for r in row.iter_mut().skip(valid) {
                *r = *r + A::neg_infinity();
            }
        }
    }
}

/// Softmax of one row of scores. A fully masked row (every score -inf) gives zeros, not
/// 0/0 = NaN: the ONNX Attention errata (opset 23) and PyTorch's `_safe_softmax` agree.
fn softmax_row<A: Acc>(row: &mut [A]) {
    let max = row.iter().copied().fold(A::neg_infinity(), A::max);
    if max == A::neg_infinity() && row.iter().all(|&r| r == A::neg_infinity()) {
        row.iter_mut().for_each(|r| *r = A::zero());
        return;
    }
    let mut sum = A::zero();
    for r in row.iter_mut() {
        *r = (*r - max).exp();
        sum = sum + *r;
    }
    for r in row.iter_mut() {
        *r = *r / sum;
    }
}

fn attention<T: Element + NumCast + Copy, A: Acc>(
    a: &Attention,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let (qt, kt, vt) = (req(inputs, 0, OP)?, req(inputs, 1, OP)?, req(inputs, 2, OP)?);
    if qt.rank() != kt.rank() || qt.rank() != vt.rank() {
        return Err(CpuError::invalid(OP, "Q, K and V must have the same rank"));
    }
    let q = Heads::new(qt, to_acc::<T, A>(qt)?, a.q_num_heads, "Q")?;
    let k = Heads::new(kt, to_acc::<T, A>(kt)?, a.kv_num_heads, "K")?;
    let v = Heads::new(vt, to_acc::<T, A>(vt)?, a.kv_num_heads, "V")?;
    let past = |i: usize, what: &str| -> Result<Option<Heads<A>>> {
        opt(inputs, i).map(|t| Heads::new(t, to_acc::<T, A>(t)?, None, what)).transpose()
    };
    let (past_k, past_v) = (past(4, "past_key")?, past(5, "past_value")?);
    if past_k.is_some() != past_v.is_some() {
        return Err(CpuError::invalid(OP, "past_key and past_value must be given together"));
    }
    let k = k.with_past(past_k.as_ref(), "key")?;
    let v = v.with_past(past_v.as_ref(), "value")?;
    let past_len = past_k.as_ref().map_or(0, |p| p.seq);
    if q.batch != k.batch || k.batch != v.batch || k.heads != v.heads || k.seq != v.seq || q.size != k.size {
        return Err(CpuError::invalid(OP, "Q, K and V shapes are inconsistent"));
    }
    if k.heads == 0 || !q.heads.is_multiple_of(k.heads) {
        return Err(CpuError::invalid(
            OP,
            format!("{} query heads are not a multiple of {} kv heads", q.heads, k.heads),
        ));
    }
    let (lq, total, dv) = (q.seq, k.seq, v.size);
    let dims = [q.batch, q.heads, lq, total];
    let bias = Bias::<A>::new::<T>(opt(inputs, 3), dims, a.is_causal.then_some(past_len), opt(inputs, 6))?;
    let scale = match a.scale {
        Some(s) => <A as NumCast>::from(s).unwrap_or_else(A::nan),
        None => A::one() / <A as NumCast>::from(q.size).unwrap_or_else(A::nan).sqrt(),
    };
    let softcap = <A as NumCast>::from(a.softcap).unwrap_or_else(A::zero);
    let want_qk = n_outputs > 3;
    let reps = q.heads / k.heads;

    // One (Y, qk) pair per (batch, query head).
    let per_head: Vec<(Vec<A>, Vec<A>)> = (0..q.batch * q.heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / q.heads, bh % q.heads);
            let kh = h / reps;
            let (qo, qrs) = q.origin(b, h);
            let (ko, krs) = k.origin(b, kh);
            let (vo, vrs) = v.origin(b, kh);
            let mut s = vec![A::zero(); lq * total];
            // S = Q (lq×d) · Kᵀ (d×total): Kᵀ through strides.
            A::gemm(lq, q.size, total, scale, &q.data[qo..], qrs as isize, 1, &k.data[ko..], 1, krs as isize, &mut s);
            let mut qk = Vec::new();
            let keep = |mode: QkOutputMode, s: &Vec<A>, qk: &mut Vec<A>| {
                if want_qk && a.qk_output == mode {
                    qk.clone_from(s);
                }
            };
            keep(QkOutputMode::MatMul, &s, &mut qk);
            if softcap > A::zero() {
                s.iter_mut().for_each(|x| *x = softcap * (*x / softcap).tanh());
            }
            keep(QkOutputMode::Softcap, &s, &mut qk);
            for (i, row) in s.chunks_mut(total.max(1)).enumerate().take(lq) {
                bias.add_row(b, h, i, row);
            }
            keep(QkOutputMode::Masked, &s, &mut qk);
            s.chunks_mut(total.max(1)).for_each(softmax_row);
            keep(QkOutputMode::Softmax, &s, &mut qk);
            let mut y = vec![A::zero(); lq * dv];
            A::gemm(lq, total, dv, A::one(), &s, total as isize, 1, &v.data[vo..], vrs as isize, 1, &mut y);
            (y, qk)
        })
        .collect();

    // Y in Q's layout: [b, h, l, d] (4-D) or [b, l, h·d] (3-D).
    let mut y = vec![A::zero(); q.batch * q.heads * lq * dv];
    for (bh, (yh, _)) in per_head.iter().enumerate() {
        let (b, h) = (bh / q.heads, bh % q.heads);
        for l in 0..lq {
            let dst = if q.packed { (b * lq + l) * q.heads * dv + h * dv } else { (bh * lq + l) * dv };
            y[dst..dst + dv].copy_from_slice(&yh[l * dv..(l + 1) * dv]);
        }
    }
    let y_shape = if q.packed { vec![q.batch, lq, q.heads * dv] } else { vec![q.batch, q.heads, lq, dv] };
    let mut out = vec![from_acc::<T, A>(y, y_shape)?];
    if n_outputs > 1 {
        let (ks, vs) = (k.shape(), v.shape());
        out.push(from_acc::<T, A>(k.data, ks)?);
        out.push(from_acc::<T, A>(v.data, vs)?);
    }
    if want_qk {
        let qk: Vec<A> = per_head.into_iter().flat_map(|(_, qk)| qk).collect();
        out.push(from_acc::<T, A>(qk, dims.to_vec())?);
    }
    Ok(out)
}
