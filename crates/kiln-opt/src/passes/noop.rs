//! Ops that compute nothing at inference: removed, their readers wired to their input.

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::{NodeId, Op, OutletId};

use crate::context::Context;
use crate::patch::Patch;
use crate::rewrite::Rewrite;

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
        let x = cx.input(id, 0)?;
        if !cx.can_forward(OutletId::new(id, 0), x) {
            return None;
        }
        let mut p = Patch::new();
        p.shunt(OutletId::new(id, 0), x);
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&RemoveIdentity]
}
