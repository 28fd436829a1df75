//! Ops that compute nothing at inference: removed, their readers wired to their input.
//! Also pairs that cancel or merge: Transpose∘Transpose, chains of reshapes.

use kiln_ir::ops::elementwise::{BinaryOp, VariadicOp};
use kiln_ir::ops::movement::permutation;
use kiln_ir::ops::{ElementwiseOp, MovementOp};
use kiln_ir::{Dim, Fact, NodeId, Op, OutletId, Tensor};

use crate::context::Context;
use crate::patch::Patch;
use crate::rewrite::Rewrite;

/// Readers of output `slot` of `id` read `to` instead.
fn forward(cx: &Context, id: NodeId, slot: usize, to: OutletId) -> Option<Patch> {
    let old = OutletId::new(id, slot);
    if old == to || !cx.can_forward(old, to) {
        return None;
    }
    let mut p = Patch::new();
    p.shunt(old, to);
    Some(p)
}

/// Both shapes are fully determined and equal (known sizes, or the same symbol).
pub(crate) fn same_shape(a: &Fact, b: &Fact) -> bool {
    match (&a.shape, &b.shape) {
        (Some(x), Some(y)) => {
            x.rank() == y.rank()
                && x.0.iter().zip(&y.0).all(|(p, q)| p == q && !matches!(p, Dim::Unknown))
                && a.dtype.is_some()
                && a.dtype == b.dtype
        }
        _ => false,
    }
}

/// The integer values of a constant input.
fn const_ints(cx: &Context, o: Option<OutletId>) -> Option<Vec<i64>> {
    cx.value(o?)?.to_i64_vec().ok()
}

/// Identity, and inference Dropout whose mask output nobody reads.
pub struct RemoveIdentity;

impl Rewrite for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        let passthrough = match &node.op {
            Op::Elementwise(ElementwiseOp::Identity) => true,
            Op::Elementwise(ElementwiseOp::Dropout { .. }) => {
                node.outputs.len() < 2 || cx.uses(OutletId::new(id, 1)) == 0
            }
            _ => false,
        };
        if !passthrough {
            return None;
        }
        forward(cx, id, 0, cx.input(id, 0)?)
    }
}

/// Ops whose output is their first input: Cast to the same dtype, reshapes and Expand
/// to the same shape, identity Transpose, Slice keeping everything, Pad by zero,
/// Concat/Sum/Max/Min/Mean of one input, Split into one output.
pub struct RemoveNoop;

impl RemoveNoop {
    fn is_noop(cx: &Context, id: NodeId) -> Option<OutletId> {
        let node = cx.node(id);
        let x = cx.input(id, 0)?;
        let (xf, out) = (cx.fact(x), cx.fact(OutletId::new(id, 0)));
        let yes = match &node.op {
            Op::Elementwise(ElementwiseOp::Cast { to, .. }) => xf.dtype == Some(*to),
            Op::Elementwise(ElementwiseOp::CastLike { .. }) => xf.dtype.is_some() && xf.dtype == out.dtype,
            Op::Elementwise(ElementwiseOp::Variadic(
                VariadicOp::Sum | VariadicOp::Max | VariadicOp::Min | VariadicOp::Mean,
            ))
            | Op::Movement(MovementOp::Concat { .. }) => node.inputs.iter().flatten().count() == 1,
            Op::Movement(
                MovementOp::Reshape { .. }
                | MovementOp::Flatten { .. }
                | MovementOp::Squeeze { .. }
                | MovementOp::Unsqueeze { .. }
                | MovementOp::Expand,
            ) => same_shape(xf, out),
            Op::Movement(MovementOp::Transpose { perm }) => {
                let rank = xf.rank()?;
                permutation(perm.as_deref(), rank).ok()?.iter().enumerate().all(|(i, &p)| i == p)
            }
            Op::Movement(MovementOp::Split { .. }) => node.outputs.len() == 1 && same_shape(xf, out),
            Op::Movement(MovementOp::Slice { attrs }) => {
                let unit_steps = match (attrs, cx.input(id, 4)) {
                    (Some(_), _) | (None, None) => true,
                    (None, Some(s)) => const_ints(cx, Some(s)).is_some_and(|v| v.iter().all(|&k| k == 1)),
                };
                unit_steps && same_shape(xf, out)
            }
            Op::Movement(MovementOp::Pad { pads, .. }) => {
                let pads = match pads {
                    Some(p) => Some(p.clone()),
                    None => const_ints(cx, cx.input(id, 1)),
                };
                pads.is_some_and(|p| p.iter().all(|&v| v == 0)) && same_shape(xf, out)
            }
            _ => false,
        };
        if !yes {
            return None;
        }
        // A variadic op or Concat may have its one input at another position.
        node.inputs.iter().flatten().next().copied()
    }
}

