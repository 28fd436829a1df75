//! Multi-head attention as PyTorch exports it, recognised as one ONNX `Attention` op
//! with 3-D (`[batch, seq, hidden]`) Q, K and V:
//!
//! ```text
//! Q, K, V [B,S,H] → Reshape [B,S,h,d] → Transpose (Q, V: 0,2,1,3; K: 0,2,3,1)
//! → scale (Mul on Q and/or K, or Mul/Div on the scores) → MatMul(Q, Kᵀ) → Add(mask)?
//! → Softmax(-1) → Where(IsNaN(p), 0, p)? → MatMul(P, V) → Transpose(0,2,1,3) → Reshape [B,S,H]
//! ```
//!
//! Kᵀ may also come as Transpose(0,2,1,3) then Transpose(0,1,3,2), or (dynamo exporter)
//! through `Reshape [B·h,S,d] → Transpose(0,2,1) → Reshape [B,h,d,S]`: every chain is
//! reduced to one permutation of the 4-D head view.
//!
//! The `Where(IsNaN(p), 0, p)` guard is PyTorch's `_safe_softmax`: it turns the NaN rows
//! of a fully masked query (every score -inf: 0/0) into zeros. The fused op computes
//! exactly that: the CPU Attention kernel (like the ONNX Attention errata for opset 23)
//! outputs zeros for a fully masked row, and softmax NaNs otherwise only come from
//! non-finite Q·Kᵀ scores, which the guard would also zero but the fused op keeps as
//! NaN. For finite Q and K both give the same result, so the guard is dropped.

use kiln_ir::ops::attention::{Attention, QkOutputMode};
use kiln_ir::ops::elementwise::BinaryOp;
use kiln_ir::ops::reduce::SoftmaxKind;
use kiln_ir::ops::{AttentionOp, ElementwiseOp, MovementOp, NnOp, ReduceOp};
use kiln_ir::{Dim, NodeId, Op, OutletId};

use super::norm::{binary, float_scalar, fused_name};
use crate::context::Context;
use crate::patch::Patch;
use crate::rewrite::Rewrite;

fn dims<'a>(cx: &Context<'a>, o: OutletId) -> Option<&'a [Dim]> {
    cx.fact(o).shape.as_ref().map(|s| s.0.as_slice())
}

fn is_reshape(cx: &Context, o: OutletId) -> bool {
    o.slot == 0 && matches!(cx.producer(o).op, Op::Movement(MovementOp::Reshape { .. }))
}

/// The permutation of a Transpose producing `o`, for a value of rank `rank`.
fn transpose_perm(cx: &Context, o: OutletId, rank: usize) -> Option<Vec<usize>> {
    let Op::Movement(MovementOp::Transpose { perm }) = &cx.producer(o).op else { return None };
    let p: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&a| usize::try_from(a).ok()).collect::<Option<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    for &a in &p {
        if a >= rank || std::mem::replace(&mut seen[a], true) {
            return None;
        }
    }
    (p.len() == rank).then_some(p)
}

/// Two dims that are provably the same (known or the same symbol).
fn same(a: &Dim, b: &Dim) -> bool {
    a == b && !matches!(a, Dim::Unknown)
}

fn dim_product(a: &Dim, b: &Dim) -> Option<Dim> {
    Some(Dim::Known(a.known()? * b.known()?))
}

/// `o` as a permutation of a 4-D value: (base, perm, nodes), `o = Transpose(base, perm)`
/// through Transposes and the Reshape·Transpose(0,2,1)·Reshape that swaps the last two
/// axes via 3-D. Every traversed value must be single-use.
fn perm_chain(cx: &Context, o: OutletId) -> Option<(OutletId, [usize; 4], Vec<NodeId>)> {
    let mut acc = [0, 1, 2, 3];
    let mut cur = o;
    let mut nodes = Vec::new();
    loop {
        if !cx.single_use(cur) {
            break;
        }
        if let Some(q) = transpose_perm(cx, cur, 4) {
            nodes.push(cur.node);
            acc = [q[acc[0]], q[acc[1]], q[acc[2]], q[acc[3]]];
            cur = cx.input(cur.node, 0)?;
            continue;
        }
        // Reshape [a,b,x,y] → [a·b,x,y] → Transpose(0,2,1) → Reshape [a,b,y,x].
        if is_reshape(cx, cur)
            && let Some(t3) = cx.input(cur.node, 0)
            && transpose_perm(cx, t3, 3).as_deref() == Some(&[0, 2, 1])
            && cx.single_use(t3)
            && let Some(r1) = cx.input(t3.node, 0)
            && is_reshape(cx, r1)
            && cx.single_use(r1)
            && let Some(z) = cx.input(r1.node, 0)
            && let (Some(zd), Some(r1d), Some(od)) = (dims(cx, z), dims(cx, r1), dims(cx, cur))
            && zd.len() == 4
            && r1d.len() == 3
            && od.len() == 4
            && dim_product(&zd[0], &zd[1]).is_some_and(|ab| r1d[0] == ab)
            && same(&r1d[1], &zd[2])
            && same(&r1d[2], &zd[3])
            && same(&od[0], &zd[0])
            && same(&od[1], &zd[1])
            && same(&od[2], &zd[3])
            && same(&od[3], &zd[2])
        {
            nodes.extend([cur.node, t3.node, r1.node]);
            let q = [0, 1, 3, 2];
            acc = [q[acc[0]], q[acc[1]], q[acc[2]], q[acc[3]]];
            cur = z;
            continue;
        }
        break;
    }
    Some((cur, acc, nodes))
}

