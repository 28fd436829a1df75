//! Horizontal fusion: sibling MatMul, Gemm or Conv nodes that read the same input with
//! constant weights (the Q, K, V projections) become one node over the weights
//! concatenated along the output axis, followed by a Split whose outputs replace the
//! siblings'. When every MatMul sibling is followed by a single-use Add of a constant
//! bias `[N_i]`, the biases are concatenated too (one MatMul, one Add, one Split).
//!
//! Siblings are taken in node-id order and the rewrite fires only at the first of them,
//! so the result is deterministic.

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::{ElementwiseOp, MovementOp, NnOp};
use kiln_ir::tensor::Bytes;
use kiln_ir::{NodeId, Op, OutletId, Tensor};

use super::norm::{binary, fused_name};
use crate::context::Context;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// Concatenates constants of one dtype along `axis` (shapes equal elsewhere).
fn concat(tensors: &[&Tensor], axis: usize) -> Option<Tensor> {
    let first = tensors.first()?;
    let (dtype, rank) = (first.dtype(), first.rank());
    if axis >= rank {
        return None;
    }
    for t in tensors {
        if t.dtype() != dtype
            || t.rank() != rank
            || (0..rank).any(|d| d != axis && t.shape().get(d) != first.shape().get(d))
        {
            return None;
        }
    }
    let outer: usize = first.shape().get(..axis)?.iter().product();
    let chunk = |t: &Tensor| t.shape().get(axis..).map(|s| s.iter().product::<usize>() * dtype.size());
    let mut data = Vec::with_capacity(tensors.iter().map(|t| t.bytes().len()).sum());
    for o in 0..outer {
        for t in tensors {
            let c = chunk(t)?;
            data.extend_from_slice(t.bytes().get(o * c..(o + 1) * c)?);
        }
    }
    let mut shape = first.shape().to_vec();
    *shape.get_mut(axis)? = tensors.iter().map(|t| t.shape().get(axis).copied()).sum::<Option<usize>>()?;
    Tensor::from_bytes(dtype, shape, Bytes::from(data)).ok()
}

/// How a sibling is recognised and which of its properties must agree.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    MatMul,
    Gemm,
    Conv,
}

fn kind(op: &Op) -> Option<Kind> {
    match op {
        Op::Nn(NnOp::MatMul) => Some(Kind::MatMul),
        Op::Nn(NnOp::Gemm(g)) if !g.trans_a => Some(Kind::Gemm),
        Op::Nn(NnOp::Conv(c)) if c.group == 1 => Some(Kind::Conv),
        _ => None,
    }
}

/// The sibling's constant weight, its output size, and its constant bias (Gemm's C or
/// Conv's B) when it has one.
struct Sibling<'a> {
    id: NodeId,
    weight: &'a Tensor,
    n: usize,
    bias: Option<&'a Tensor>,
}

fn sibling<'a>(cx: &Context<'a>, id: NodeId, x: OutletId, k: Kind) -> Option<Sibling<'a>> {
    let node = cx.node(id);
    if cx.input(id, 0)? != x || node.outputs.len() != 1 {
        return None;
    }
    let w = cx.value(cx.input(id, 1)?)?;
    let bias = match cx.input(id, 2) {
        Some(b) => Some(cx.value(b)?),
        None => None,
    };
    let n = match (k, &node.op) {
        (Kind::MatMul, _) if w.rank() == 2 && bias.is_none() => *w.shape().get(1)?,
        (Kind::Gemm, Op::Nn(NnOp::Gemm(g))) if w.rank() == 2 => *w.shape().get(if g.trans_b { 0 } else { 1 })?,
        (Kind::Conv, _) if w.rank() >= 3 => *w.shape().first()?,
        _ => return None,
    };
    if let Some(b) = bias
        && (b.len() != n || b.shape().iter().filter(|&&d| d != 1).count() > 1 || b.dtype() != w.dtype())
    {
        return None;
    }
    Some(Sibling { id, weight: w, n, bias })
}

/// Whether two sibling ops can share one node: same op and attributes, weights equal
/// in every dim but the output one.
fn compatible(a: &Op, sa: &Sibling, b: &Op, sb: &Sibling, k: Kind) -> bool {
    if a.name() != b.name() || sa.weight.dtype() != sb.weight.dtype() || sa.bias.is_some() != sb.bias.is_some() {
        return false;
    }
    let same_attrs = match (a, b) {
        (Op::Nn(NnOp::Gemm(x)), Op::Nn(NnOp::Gemm(y))) => x == y,
        (Op::Nn(NnOp::Conv(x)), Op::Nn(NnOp::Conv(y))) => x == y,
        (Op::Nn(NnOp::MatMul), Op::Nn(NnOp::MatMul)) => true,
        _ => false,
    };
    let out_axis = match (k, a) {
        (Kind::MatMul, _) => 1,
        (Kind::Gemm, Op::Nn(NnOp::Gemm(g))) => usize::from(!g.trans_b),
        _ => 0,
    };
    let (wa, wb) = (sa.weight.shape(), sb.weight.shape());
    same_attrs && wa.len() == wb.len() && (0..wa.len()).all(|d| d == out_axis || wa.get(d) == wb.get(d))
}

/// The constant bias `[N]` (or `[1, …, N]`) of a single-use `Add(y, b)`, in either
/// order: (the Add's output, the bias).
fn bias_add<'a>(cx: &Context<'a>, y: OutletId, n: usize) -> Option<(OutletId, &'a Tensor)> {
    let add = OutletId::new(cx.sole_consumer(y)?, 0);
    let (BinaryOp::Add, l, r) = binary(cx, add)? else { return None };
    let b = if l == y { r } else { l };
    let t = cx.value(b)?;
    if t.len() != n || t.shape().last() != Some(&n) || t.dtype() != cx.fact(y).dtype? {
        return None;
    }
    // The Add keeps y's shape: the bias adds no leading dims.
    let yr = cx.fact(y).rank()?;
    (t.rank() <= yr && cx.fact(add).shape == cx.fact(y).shape).then_some((add, t))
}

