//! The layer table of a plan (`kiln inspect`): one row per node that runs, with the
//! tactics it became, its precision, its operands' shapes, formats and places.

use kiln_cuda::executor::buffer_name;
use kiln_cuda::memory::BufferKind;
use kiln_cuda::plan::{ExecutionPlan, Slot};
use kiln_ir::ops::FusedOp;
use kiln_ir::{Graph, Op, OutletId};

use crate::meta::{Layer, LayerTensor};

/// Rows for a CUDA plan: `tactics[i]` names the launches of step `i` in order.
pub fn cuda_layers(plan: &ExecutionPlan, tactic_names: &[(String, String)]) -> Vec<Layer> {
    plan.steps
        .iter()
        .map(|step| {
            let tactics = if step.alias {
                vec!["alias (no launch)".to_string()]
            } else {
                tactic_names.iter().filter(|(node, _)| node == &step.node).map(|(_, t)| t.clone()).collect()
            };
            let nhwc = matches!(step.op, Op::Fused(FusedOp::ChannelsLast { .. }));
            let operand = |s: &Slot| LayerTensor {
                name: s.name.clone(),
                dtype: s.dtype.to_string(),
                shape: s.shape.clone(),
                format: format_of(s.shape.len(), nhwc),
                location: format!("{}@{}", buffer_name(s.view.buffer), s.view.offset),
            };
            let inputs: Vec<LayerTensor> = step.inputs.iter().flatten().map(|&i| operand(plan.slot(i))).collect();
            let weight_bytes = step
                .inputs
                .iter()
                .flatten()
                .map(|&i| plan.slot(i))
                .filter(|s| s.view.buffer == BufferKind::Weights)
                .map(|s| s.bytes)
                .sum();
            let outputs: Vec<LayerTensor> = step.outputs.iter().map(|&o| operand(plan.slot(o))).collect();
            Layer {
                name: step.node.clone(),
                op: step.op.name().to_string(),
                tactics,
                precision: outputs.first().map(|o| o.dtype.clone()).unwrap_or_default(),
                inputs,
                outputs,
                weight_bytes,
            }
        })
        .collect()
}

/// Rows for a CPU plan: the nodes of `graph` (bound to the profile's optimal shapes) in
/// evaluation order, each run by the reference kernels.
pub fn cpu_layers(graph: &Graph) -> Vec<Layer> {
    let order = graph.eval_order().unwrap_or_default();
    order
        .into_iter()
        .filter_map(|id| {
            let node = &graph.nodes[id];
            if matches!(node.op, Op::Input | Op::Constant(_)) {
                return None;
            }
            let nhwc = matches!(node.op, Op::Fused(FusedOp::ChannelsLast { .. }));
            let operand = |o: OutletId| {
                let outlet = graph.outlet(o).ok()?;
                let shape = outlet.fact.shape.as_ref().and_then(|s| s.as_known()).unwrap_or_default();
                Some(LayerTensor {
                    name: outlet.name.clone(),
                    dtype: outlet.fact.dtype.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                    format: format_of(shape.len(), nhwc),
                    shape,
                    location: "host".into(),
                })
            };
            let inputs: Vec<LayerTensor> = node.inputs.iter().flatten().filter_map(|&o| operand(o)).collect();
            let weight_bytes = node
                .inputs
                .iter()
                .flatten()
                .filter_map(|o| match &graph.nodes.get(o.node)?.op {
                    Op::Constant(t) => Some(t.bytes().len()),
                    _ => None,
                })
                .sum();
            let outputs: Vec<LayerTensor> =
                (0..node.outputs.len()).filter_map(|s| operand(OutletId::new(id, s))).collect();
            Some(Layer {
                name: node.name.clone(),
                op: node.op.name().to_string(),
                tactics: vec!["kiln-cpu reference".into()],
                precision: outputs.first().map(|o| o.dtype.clone()).unwrap_or_default(),
                inputs,
                outputs,
                weight_bytes,
            })
        })
        .collect()
}

fn format_of(rank: usize, nhwc: bool) -> String {
    match (rank, nhwc) {
        (4, true) => "NHWC".into(),
        (4, false) => "NCHW".into(),
        (5, true) => "NDHWC".into(),
        (5, false) => "NCDHW".into(),
        _ => "linear".into(),
    }
}