/// A Reshape `[B,S,H] → [B,S,h,d]`: (the 3-D input, h, d).
fn split_heads(cx: &Context, o: OutletId) -> Option<(OutletId, usize, usize)> {
    if !is_reshape(cx, o) || !cx.single_use(o) {
        return None;
    }
    let x = cx.input(o.node, 0)?;
    let (xd, od) = (dims(cx, x)?, dims(cx, o)?);
    let ([b, s, hid], [ob, os, h, d]) = (xd, od) else { return None };
    let (h, d) = (h.known()?, d.known()?);
    (same(b, ob) && same(s, os) && hid.known()? == h * d && h > 0).then_some((x, h, d))
}

/// Peels single-use multiplications/divisions by a scalar constant off `o`:
/// (inner value, product of the factors, nodes).
fn peel_scale(cx: &Context, mut o: OutletId) -> (OutletId, f64, Vec<NodeId>) {
    let mut scale = 1.0;
    let mut nodes = Vec::new();
    while cx.single_use(o) {
        let Some((b, l, r)) = binary(cx, o) else { break };
        let (inner, c) = match (b, float_scalar(cx, l), float_scalar(cx, r)) {
            (BinaryOp::Mul, None, Some(c)) => (l, c),
            (BinaryOp::Mul, Some(c), None) => (r, c),
            (BinaryOp::Div, None, Some(c)) if c != 0.0 => (l, 1.0 / c),
            _ => break,
        };
        scale *= c;
        nodes.push(o.node);
        o = inner;
    }
    (o, scale, nodes)
}

fn is_matmul(cx: &Context, o: OutletId) -> bool {
    o.slot == 0 && matches!(cx.producer(o).op, Op::Nn(NnOp::MatMul))
}

/// Whether a mask of this shape is accepted by Attention for scores `[B,h,Sq,Sk]` and
/// broadcasts the same way as the Add it replaces: rank ≤ 4, the key axis in full, the
/// other axes 1 or equal.
fn mask_fits(mask: &[Dim], scores: &[Dim]) -> bool {
    let (Some(last), Some(sk)) = (mask.last(), scores.last()) else { return false };
    if mask.len() > 4 || scores.len() != 4 || !same(last, sk) {
        return false;
    }
    let pad = 4 - mask.len();
    mask.iter().enumerate().all(|(i, m)| *m == Dim::Known(1) || same(m, &scores[i + pad]))
}

/// `Where(c, 0, -inf)` with `c` bool of the same shape: Attention takes `c` itself as a
/// boolean mask (true = attend, false = -inf).
fn bool_mask(cx: &Context, m: OutletId) -> Option<OutletId> {
    if !matches!(cx.producer(m).op, Op::Elementwise(ElementwiseOp::Where)) {
        return None;
    }
    let (c, zero, ninf) = (cx.input(m.node, 0)?, cx.input(m.node, 1)?, cx.input(m.node, 2)?);
    let ok = cx.fact(c).dtype == Some(kiln_ir::DType::Bool)
        && float_scalar(cx, zero)? == 0.0
        && float_scalar(cx, ninf)? == f64::NEG_INFINITY
        && cx.fact(c).shape.is_some()
        && cx.fact(c).shape == cx.fact(m).shape;
    ok.then_some(c)
}

/// The attention pattern, anchored at the final Reshape back to `[B,S,H]`.
pub struct AttentionPattern;