/// The unary activation that is the only reader of `o`: (op, its output).
fn activation(cx: &Context, o: OutletId) -> Option<(UnaryOp, OutletId)> {
    let n = cx.sole_consumer(o)?;
    match cx.node(n).op {
        Op::Elementwise(ElementwiseOp::Unary(u)) => Some((u, OutletId::new(n, 0))),
        _ => None,
    }
}

/// Sibling MatMul/Gemm/Conv nodes over the same input → one node and a Split.
pub struct HorizontalFusion;

impl Rewrite for HorizontalFusion {
    fn name(&self) -> &'static str {
        "horizontal-fusion"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let anchor = cx.node(id);
        let k = kind(&anchor.op)?;
        let x = cx.input(id, 0)?;
        let first = sibling(cx, id, x, k)?;
        let mut ids: Vec<NodeId> = cx.consumers(x).iter().filter(|&&(_, i)| i == 0).map(|&(n, _)| n).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut sibs = Vec::new();
        for n in ids {
            if !cx.is_live(n) {
                continue;
            }
            let Some(s) = sibling(cx, n, x, k) else { continue };
            if compatible(&anchor.op, &first, &cx.node(n).op, &s, k) {
                sibs.push(s);
            }
        }
        // Fire only at the first sibling, with at least two.
        if sibs.len() < 2 || sibs.first()?.id != id {
            return None;
        }
        let outs: Vec<OutletId> = sibs.iter().map(|s| OutletId::new(s.id, 0)).collect();
        let rank = cx.fact(outs[0]).rank()?;
        let weights: Vec<&Tensor> = sibs.iter().map(|s| s.weight).collect();
        let w_axis = match (&anchor.op, k) {
            (_, Kind::MatMul) => 1,
            (Op::Nn(NnOp::Gemm(g)), Kind::Gemm) => usize::from(!g.trans_b),
            _ => 0,
        };
        let w = concat(&weights, w_axis)?;
        let name = fused_name(cx, &sibs.iter().map(|s| s.id).collect::<Vec<_>>());
        let mut p = Patch::new();
        let wc = p.constant(format!("{name}/weight"), w);
        let mut inputs = vec![Some(Wire::from(x)), Some(wc)];
        if sibs.iter().all(|s| s.bias.is_some()) {
            let flat: Vec<Tensor> =
                sibs.iter().filter_map(|s| s.bias.and_then(|b| b.reshaped(vec![s.n]).ok())).collect();
            let b = concat(&flat.iter().collect::<Vec<_>>(), 0)?;
            inputs.push(Some(p.constant(format!("{name}/bias"), b)));
        }
        let fused = *p.add_multi(name.clone(), anchor.op.clone(), inputs, 1).first()?;
        // MatMul siblings each followed by a bias Add: one Add over the concatenated biases.
        let adds: Option<Vec<(OutletId, &Tensor)>> = match k {
            Kind::MatMul => sibs.iter().zip(&outs).map(|(s, &o)| bias_add(cx, o, s.n)).collect(),
            _ => None,
        };
        let (split_in, replaced, split_name) = match adds {
            Some(adds) => {
                let flat: Vec<Tensor> =
                    adds.iter().zip(&sibs).filter_map(|((_, b), s)| b.reshaped(vec![s.n]).ok()).collect();
                let b = concat(&flat.iter().collect::<Vec<_>>(), 0)?;
                let add_name = fused_name(cx, &adds.iter().map(|(a, _)| a.node).collect::<Vec<_>>());
                let bc = p.constant(format!("{add_name}/bias"), b);
                let y = p.add(add_name.clone(), Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add)), &[fused, bc]);
                (y, adds.iter().map(|(a, _)| *a).collect::<Vec<_>>(), add_name)
            }
            None => (fused, outs.clone(), name),
        };
        // The activation each result feeds (when it is its only reader) must be the same
        // for all siblings: then it runs once before the Split. Otherwise the fusion would
        // cut the siblings off their epilogues (e.g. ResNet's conv1 + Relu beside the
        // downsample conv), so it is not done.
        let acts: Vec<Option<(UnaryOp, OutletId)>> = replaced.iter().map(|&o| activation(cx, o)).collect();
        let first_act = acts.first()?.map(|(u, _)| u);
        if acts.iter().any(|a| a.map(|(u, _)| u) != first_act) {
            return None;
        }
        let (split_in, replaced, split_name) = match first_act {
            Some(u) => {
                let outs: Vec<OutletId> = acts.iter().filter_map(|a| a.map(|(_, o)| o)).collect();
                let act_name = fused_name(cx, &outs.iter().map(|o| o.node).collect::<Vec<_>>());
                let y = p.add(act_name.clone(), Op::Elementwise(ElementwiseOp::Unary(u)), &[split_in]);
                (y, outs, act_name)
            }
            None => (split_in, replaced, split_name),
        };
        let axis = if k == Kind::Conv { 1 } else { rank as i64 - 1 };
        let split = Op::Movement(MovementOp::Split {
            axis,
            split: Some(sibs.iter().map(|s| s.n as i64).collect()),
            num_outputs: None,
        });
        let parts = p.add_multi(format!("{split_name}/split"), split, vec![Some(split_in)], sibs.len());
        for (old, new) in replaced.into_iter().zip(parts) {
            p.shunt(old, new);
        }
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&HorizontalFusion]
}
