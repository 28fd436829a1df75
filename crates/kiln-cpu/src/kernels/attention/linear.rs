//! LinearAttention (opset 27): a per-head `[d_k, d_v]` state updated once per time step
//! (optionally decayed and delta-corrected) and read by the queries. Computed in f32
//! (f64 for f64 inputs), as the ONNX reference.

use kiln_ir::ops::attention::LinearAttention;
use kiln_ir::{DType, Element, Tensor};
use num_traits::{Float, NumCast};
use rayon::prelude::*;

use crate::array::{opt, req};
use crate::{CpuError, Result, dispatch};

const OP: &str = "LinearAttention";

pub fn eval(l: &LinearAttention, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let q = req(inputs, 0, OP)?;
    match q.dtype() {
        DType::F64 => run::<f64, f64>(l, inputs),
        dt => dispatch!(float, dt, OP, T => run::<T, f32>(l, inputs)),
    }
}

fn real<A: Float + NumCast>(t: &Tensor) -> Result<Vec<A>> {
    dispatch!(float, t.dtype(), OP, T => Ok(t
        .as_slice::<T>()?
        .iter()
        .map(|&v| <A as NumCast>::from(v).unwrap_or_else(A::nan))
        .collect::<Vec<A>>()))
}

fn cast_to<A: Float + NumCast>(dtype: DType, shape: Vec<usize>, v: Vec<A>) -> Result<Tensor> {
    macro_rules! conv {
        ($t:ty) => {
            Tensor::from_vec(
                shape,
                v.into_iter().map(|x| <$t as NumCast>::from(x).unwrap_or(<$t>::NAN)).collect::<Vec<$t>>(),
            )?
        };
    }
    Ok(match dtype {
        DType::F32 => conv!(f32),
        DType::F64 => conv!(f64),
        DType::F16 => conv!(half::f16),
        DType::BF16 => conv!(half::bf16),
        other => return Err(CpuError::dtype(OP, other)),
    })
}

/// Per-step, per-kv-head values of decay (`d_k` or 1 wide) or beta (1 wide, maybe
/// shared by all heads).
struct Gate<A> {
    data: Vec<A>,
    /// Elements per (batch, step) row.
    row: usize,
    /// Elements per head within a row (0: shared by all heads).
    per_head: usize,
    width: usize,
}

impl<A: Copy> Gate<A> {
    fn at(&self, b: usize, steps: usize, t: usize, h: usize) -> &[A] {
        let o = (b * steps + t) * self.row + h * self.per_head;
        &self.data[o..o + self.width]
    }
}

