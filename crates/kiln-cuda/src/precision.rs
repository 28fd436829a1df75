//! Reduced precision (TensorRT's `BuilderFlag::kFP16` / `trtexec --fp16`): a copy of a
//! graph computing in FP16 (or BF16) where it computed in FP32.
//!
//! - FP32 constants become FP16, except those only read where ONNX requires FP32
//!   whatever the data type (Resize roi and scales, NonMaxSuppression thresholds).
//! - FP32 graph inputs stay FP32 at the interface and are cast once on the device;
//!   FP32 graph outputs are cast back, so callers see the same I/O as the FP32 build.
//! - Casts to FP32 inside the graph, and FP32 ConstantOfShape/EyeLike, produce FP16.
//! - Every fact is inferred again; kernels still accumulate in FP32.

use std::collections::HashMap;

use half::{bf16, f16};
use kiln_ir::ops::{ElementwiseOp, MovementOp};
use kiln_ir::{DType, Graph, NodeId, Op, OutletId, Tensor};

use crate::{CudaError, Result};

/// `graph` computing in `half` (F16 or BF16) instead of F32.
pub fn reduce_precision(graph: &Graph, half: DType) -> Result<Graph> {
    if !matches!(half, DType::F16 | DType::BF16) {
        return Err(CudaError::Graph(format!("reduced precision is f16 or bf16, not {half}")));
    }
    let host_read = host_read_constants(graph);
    let order = graph.eval_order().map_err(|e| CudaError::Graph(e.to_string()))?;
    let gerr = |e: kiln_ir::IrError| CudaError::Graph(e.to_string());
    let mut out = Graph::new(graph.name.clone());
    out.captures = graph.captures.clone();
    // Where each old outlet's value is in the new graph, and its graph-input original.
    let mut map: HashMap<OutletId, OutletId> = HashMap::new();
    let mut raw_inputs: HashMap<NodeId, NodeId> = HashMap::new();
    for &n in &order {
        let node = &graph.nodes[n];
        let inputs: Vec<Option<OutletId>> = node.inputs.iter().map(|i| i.map(|o| map[&o])).collect();
        let names: Vec<String> = node.outputs.iter().map(|o| o.name.clone()).collect();
        let new_id = if matches!(node.op, Op::Input) {
            let outs = node.outputs.iter().map(|o| (o.name.clone(), o.fact.clone())).collect();
            let id = out.push_node(node.name.clone(), Op::Input, vec![], outs).map_err(gerr)?;
            raw_inputs.insert(n, id);
            if node.outputs[0].fact.dtype == Some(DType::F32) {
                let cast = cast_op(half);
                let name = format!("{}/to_{half}", node.outputs[0].name);
                out.add_node(name.clone(), cast, vec![Some(OutletId::new(id, 0))], vec![name]).map_err(gerr)?
            } else {
                id
            }
        } else if let Op::Constant(t) = &node.op {
            let keep = host_read.contains(&OutletId::new(n, 0)) || t.dtype() != DType::F32;
            let op = if keep { node.op.clone() } else { Op::Constant(to_half(t, half)?) };
            out.add_node(node.name.clone(), op, inputs, names).map_err(gerr)?
        } else {
            let op = retarget(&node.op, half)?;
            out.add_node(node.name.clone(), op, inputs, names)
                .map_err(|e| CudaError::Graph(format!("node '{}' ({}) in {half}: {e}", node.name, node.op.name())))?
        };
        for s in 0..node.outputs.len() {
            map.insert(OutletId::new(n, s), OutletId::new(new_id, s));
        }
    }
    out.inputs = graph.inputs.iter().map(|o| OutletId::new(raw_inputs[&o.node], o.slot)).collect();
    let mut outputs = Vec::with_capacity(graph.outputs.len());
    for &o in &graph.outputs {
        let was = graph.fact(o).map_err(gerr)?.dtype;
        let now = map[&o];
        let is = out.fact(now).map_err(gerr)?.dtype;
        if was == Some(DType::F32) && is == Some(half) {
            // The output keeps its name; the half value gets a suffix.
            let name = graph.outlet_name(o).to_string();
            rename(&mut out, now, format!("{name}/{half}"));
            let cast = Op::Elementwise(ElementwiseOp::Cast { to: DType::F32, saturate: true });
            let id = out.add_node(format!("{name}/to_f32"), cast, vec![Some(now)], vec![name]).map_err(gerr)?;
            outputs.push(OutletId::new(id, 0));
        } else {
            outputs.push(now);
        }
    }
    out.outputs = outputs;
    Ok(out)
}

fn cast_op(to: DType) -> Op {
    Op::Elementwise(ElementwiseOp::Cast { to, saturate: true })
}

fn rename(g: &mut Graph, o: OutletId, name: String) {
    if let Some(outlet) = g.nodes.get_mut(o.node).and_then(|n| n.outputs.get_mut(o.slot)) {
        outlet.name = name;
    }
}

/// Whether input `slot` of `op` is FP32 whatever the op's data type.
fn always_f32(op: &Op, slot: usize) -> bool {
    matches!((op.name(), slot), ("Resize", 1 | 2) | ("Upsample", 1) | ("NonMaxSuppression", 3 | 4))
}

/// Constants read only where ONNX requires FP32 keep their dtype.
fn host_read_constants(graph: &Graph) -> std::collections::HashSet<OutletId> {
    let mut other_use = std::collections::HashSet::new();
    let mut f32_use = std::collections::HashSet::new();
    for node in &graph.nodes {
        for (slot, i) in node.inputs.iter().enumerate() {
            if let Some(o) = i {
                if always_f32(&node.op, slot) {
                    f32_use.insert(*o)
                } else {
                    other_use.insert(*o)
                };
            }
        }
    }
    f32_use.difference(&other_use).copied().collect()
}

/// Ops whose attributes name FP32 as the result type produce `half` instead.
fn retarget(op: &Op, half: DType) -> Result<Op> {
    Ok(match op {
        Op::Elementwise(ElementwiseOp::Cast { to: DType::F32, .. }) => cast_op(half),
        Op::Movement(MovementOp::ConstantOfShape { value }) if value.dtype() == DType::F32 => {
            Op::Movement(MovementOp::ConstantOfShape { value: to_half(value, half)? })
        }
        Op::Movement(MovementOp::EyeLike { dtype: Some(DType::F32), k }) => {
            Op::Movement(MovementOp::EyeLike { dtype: Some(half), k: *k })
        }
        op => op.clone(),
    })
}

fn to_half(t: &Tensor, half: DType) -> Result<Tensor> {
    let v = t.to_f64_vec().map_err(|e| CudaError::Graph(e.to_string()))?;
    let shape = t.shape().to_vec();
    let r = match half {
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(bf16::from_f64).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v.into_iter().map(f16::from_f64).collect::<Vec<_>>()),
    };
    r.map_err(|e| CudaError::Graph(e.to_string()))
}
