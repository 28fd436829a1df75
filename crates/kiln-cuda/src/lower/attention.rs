//! Attention (opsets 23/24; also what kiln-opt fuses an expanded attention into) and
//! LinearAttention: present key/value by strided copies, then one kernel of
//! `attention.cu` (scores in an f32 workspace temporary).

use kiln_ir::DType;
use kiln_ir::ops::attention::{Attention, AttentionOp, LinearAttention, QkOutputMode};

use super::{Cx, Lowered, is_float};
use crate::executor::{CopySpec, Kernel};
use crate::kernels::ATTENTION;
use crate::launch::family::{FamGrid, FamilyCall};
use crate::plan::SlotId;

pub(crate) fn lower(cx: &mut Cx, op: &AttentionOp) -> Lowered {
    match op {
        AttentionOp::Attention(a) => attention(cx, a),
        AttentionOp::LinearAttention(l) => linear(cx, l),
    }
}

/// The kernel-name suffix of a float dtype.
pub(crate) fn suffix(d: DType) -> Result<&'static str, String> {
    match d {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        d => Err(format!("dtype {d}")),
    }
}

/// The `load_any` code of a float dtype (family.cuh).
pub(crate) fn float_code(d: DType) -> Result<i64, String> {
    match d {
        DType::F32 => Ok(0),
        DType::F16 => Ok(1),
        DType::BF16 => Ok(2),
        DType::F64 => Ok(3),
        d => Err(format!("dtype {d}")),
    }
}

/// Q, K, V or Y seen as `[batch, heads, seq, size]`: strides of (b, h, l), size stride 1.
#[derive(Clone, Copy, Debug)]
struct View4 {
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
    strides: [i64; 3],
}

fn view4(shape: &[usize], heads: Option<usize>, what: &str) -> Result<View4, String> {
    match *shape {
        [batch, h, seq, size] => Ok(View4 {
            batch,
            heads: h,
            seq,
            size,
            strides: [(h * seq * size) as i64, (seq * size) as i64, size as i64],
        }),
        [batch, seq, hidden] => {
            let h = heads.ok_or("3-D inputs need q_num_heads and kv_num_heads")?;
            if h == 0 || hidden % h != 0 {
                return Err(format!("{what} hidden size {hidden} is not divisible by {h} heads"));
            }
            let size = hidden / h;
            Ok(View4 { batch, heads: h, seq, size, strides: [(seq * hidden) as i64, size as i64, hidden as i64] })
        }
        _ => Err(format!("{what} of shape {shape:?} (3-D or 4-D expected)")),
    }
}

/// Copies `src` (a [`View4`]) into rows `at..` of the contiguous `[b, h, total, d]` `dst`.
fn copy_rows(dtype: DType, src: SlotId, v: &View4, dst: SlotId, total: usize, at: usize) -> Kernel {
    let d = v.size;
    let copy = CopySpec {
        dims: vec![v.batch, v.heads, v.seq, d],
        src_offset: 0,
        src_strides: vec![v.strides[0] as isize, v.strides[1] as isize, v.strides[2] as isize, 1],
        dst_offset: (at * d) as isize,
        dst_strides: vec![(v.heads * total * d) as isize, (total * d) as isize, d as isize, 1],
    };
    Kernel::Copy { dtype, src, dst, copy }
}