fn run<T: Element, A: Float + NumCast + Send + Sync + std::iter::Sum>(
    l: &LinearAttention,
    inputs: &[Option<Tensor>],
) -> Result<Vec<Tensor>> {
    let (qt, kt, vt) = (req(inputs, 0, OP)?, req(inputs, 1, OP)?, req(inputs, 2, OP)?);
    let (&[b, t, qh], &[kb, kt_len, kh], &[vb, vt_len, vh]) = (qt.shape(), kt.shape(), vt.shape()) else {
        return Err(CpuError::invalid(OP, "query, key and value must be 3-D [batch, seq, hidden]"));
    };
    let (hq, hk) = (l.q_num_heads, l.kv_num_heads);
    if hq == 0
        || hk == 0
        || !hq.is_multiple_of(hk)
        || !qh.is_multiple_of(hq)
        || !kh.is_multiple_of(hk)
        || !vh.is_multiple_of(hk)
    {
        return Err(CpuError::invalid(OP, "hidden sizes must divide into heads and q heads into kv heads"));
    }
    let (dk, dv) = (qh / hq, vh / hk);
    if kb != b || vb != b || kt_len != t || vt_len != t || kh / hk != dk {
        return Err(CpuError::invalid(OP, "query, key and value shapes do not match"));
    }
    let gate = |i: usize, what: &str, widths: &[usize]| -> Result<Option<Gate<A>>> {
        let Some(g) = opt(inputs, i) else { return Ok(None) };
        let &[gb, gt, last] = g.shape() else {
            return Err(CpuError::invalid(OP, format!("{what} must be 3-D")));
        };
        if gb != b || gt != t || !widths.contains(&last) {
            return Err(CpuError::invalid(OP, format!("{what} shape {:?} does not fit", g.shape())));
        }
        let (per_head, width) = if last == hk * dk && dk != 1 {
            (dk, dk)
        } else if last == hk {
            (1, 1)
        } else {
            (0, 1)
        };
        Ok(Some(Gate { data: real::<A>(g)?, row: last, per_head, width }))
    };
    let decay = gate(4, "decay", &[hk, hk * dk])?;
    let beta = gate(5, "beta", &[hk, 1])?;
    if l.rule.gated() != decay.is_some() || l.rule.delta() != beta.is_some() {
        return Err(CpuError::invalid(OP, "decay/beta must be given exactly when the update rule uses them"));
    }
    let past = opt(inputs, 3);
    if let Some(p) = past
        && p.shape() != [b, hk, dk, dv]
    {
        return Err(CpuError::invalid(OP, format!("past_state shape {:?} is not [{b}, {hk}, {dk}, {dv}]", p.shape())));
    }
    let state_dtype = past.map_or(qt.dtype(), Tensor::dtype);
    let init: Vec<A> = match past {
        Some(p) => real::<A>(p)?,
        None => vec![A::zero(); b * hk * dk * dv],
    };
    let (q, k, v) = (real::<A>(qt)?, real::<A>(kt)?, real::<A>(vt)?);
    let scale = match l.scale {
        Some(s) => <A as NumCast>::from(s).unwrap_or_else(A::nan),
        None => A::one() / <A as NumCast>::from(dk).unwrap_or_else(A::nan).sqrt(),
    };
    let group = hq / hk;
    // Each (batch, kv head) runs its recurrence independently; it writes the outputs of
    // its `group` query heads.
    let results: Vec<(Vec<A>, Vec<Vec<A>>)> = (0..b * hk)
        .into_par_iter()
        .map(|bh| {
            let (bi, h) = (bh / hk, bh % hk);
            let mut s = init[bh * dk * dv..(bh + 1) * dk * dv].to_vec();
            let mut outs = vec![vec![A::zero(); t * dv]; group];
            let mut vt = vec![A::zero(); dv];
            for step in 0..t {
                let row = |x: &[A], hidden: usize, head: usize, d: usize| {
                    let o = (bi * t + step) * hidden + head * d;
                    x[o..o + d].to_vec()
                };
                let kr = row(&k, kh, h, dk);
                vt.copy_from_slice(&row(&v, vh, h, dv));
                if let Some(g) = &decay {
                    let g = g.at(bi, t, step, h);
                    for (d, srow) in s.chunks_mut(dv).enumerate() {
                        let f = g[if g.len() == 1 { 0 } else { d }].exp();
                        srow.iter_mut().for_each(|x| *x = *x * f);
                    }
                }
                if let Some(be) = &beta {
                    let be = be.at(bi, t, step, h)[0];
                    for (m, x) in vt.iter_mut().enumerate() {
                        let retrieved: A = (0..dk).map(|d| s[d * dv + m] * kr[d]).sum();
                        *x = be * (*x - retrieved);
                    }
                }
                for (d, srow) in s.chunks_mut(dv).enumerate() {
                    srow.iter_mut().zip(&vt).for_each(|(x, &vv)| *x = *x + kr[d] * vv);
                }
                for (gi, out) in outs.iter_mut().enumerate() {
                    let qr = row(&q, qh, h * group + gi, dk);
                    for m in 0..dv {
                        let acc: A = (0..dk).map(|d| qr[d] * s[d * dv + m]).sum();
                        out[step * dv + m] = scale * acc;
                    }
                }
            }
            (s, outs)
        })
        .collect();
    let mut y = vec![A::zero(); b * t * hq * dv];
    let mut state = Vec::with_capacity(b * hk * dk * dv);
    for (bh, (s, outs)) in results.into_iter().enumerate() {
        let (bi, h) = (bh / hk, bh % hk);
        for (gi, out) in outs.iter().enumerate() {
            let head = h * group + gi;
            for step in 0..t {
                let dst = (bi * t + step) * hq * dv + head * dv;
                y[dst..dst + dv].copy_from_slice(&out[step * dv..(step + 1) * dv]);
            }
        }
        state.extend(s);
    }
    Ok(vec![cast_to(T::DTYPE, vec![b, t, hq * dv], y)?, cast_to(state_dtype, vec![b, hk, dk, dv], state)?])
}