impl Rewrite for AttentionPattern {
    fn name(&self) -> &'static str {
        "attention-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        if !is_reshape(cx, out) {
            return None;
        }
        let mut nodes = vec![id];
        // Transpose(0,2,1,3) of MatMul(P, V).
        let t = cx.input(id, 0)?;
        if transpose_perm(cx, t, 4).as_deref() != Some(&[0, 2, 1, 3]) || !cx.single_use(t) {
            return None;
        }
        let pv = cx.input(t.node, 0)?;
        if !is_matmul(cx, pv) || !cx.single_use(pv) {
            return None;
        }
        nodes.extend([t.node, pv.node]);
        let (mut p, vt) = (cx.input(pv.node, 0)?, cx.input(pv.node, 1)?);
        if !cx.single_use(p) {
            return None;
        }
        // The optional NaN guard Where(IsNaN(sm), 0, sm) (see the module comment).
        if let Op::Elementwise(ElementwiseOp::Where) = cx.producer(p).op {
            let (c, z, sm) = (cx.input(p.node, 0)?, cx.input(p.node, 1)?, cx.input(p.node, 2)?);
            if !matches!(cx.producer(c).op, Op::Elementwise(ElementwiseOp::IsNaN))
                || cx.input(c.node, 0)? != sm
                || float_scalar(cx, z)? != 0.0
                || !cx.single_use(c)
                || cx.is_output(sm)
                || cx.consumers(sm).len() != 2
                || !cx.consumers(sm).iter().all(|&(n, _)| n == c.node || n == p.node)
            {
                return None;
            }
            nodes.extend([p.node, c.node]);
            p = sm;
        } else if !cx.single_use(p) {
            return None;
        }
        // Softmax over the last axis.
        let Op::Reduce(ReduceOp::Softmax(sm)) = &cx.producer(p).op else { return None };
        let scores = cx.input(p.node, 0)?;
        let sd = dims(cx, scores)?.to_vec();
        let axis = if sm.axis < 0 { sm.axis + sd.len() as i64 } else { sm.axis };
        if sm.kind != SoftmaxKind::Softmax || sd.len() != 4 || axis != 3 || !cx.single_use(scores) {
            return None;
        }
        nodes.push(p.node);
        // Scale and mask on the scores: Add(scaled MatMul, mask), in either order.
        let (s0, mut scale, sn) = peel_scale(cx, scores);
        nodes.extend(sn);
        let (qk, mask) = if is_matmul(cx, s0) {
            (s0, None)
        } else {
            let (BinaryOp::Add, l, r) = binary(cx, s0)? else { return None };
            let (mm, mask) = if is_matmul(cx, peel_scale(cx, l).0) { (l, r) } else { (r, l) };
            if !cx.single_use(s0) {
                return None;
            }
            nodes.push(s0.node);
            let (mm, s, n) = peel_scale(cx, mm);
            scale *= s;
            nodes.extend(n);
            let (ad, md) = (dims(cx, s0)?, dims(cx, mm)?);
            if !mask_fits(dims(cx, mask)?, &sd) || ad.len() != md.len() || !ad.iter().zip(md).all(|(a, m)| same(a, m)) {
                return None;
            }
            (mm, Some(bool_mask(cx, mask).unwrap_or(mask)))
        };
        if !is_matmul(cx, qk) || !cx.single_use(qk) {
            return None;
        }
        nodes.push(qk.node);
        let (qs, ks) = (cx.input(qk.node, 0)?, cx.input(qk.node, 1)?);
        let (q, sq, nq) = peel_scale(cx, qs);
        let (k, sk, nk) = peel_scale(cx, ks);
        scale *= sq * sk;
        nodes.extend(nq.into_iter().chain(nk));
        // Q, K, V as permutations of their [B,S,h,d] head views.
        let (q4, pq, n1) = perm_chain(cx, q)?;
        let (k4, pk, n2) = perm_chain(cx, k)?;
        let (v4, pv_, n3) = perm_chain(cx, vt)?;
        if pq != [0, 2, 1, 3] || pk != [0, 2, 3, 1] || pv_ != [0, 2, 1, 3] {
            return None;
        }
        nodes.extend(n1.into_iter().chain(n2).chain(n3));
        let (q3, hq, dq) = split_heads(cx, q4)?;
        let (k3, hk, dk) = split_heads(cx, k4)?;
        let (v3, hv, dv) = split_heads(cx, v4)?;
        if hq != hk || hk != hv || dq != dk {
            return None;
        }
        nodes.extend([q4.node, k4.node, v4.node]);
        // The output [B, Sq, h·dv] in Q's batch and sequence dims.
        // Q, K and V share the batch, K and V the sequence (no broadcast by the MatMuls).
        let (od, qd, kd, vd) = (dims(cx, out)?, dims(cx, q3)?, dims(cx, k3)?, dims(cx, v3)?);
        if od.len() != 3
            || !same(&od[0], &qd[0])
            || !same(&od[1], &qd[1])
            || od[2] != Dim::Known(hq * dv)
            || !same(&qd[0], &kd[0])
            || !same(&kd[0], &vd[0])
            || !same(&kd[1], &vd[1])
        {
            return None;
        }
        let dtype = cx.fact(q3).dtype;
        if !matches!(dtype, Some(d) if d.is_float())
            || cx.fact(k3).dtype != dtype
            || cx.fact(v3).dtype != dtype
            || mask.is_some_and(|m| cx.fact(m).dtype != dtype && cx.fact(m).dtype != Some(kiln_ir::DType::Bool))
            || !scale.is_finite()
            || scale == 0.0
        {
            return None;
        }
        let op = Op::Attention(AttentionOp::Attention(Attention {
            is_causal: false,
            q_num_heads: Some(hq),
            kv_num_heads: Some(hk),
            qk_output: QkOutputMode::MatMul,
            scale: Some(scale as f32),
            softcap: 0.0,
            softmax_precision: None,
        }));
        let mut patch = Patch::new();
        let inputs = vec![Some(q3.into()), Some(k3.into()), Some(v3.into()), mask.map(Into::into)];
        let y = patch.add_multi(fused_name(cx, &nodes), op, inputs, 1);
        patch.shunt(out, *y.first()?);
        Some(patch)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&AttentionPattern]
}