fn attention(cx: &mut Cx, a: &Attention) -> Lowered {
    let (qs, ks, vs) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let dtype = cx.dtype(qs);
    let sfx = suffix(dtype)?;
    if cx.dtype(ks) != dtype || cx.dtype(vs) != dtype {
        return Err("Q, K and V dtypes differ".into());
    }
    let (qsh, ksh, vsh) = (cx.shape(qs), cx.shape(ks), cx.shape(vs));
    if qsh.len() != ksh.len() || qsh.len() != vsh.len() {
        return Err("Q, K and V ranks differ".into());
    }
    let q = view4(&qsh, a.q_num_heads, "Q")?;
    let k = view4(&ksh, a.kv_num_heads, "K")?;
    let v = view4(&vsh, a.kv_num_heads, "V")?;
    let (past_k, past_v) = (cx.opt_input(4), cx.opt_input(5));
    if past_k.is_some() != past_v.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    let past = match (past_k, past_v) {
        (Some(pk), Some(pv)) => {
            let (pks, pvs) = (cx.shape(pk), cx.shape(pv));
            let pkv = view4(&pks, None, "past_key")?;
            let pvv = view4(&pvs, None, "past_value")?;
            if pks.len() != 4 || pvs.len() != 4 || cx.dtype(pk) != dtype || cx.dtype(pv) != dtype {
                return Err("past key/value must be 4-D of Q's dtype".into());
            }
            if (pkv.batch, pkv.heads, pkv.size) != (k.batch, k.heads, k.size)
                || (pvv.batch, pvv.heads, pvv.size) != (v.batch, v.heads, v.size)
                || pkv.seq != pvv.seq
            {
                return Err("past key/value shapes do not match K and V".into());
            }
            Some((pk, pkv, pv, pvv))
        }
        _ => None,
    };
    let past_len = past.as_ref().map_or(0, |p| p.1.seq);
    let total = past_len + k.seq;
    if q.batch != k.batch || k.batch != v.batch || k.heads != v.heads || k.seq != v.seq || q.size != k.size {
        return Err("Q, K and V shapes are inconsistent".into());
    }
    if k.heads == 0 || q.heads % k.heads != 0 {
        return Err(format!("{} query heads are not a multiple of {} kv heads", q.heads, k.heads));
    }
    let outs = cx.step.outputs.clone();
    let y = *outs.first().ok_or("no output")?;
    let (dv, rows) = (v.size, q.batch * q.heads * q.seq);
    let y_strides = if qsh.len() == 4 {
        [(q.heads * q.seq * dv) as i64, (q.seq * dv) as i64, dv as i64]
    } else {
        [(q.seq * q.heads * dv) as i64, dv as i64, (q.heads * dv) as i64]
    };
    if cx.len(y) != rows * dv || cx.dtype(y) != dtype {
        return Err(format!("Y of shape {:?}", cx.shape(y)));
    }
    let mut ks_out = Vec::new();
    // The keys and values the kernel reads: K and V themselves, or the present caches.
    let mut kv = [(ks, k), (vs, v)];
    let want_present = outs.len() > 1;
    if past.is_some() || want_present {
        for (n, (src, view)) in kv.iter_mut().enumerate() {
            let shape = [view.batch, view.heads, total, view.size];
            let dst = match outs.get(1 + n) {
                Some(&o) if cx.shape(o) == shape && cx.dtype(o) == dtype => o,
                Some(&o) => return Err(format!("present output of shape {:?}, expected {shape:?}", cx.shape(o))),
                None => cx.temp(dtype, &shape),
            };
            if let Some((pk, pkv, pv, pvv)) = &past {
                let (p, pview) = if n == 0 { (*pk, pkv) } else { (*pv, pvv) };
                ks_out.push(copy_rows(dtype, p, pview, dst, total, 0));
            }
            ks_out.push(copy_rows(dtype, *src, view, dst, total, past_len));
            *src = dst;
            *view = View4 {
                seq: total,
                strides: [(view.heads * total * view.size) as i64, (total * view.size) as i64, view.size as i64],
                ..*view
            };
        }
    }
    let [(kslot, k), (vslot, v)] = kv;
    // The mask, right-aligned to [batch, q heads, q len, width].
    let (mask, mask_kind, mstr, width) = match cx.opt_input(3) {
        None => (None, 0, [0i64; 3], 0usize),
        Some(m) => {
            let md = cx.dtype(m);
            let kind = match md {
                DType::Bool => 1,
                d if d == dtype => 2,
                d => return Err(format!("attn_mask of dtype {d}")),
            };
            let ms = cx.shape(m);
            if ms.len() > 4 || ms.is_empty() {
                return Err(format!("attn_mask of rank {}", ms.len()));
            }
            let mut full = [1usize; 4];
            full[4 - ms.len()..].copy_from_slice(&ms);
            let dims = [q.batch, q.heads, q.seq, total];
            if full[3] > total {
                return Err(format!("attn_mask is wider ({}) than the keys ({total})", full[3]));
            }
            let mut st = [0i64; 4];
            let mut s = 1i64;
            for d in (0..4).rev() {
                if d < 3 && full[d] != 1 && full[d] != dims[d] {
                    return Err(format!("attn_mask shape {ms:?} does not broadcast"));
                }
                st[d] = if full[d] == 1 { 0 } else { s };
                s *= full[d] as i64;
            }
            (Some((m, cx.len(m) * md.size())), kind, [st[0], st[1], st[2]], full[3])
        }
    };
    let nonpad = match cx.opt_input(6) {
        None => None,
        Some(n) => {
            if cx.dtype(n) != DType::I64 || cx.len(n) != q.batch {
                return Err("nonpad_kv_seqlen must be i64 with one entry per batch".into());
            }
            Some((n, q.batch * 8))
        }
    };
    let qk = match outs.get(3) {
        Some(&o) => {
            if cx.len(o) != rows * total || cx.dtype(o) != dtype {
                return Err(format!("qk output of shape {:?}", cx.shape(o)));
            }
            Some(o)
        }
        None => None,
    };
    let mode = match (qk, a.qk_output) {
        (None, _) => -1,
        (Some(_), QkOutputMode::MatMul) => 0,
        (Some(_), QkOutputMode::Softcap) => 1,
        (Some(_), QkOutputMode::Masked) => 2,
        (Some(_), QkOutputMode::Softmax) => 3,
    };
    let scale = a.scale.unwrap_or(1.0 / (q.size as f32).sqrt());
    let scores = cx.temp(DType::F32, &[rows.max(1), total.max(1)]);
    let es = dtype.size();
    let span = |v: &View4| {
        if v.batch * v.heads * v.seq * v.size == 0 {
            0
        } else {
            let last = (v.batch - 1) as i64 * v.strides[0]
                + (v.heads - 1) as i64 * v.strides[1]
                + (v.seq - 1) as i64 * v.strides[2]
                + v.size as i64;
            last as usize * es
        }
    };
    let mut call = FamilyCall::new(ATTENTION, format!("kiln_attention_{sfx}"), FamGrid::Rows(rows));
    call.ptrs = vec![
        Some((qs, span(&q))),
        Some((kslot, span(&k))),
        Some((vslot, span(&v))),
        mask,
        nonpad,
        Some((y, rows * dv * es)),
        qk.map(|o| (o, rows * total * es)),
        Some((scores, rows * total * 4)),
    ];
    let mut ints =
        vec![q.batch, q.heads, k.heads, q.seq, total, q.size, dv].into_iter().map(|x| x as i64).collect::<Vec<_>>();
    ints.extend(q.strides);
    ints.extend(k.strides);
    ints.extend(v.strides);
    ints.extend(y_strides);
    ints.extend(mstr);
    ints.extend([width as i64, mask_kind, if a.is_causal { past_len as i64 } else { -1 }, mode]);
    call.ints = ints;
    call.floats = vec![scale, a.softcap];
    if total == 0 {
        return Err("no keys".into());
    }
    ks_out.push(Kernel::Family(Box::new(call)));
    Ok(ks_out)
}

