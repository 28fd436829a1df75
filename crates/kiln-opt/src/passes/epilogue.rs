//! Vertical fusion: a Conv, ConvTranspose, Gemm or MatMul (or a layer already fused)
//! followed by elementwise ops (bias add, activation, residual add, activation…) becomes
//! one `FusedLayer` whose epilogue computes them before the output is stored. An op
//! joins when the layer's output has no other reader and the op keeps the layer's
//! output shape: its other operands are scalars, per-channel tensors (`[C, 1, 1]` after
//! a convolution, `[N]` after a matrix product) or tensors of exactly that shape.

use kiln_ir::ops::{Expr, FusedLayer, FusedOp, NnOp};
use kiln_ir::{Dim, NodeId, Op, OutletId, Shape};

use super::elementwise::{Ew, accepted, as_expr, float, merge, only_reader, positions};
use super::weights::broadcasts_into;
use crate::context::Context;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// A layer: its core op, the core's inputs, and its epilogue (over the core's output,
/// `None`, and extra inputs).
struct Layer {
    core: Op,
    core_inputs: Vec<Option<OutletId>>,
    epilogue: Ew,
}

fn layer(cx: &Context, id: NodeId) -> Option<Layer> {
    let node = cx.node(id);
    if node.outputs.len() != 1 {
        return None;
    }
    match &node.op {
        Op::Nn(NnOp::Conv(_) | NnOp::ConvTranspose(_) | NnOp::Gemm(_) | NnOp::MatMul) => Some(Layer {
            core: node.op.clone(),
            core_inputs: node.inputs.clone(),
            epilogue: Ew { expr: Expr::identity(), inputs: vec![None] },
        }),
        Op::Fused(FusedOp::Layer(l)) => {
            let n = l.core_inputs;
            let core_inputs = node.inputs.get(..n)?.to_vec();
            let mut inputs = vec![None];
            for i in node.inputs.get(n..)? {
                inputs.push(Some((*i)?));
            }
            Some(Layer { core: (*l.core).clone(), core_inputs, epilogue: Ew { expr: l.epilogue.clone(), inputs } })
        }
        _ => None,
    }
}

/// An elementwise op (or FusedElementwise) joins the epilogue of the layer it reads.
pub struct FuseEpilogue;

impl Rewrite for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let consumer = as_expr(cx, id)?;
        let node = cx.node(id);
        for o in node.inputs.iter().flatten() {
            if o.slot != 0 || only_reader(cx, *o, id).is_none() {
                continue;
            }
            let Some(l) = layer(cx, o.node) else { continue };
            if let Some(p) = fuse(cx, id, &consumer, *o, l) {
                return Some(p);
            }
        }
        None
    }
}

fn fuse(cx: &Context, id: NodeId, consumer: &Ew, o: OutletId, l: Layer) -> Option<Patch> {
    let out = cx.fact(o);
    let shape = out.shape.as_ref()?;
    if !float(out.dtype) {
        return None;
    }
    let at = positions(consumer, o);
    if at.is_empty() {
        return None;
    }
    let merged = merge(consumer, &at, &l.epilogue)?;
    let (first, extras) = merged.inputs.split_first()?;
    if first.is_some() {
        return None;
    }
    let mut inputs = l.core_inputs.clone();
    for e in extras {
        let e = (*e)?;
        let f = cx.fact(e);
        if f.dtype != out.dtype || !operand_fits(f.shape.as_ref()?, shape, channel_axis(&l.core, shape.rank())?) {
            return None;
        }
        inputs.push(Some(e));
    }
    let fused = FusedLayer { core: Box::new(l.core), core_inputs: l.core_inputs.len(), epilogue: merged.expr };
    let op = Op::Fused(FusedOp::Layer(fused));
    if !accepted(cx, &op, &inputs, OutletId::new(id, 0)) {
        return None;
    }
    let wires: Vec<Option<Wire>> = inputs.iter().map(|i| i.map(Wire::Graph)).collect();
    let name = format!("{} + {}", cx.node(o.node).name, cx.node(id).name);
    let mut p = Patch::new();
    let y = p.add_multi(name, op, wires, 1);
    p.shunt(OutletId::new(id, 0), *y.first()?);
    Some(p)
}

/// The channel axis of a core's output: 1 for convolutions, the last for matrix products.
fn channel_axis(core: &Op, rank: usize) -> Option<usize> {
    match core {
        Op::Nn(NnOp::Conv(_) | NnOp::ConvTranspose(_)) => Some(1),
        _ => rank.checked_sub(1),
    }
}

/// An epilogue operand is a tensor of exactly the core output's shape (a residual) or a
/// constant along every axis but the channel axis (a bias, a scale); scalars are both.
fn operand_fits(operand: &Shape, core: &Shape, axis: usize) -> bool {
    if !broadcasts_into(operand, core) {
        return false;
    }
    if operand.rank() == core.rank() && operand == core {
        return true;
    }
    let offset = core.rank() - operand.rank();
    operand.0.iter().enumerate().all(|(i, d)| i + offset == axis || *d == Dim::Known(1))
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&FuseEpilogue]
}