impl Rewrite for RemoveNoop {
    fn name(&self) -> &'static str {
        "remove-noop"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        if cx.node(id).outputs.len() != 1 {
            return None;
        }
        let x = Self::is_noop(cx, id)?;
        forward(cx, id, 0, x)
    }
}

/// x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1, where the constant changes neither the
/// shape nor the dtype of x.
pub struct NeutralElement;

fn all_equal(t: &Tensor, v: f64) -> bool {
    t.len() <= 1 << 16 && t.to_f64_vec().is_ok_and(|x| x.iter().all(|&e| e == v))
}

impl Rewrite for NeutralElement {
    fn name(&self) -> &'static str {
        "neutral-element"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let Op::Elementwise(ElementwiseOp::Binary(b)) = &cx.node(id).op else { return None };
        let (a, c) = (cx.input(id, 0)?, cx.input(id, 1)?);
        let (neutral, commutes) = match b {
            BinaryOp::Add => (0.0, true),
            BinaryOp::Sub => (0.0, false),
            BinaryOp::Mul => (1.0, true),
            BinaryOp::Div => (1.0, false),
            _ => return None,
        };
        let is_neutral = |o: OutletId| cx.value(o).is_some_and(|t| all_equal(t, neutral));
        let x = if is_neutral(c) {
            a
        } else if commutes && is_neutral(a) {
            c
        } else {
            return None;
        };
        let k = if x == a { c } else { a };
        let (xf, kf, out) = (cx.fact(x), cx.fact(k), cx.fact(OutletId::new(id, 0)));
        if xf.dtype.is_none() || xf.dtype != out.dtype || kf.dtype != xf.dtype {
            return None;
        }
        // The constant must not broadcast x to a larger shape.
        let keeps_shape = match (&xf.shape, &kf.shape) {
            (Some(xs), Some(ks)) => ks.rank() <= xs.rank() && ks.0.iter().all(|d| *d == Dim::Known(1)),
            _ => false,
        };
        if !keeps_shape && !same_shape(xf, out) {
            return None;
        }
        forward(cx, id, 0, x)
    }
}

/// Transpose(Transpose(x, p1), p2) = Transpose(x, p1∘p2), or x when that is the
/// identity. Where the first Transpose is also read elsewhere, only the cancelling
/// pair is rewritten (otherwise both would be computed).
pub struct TransposePair;

impl Rewrite for TransposePair {
    fn name(&self) -> &'static str {
        "transpose-pair"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let Op::Movement(MovementOp::Transpose { perm: p2 }) = &cx.node(id).op else { return None };
        let t1 = cx.input(id, 0)?;
        let Op::Movement(MovementOp::Transpose { perm: p1 }) = &cx.producer(t1).op else { return None };
        let x = cx.input(t1.node, 0)?;
        let rank = cx.fact(x).rank()?;
        let (p1, p2) = (permutation(p1.as_deref(), rank).ok()?, permutation(p2.as_deref(), rank).ok()?);
        let composed: Vec<usize> = p2.iter().map(|&i| p1.get(i).copied()).collect::<Option<_>>()?;
        if composed.iter().enumerate().all(|(i, &p)| i == p) {
            return forward(cx, id, 0, x);
        }
        if !cx.single_use(t1) {
            return None;
        }
        let mut p = Patch::new();
        let name = format!("{} + {}", cx.producer(t1).name, cx.node(id).name);
        let perm = Some(composed.iter().map(|&v| v as i64).collect());
        let t = p.add(name, Op::Movement(MovementOp::Transpose { perm }), &[x.into()]);
        p.shunt(OutletId::new(id, 0), t);
        Some(p)
    }
}

fn is_reshape_like(op: &Op) -> bool {
    matches!(
        op,
        Op::Movement(
            MovementOp::Reshape { .. }
                | MovementOp::Flatten { .. }
                | MovementOp::Squeeze { .. }
                | MovementOp::Unsqueeze { .. }
        )
    )
}

/// A Reshape target giving `out` from an input of shape `input`: known sizes as they
/// are, a symbol at the same position as in the input as 0 (copy), at most one other
/// dim as -1. `None` where the shape is not provable that way.
pub(crate) fn reshape_target(input: &[Dim], out: &[Dim]) -> Option<Vec<i64>> {
    let mut inferred = false;
    out.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(0) => None,
            Dim::Known(n) => i64::try_from(*n).ok(),
            Dim::Sym(_) if input.get(i) == Some(d) => Some(0),
            _ if !inferred => {
                inferred = true;
                Some(-1)
            }
            _ => None,
        })
        .collect()
}