fn linear(cx: &mut Cx, l: &LinearAttention) -> Lowered {
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let dtype = cx.dtype(q);
    let sfx = suffix(dtype)?;
    if cx.dtype(k) != dtype || cx.dtype(v) != dtype {
        return Err("query, key and value dtypes differ".into());
    }
    let (&[b, t, qh], &[kb, kt, kh], &[vb, vt, vh]) = (&cx.shape(q)[..], &cx.shape(k)[..], &cx.shape(v)[..]) else {
        return Err("query, key and value must be 3-D".into());
    };
    let (hq, hk) = (l.q_num_heads, l.kv_num_heads);
    if hq == 0 || hk == 0 || hq % hk != 0 || qh % hq != 0 || kh % hk != 0 || vh % hk != 0 {
        return Err("hidden sizes must divide into heads and q heads into kv heads".into());
    }
    let (dk, dv) = (qh / hq, vh / hk);
    if kb != b || vb != b || kt != t || vt != t || kh / hk != dk {
        return Err("query, key and value shapes do not match".into());
    }
    let gate = |cx: &Cx, i: usize, what: &str, widths: &[usize]| -> Result<Option<(SlotId, i64, [i64; 3])>, String> {
        let Some(g) = cx.opt_input(i) else { return Ok(None) };
        let gs = cx.shape(g);
        let &[gb, gt, last] = &gs[..] else { return Err(format!("{what} must be 3-D")) };
        if gb != b || gt != t || !widths.contains(&last) {
            return Err(format!("{what} shape {gs:?} does not fit"));
        }
        let (per_head, width) = if last == hk * dk && dk != 1 {
            (dk, dk)
        } else if last == hk {
            (1, 1)
        } else {
            (0, 1)
        };
        Ok(Some((g, float_code(cx.dtype(g))?, [last as i64, per_head as i64, width as i64])))
    };
    let decay = gate(cx, 4, "decay", &[hk, hk * dk])?;
    let beta = gate(cx, 5, "beta", &[hk, 1])?;
    if l.rule.gated() != decay.is_some() || l.rule.delta() != beta.is_some() {
        return Err("decay/beta must be given exactly when the update rule uses them".into());
    }
    let past = cx.opt_input(3);
    if let Some(p) = past
        && cx.shape(p) != [b, hk, dk, dv]
    {
        return Err(format!("past_state shape {:?}", cx.shape(p)));
    }
    let (y, present) = (cx.output(0)?, cx.output(1)?);
    if cx.shape(present) != [b, hk, dk, dv] || cx.len(y) != b * t * hq * dv || cx.dtype(y) != dtype {
        return Err("output shapes do not match".into());
    }
    let state = cx.temp(DType::F32, &[b * hk * dk * dv]);
    let gbytes = |cx: &Cx, g: &Option<(SlotId, i64, [i64; 3])>| g.map(|(s, _, _)| (s, cx.len(s) * cx.dtype(s).size()));
    let es = dtype.size();
    let mut call = FamilyCall::new(ATTENTION, format!("kiln_linear_attention_{sfx}"), FamGrid::Rows(b * hk));
    call.ptrs = vec![
        Some((q, b * t * qh * es)),
        Some((k, b * t * kh * es)),
        Some((v, b * t * vh * es)),
        past.map(|p| (p, cx.len(p) * cx.dtype(p).size())),
        gbytes(cx, &decay),
        gbytes(cx, &beta),
        Some((y, b * t * hq * dv * es)),
        Some((present, cx.len(present) * cx.dtype(present).size())),
        Some((state, b * hk * dk * dv * 4)),
    ];
    let past_code = past.map(|p| float_code(cx.dtype(p))).transpose()?.unwrap_or(0);
    let (dc, dg) = decay.map_or((0, [0; 3]), |(_, c, g)| (c, g));
    let (bc, bg) = beta.map_or((0, [0; 3]), |(_, c, g)| (c, g));
    call.ints = vec![
        b as i64,
        t as i64,
        hq as i64,
        hk as i64,
        dk as i64,
        dv as i64,
        past_code,
        dc,
        dg[0],
        dg[1],
        dg[2],
        bc,
        bg[0],
        bg[1],
        float_code(cx.dtype(present))?,
    ];
    call.floats = vec![l.scale.unwrap_or(1.0 / (dk as f32).sqrt())];
    if !is_float(cx.dtype(present)) {
        return Err(format!("present_state of dtype {}", cx.dtype(present)));
    }
    Ok(vec![Kernel::Family(Box::new(call))])
}
