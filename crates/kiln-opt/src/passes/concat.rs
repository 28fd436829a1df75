//! Concat elision: when every input of a Concat is computed by a node whose output
//! nothing else reads, and each input is one contiguous slice of the output (every dim
//! before the axis is 1), the producers can write straight into the Concat's buffer:
//! the Concat becomes `ConcatInPlace`, which moves no data on a backend that plans
//! memory.

use kiln_ir::ops::{ElementwiseOp, FusedOp, MovementOp, normalize_axis};
use kiln_ir::{NodeId, Op, OutletId};

use crate::context::Context;
use crate::passes::views::view_windows;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// Whether the producer of `o` computes its output into a buffer of its own (so it
/// could compute it into a slice of another): not an input, constant, view or subgraph.
fn computes_into_buffer(cx: &Context, o: OutletId) -> bool {
    let node = cx.producer(o);
    let view = match &node.op {
        Op::Input | Op::Constant(_) | Op::Control(_) => true,
        Op::Movement(
            MovementOp::Reshape { .. }
            | MovementOp::Flatten { .. }
            | MovementOp::Squeeze { .. }
            | MovementOp::Unsqueeze { .. },
        ) => true,
        Op::Elementwise(ElementwiseOp::Identity | ElementwiseOp::Dropout { .. }) => true,
        Op::Fused(FusedOp::SliceView { .. }) => true,
        _ => view_windows(cx, o.node).is_some(),
    };
    !view && cx.fact(o).value.is_none()
}

/// Concat → ConcatInPlace.
pub struct ElideConcat;

impl Rewrite for ElideConcat {
    fn name(&self) -> &'static str {
        "concat-in-place"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        let Op::Movement(MovementOp::Concat { axis }) = &node.op else { return None };
        let out = cx.fact(OutletId::new(id, 0)).shape.as_ref()?.as_known()?;
        let axis = normalize_axis(*axis, out.len(), "Concat").ok()?;
        if node.inputs.len() < 2 || out.get(..axis)?.iter().any(|&d| d != 1) {
            return None;
        }
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            let o = (*i)?;
            cx.fact(o).shape.as_ref()?.as_known()?;
            if !cx.single_use(o) || !computes_into_buffer(cx, o) {
                return None;
            }
            inputs.push(Some(Wire::Graph(o)));
        }
        let mut p = Patch::new();
        let w = p.add_multi(node.name.clone(), Op::Fused(FusedOp::ConcatInPlace { axis }), inputs, 1);
        p.shunt(OutletId::new(id, 0), *w.first()?);
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&ElideConcat]
}