/// Reshape/Flatten/Squeeze/Unsqueeze of Reshape/Flatten/Squeeze/Unsqueeze: one Reshape
/// with a constant target (the final shape, provably) reading the first one's input.
pub struct ReshapeChain;

impl Rewrite for ReshapeChain {
    fn name(&self) -> &'static str {
        "reshape-chain"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        if !is_reshape_like(&cx.node(id).op) {
            return None;
        }
        let r1 = cx.input(id, 0)?;
        if !is_reshape_like(&cx.producer(r1).op) {
            return None;
        }
        let x = cx.input(r1.node, 0)?;
        let (xf, out) = (cx.fact(x), cx.fact(OutletId::new(id, 0)));
        if same_shape(xf, out) {
            return forward(cx, id, 0, x);
        }
        let target = reshape_target(&xf.shape.as_ref()?.0, &out.shape.as_ref()?.0)?;
        let mut p = Patch::new();
        let name = format!("{} + {}", cx.producer(r1).name, cx.node(id).name);
        let n = target.len();
        let t = p.constant(format!("{name}/shape"), Tensor::from_vec(vec![n], target).ok()?);
        let r = p.add(name, Op::Movement(MovementOp::Reshape { allowzero: false }), &[x.into(), t]);
        p.shunt(OutletId::new(id, 0), r);
        Some(p)
    }
}

/// Positions of the dims that are not 1; `None` where a dim could be 1 (unknown).
fn non_unit(dims: &[Dim]) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for (i, d) in dims.iter().enumerate() {
        match d {
            Dim::Known(1) => {}
            Dim::Unknown => return None,
            _ => out.push(i),
        }
    }
    Some(out)
}

/// Whether two shapes differ only by dims of size 1.
fn same_but_units(a: &[Dim], b: &[Dim]) -> Option<(Vec<usize>, Vec<usize>)> {
    let (p, q) = (non_unit(a)?, non_unit(b)?);
    (p.len() == q.len() && p.iter().zip(&q).all(|(&i, &j)| a[i] == b[j])).then_some((p, q))
}

/// Reshape(Transpose(Reshape(x))) where both reshapes only add or drop dims of size 1
/// (exporters squeeze a batch of 1 around a transpose): one Transpose of x, when the
/// result has x's rank. The Transpose then merges with its neighbours.
pub struct TransposeThroughReshape;

impl Rewrite for TransposeThroughReshape {
    fn name(&self) -> &'static str {
        "transpose-through-reshape"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        if !is_reshape_like(&cx.node(id).op) {
            return None;
        }
        let t = cx.input(id, 0)?;
        let Op::Movement(MovementOp::Transpose { perm }) = &cx.producer(t).op else { return None };
        let r1 = cx.input(t.node, 0)?;
        if !is_reshape_like(&cx.producer(r1).op) || !cx.single_use(t) || !cx.single_use(r1) {
            return None;
        }
        let x = cx.input(r1.node, 0)?;
        let dims = |o: OutletId| cx.fact(o).shape.as_ref().map(|s| s.0.clone());
        let (xd, r1d, td, yd) = (dims(x)?, dims(r1)?, dims(t)?, dims(OutletId::new(id, 0))?);
        if xd.len() != yd.len() {
            return None;
        }
        let p = permutation(perm.as_deref(), r1d.len()).ok()?;
        let (x_nu, r1_nu) = same_but_units(&xd, &r1d)?;
        let (t_nu, y_nu) = same_but_units(&td, &yd)?;
        // y's k-th non-unit axis is t's, which reads r1's axis p[..], which is x's.
        let mut q: Vec<Option<usize>> = vec![None; yd.len()];
        for (&ya, &ta) in y_nu.iter().zip(&t_nu) {
            let ra = *p.get(ta)?;
            let k = r1_nu.iter().position(|&a| a == ra)?;
            q[ya] = Some(*x_nu.get(k)?);
        }
        let mut units = (0..xd.len()).filter(|a| !x_nu.contains(a));
        let q: Vec<i64> = q.into_iter().map(|a| a.or_else(|| units.next()).map(|v| v as i64)).collect::<Option<_>>()?;
        let mut patch = Patch::new();
        let name = format!("{} + {} + {}", cx.producer(r1).name, cx.producer(t).name, cx.node(id).name);
        let tr = patch.add(name, Op::Movement(MovementOp::Transpose { perm: Some(q) }), &[x.into()]);
        patch.shunt(OutletId::new(id, 0), tr);
        Some(patch)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&RemoveIdentity, &RemoveNoop, &NeutralElement, &TransposePair, &ReshapeChain, &TransposeThroughReshape]
}
