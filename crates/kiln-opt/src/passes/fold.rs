//! Constant folding: a node whose inputs are all known values is replaced by the
//! constants it computes (with the evaluator the options provide). Without an evaluator,
//! outputs whose value shape inference already knows are still folded (small integer
//! shape arithmetic, Shape and Size of fully known shapes).
//!
//! Folding keeps memory in check: a result larger than `fold_limit_bytes` is folded only
//! where it replaces constant inputs at least as large that become dead (a transposed or
//! cast weight), never where a small constant would be blown up (Expand, Tile,
//! ConstantOfShape of a large shape).

use std::collections::HashSet;

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::{Fact, NodeId, Op, OutletId, Tensor};

use crate::context::Context;
use crate::patch::{Patch, compatible};
use crate::rewrite::Rewrite;

pub struct ConstantFold;

/// Ops that are never folded: non-deterministic ones, control flow, and forwarding ops
/// (the no-op pass removes those without copying their input).
fn foldable(op: &Op) -> bool {
    let name = op.name();
    let random = name.starts_with("Random") || name == "Bernoulli" || name == "Multinomial";
    !random
        && op.subgraphs().is_empty()
        && !matches!(
            op,
            Op::Input
                | Op::Constant(_)
                | Op::Control(_)
                | Op::Elementwise(ElementwiseOp::Identity | ElementwiseOp::Dropout { .. })
        )
}

fn bytes_of(t: &Tensor) -> usize {
    t.len() * t.dtype().size()
}

/// Bytes of a value of `fact` when its shape is fully known.
fn fact_bytes(fact: &Fact) -> Option<usize> {
    let dims = fact.shape.as_ref()?.as_known()?;
    Some(dims.iter().product::<usize>() * fact.dtype?.size())
}

/// Bytes of the constant inputs of `id` that no one else reads (they die with it).
fn dying_input_bytes(cx: &Context, id: NodeId) -> usize {
    let mut seen = HashSet::new();
    let mut total = 0;
    for o in cx.node(id).inputs.iter().flatten() {
        if !seen.insert(*o) {
            continue;
        }
        let only_here = !cx.is_output(*o) && cx.consumers(*o).iter().all(|&(n, _)| n == id);
        if only_here && let Some(v) = cx.value(*o) {
            total += bytes_of(v);
        }
    }
    total
}

impl Rewrite for ConstantFold {
    fn name(&self) -> &'static str {
        "constant-fold"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        if !foldable(&node.op) || node.outputs.is_empty() {
            return None;
        }
        let limit = cx.options.fold_limit_bytes;
        let allowed = |bytes: usize| bytes <= limit || bytes <= dying_input_bytes(cx, id);
        // Outputs whose values inference already knows.
        let known: Option<Vec<Tensor>> = node.outputs.iter().map(|o| o.fact.value.clone()).collect();
        let values = match known {
            Some(v) => v,
            None => {
                let eval = cx.options.evaluator?;
                let inputs: Vec<Option<Tensor>> = node
                    .inputs
                    .iter()
                    .map(|i| match i {
                        None => Some(None),
                        Some(o) => cx.value(*o).map(|t| Some(t.clone())),
                    })
                    .collect::<Option<_>>()?;
                // Skip the evaluation where the result is known to be too large.
                let expected: Option<usize> = node.outputs.iter().map(|o| fact_bytes(&o.fact)).sum();
                if expected.is_some_and(|b| !allowed(b)) {
                    return None;
                }
                let out = eval.eval(&node.op, &inputs, node.outputs.len()).ok()?;
                if out.len() != node.outputs.len() {
                    return None;
                }
                out
            }
        };
        if !allowed(values.iter().map(bytes_of).sum()) {
            return None;
        }
        let mut p = Patch::new();
        let multi = values.len() > 1;
        for (slot, v) in values.into_iter().enumerate() {
            let old = OutletId::new(id, slot);
            if !compatible(cx.fact(old), &Fact::constant(v.clone())) {
                return None;
            }
            if cx.uses(old) == 0 {
                continue;
            }
            let name = if multi { format!("{}/folded:{slot}", node.name) } else { format!("{}/folded", node.name) };
            let c = p.constant(name, v);
            p.shunt(old, c);
        }
        (!p.is_empty()).then_some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&ConstantFold]
}
