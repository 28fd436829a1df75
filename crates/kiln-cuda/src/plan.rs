//! The execution plan: what runs in which order and where every tensor lives, decided
//! on the host from a graph whose shapes are all known (after kiln-opt). No GPU needed.
//!
//! - Nodes run in evaluation order; each becomes a [`Step`] reading and writing slots.
//! - Every value is a [`Slot`]: dtype, shape, bytes and a place in one of the buffers.
//!   Graph inputs and computed values live in the activation arena, at offsets that
//!   [`crate::planner`] chooses from their lifetimes (first write, last read; graph inputs
//!   from step 0, graph outputs to the end). Constants are packed into the weights buffer.
//! - Reshape, Flatten, Squeeze, Unsqueeze and Identity write nothing: their output is
//!   the input's bytes under another shape (same buffer, same offset), and the input's
//!   lifetime is extended to cover every read of the alias.

use std::collections::HashMap;

use kiln_ir::ops::{ElementwiseOp, MovementOp};
use kiln_ir::{DType, Graph, Node, NodeId, Op, OutletId, Shape, Tensor};

pub use crate::bind::{bind_input_shapes, bind_inputs};

use crate::memory::{BufferKind, View};
use crate::planner::{self, ALIGN, Lifetime};
use crate::{CudaError, Result};

pub type SlotId = usize;

/// One tensor value of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// The value's name (its outlet's name).
    pub name: String,
    pub outlet: OutletId,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
    /// Where its bytes are (for an alias, those of the value it aliases).
    pub view: View,
    /// The slot whose bytes this one shares (itself unless it is an alias).
    pub root: SlotId,
}

impl Slot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One node to run.
#[derive(Clone, Debug)]
pub struct Step {
    pub node: String,
    pub node_id: NodeId,
    pub op: Op,
    /// Data inputs (`None` for an omitted optional input). For alias ops, only the
    /// tensor itself: their shape/axes operands are build-time facts, not data.
    pub inputs: Vec<Option<SlotId>>,
    pub outputs: Vec<SlotId>,
    /// The output only renames the input's bytes: nothing is launched.
    pub alias: bool,
}

/// A constant's place in the weights buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightEntry {
    pub slot: SlotId,
    /// The `Op::Constant` node holding the data.
    pub node: NodeId,
    pub offset: usize,
    pub bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of the activation arena (shared by tensors not alive at once).
    pub arena_bytes: usize,
    /// Bytes every activation (graph inputs included, aliases not) would take unshared.
    pub unshared_activation_bytes: usize,
    /// Bytes of the packed weights.
    pub weight_bytes: usize,
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let saved = if self.unshared_activation_bytes == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.arena_bytes as f64 / self.unshared_activation_bytes as f64)
        };
        write!(
            f,
            "arena {} bytes for {} bytes of activations ({saved:.0}% saved), weights {} bytes",
            self.arena_bytes, self.unshared_activation_bytes, self.weight_bytes
        )
    }
}

#[derive(Clone, Debug)]
pub struct ExecutionPlan {
    pub steps: Vec<Step>,
    pub slots: Vec<Slot>,
    /// The graph's inputs' slots, in order (all in the arena).
    pub inputs: Vec<SlotId>,
    /// The graph's outputs' slots, in order.
    pub outputs: Vec<SlotId>,
    pub weights: Vec<WeightEntry>,
    /// The constants' values by slot, so that operands that are attributes in practice
    /// (axes, pads, slice bounds) can be read on the host when lowering.
    pub constants: HashMap<SlotId, Tensor>,
    /// Per graph input, the value it was bound to at build time (a shape tensor, see
    /// [`crate::bind`]); a run must give that same value.
    pub bound_inputs: Vec<Option<Tensor>>,
    pub report: MemoryReport,
}

/// Whether `op` only renames its first input's bytes.
pub fn is_alias(op: &Op) -> bool {
    matches!(
        op,
        Op::Movement(
            MovementOp::Reshape { .. }
                | MovementOp::Flatten { .. }
                | MovementOp::Squeeze { .. }
                | MovementOp::Unsqueeze { .. }
        ) | Op::Elementwise(ElementwiseOp::Identity)
    )
}

impl ExecutionPlan {
    /// Plans `graph`, whose values must all have known dtypes and shapes.
    pub fn new(graph: &Graph) -> Result<ExecutionPlan> {
        Planning::new(graph).run()
    }

    pub fn slot(&self, id: SlotId) -> &Slot {
        &self.slots[id]
    }

    /// The value of constant slot `id` (aliases of constants included).
    pub fn constant(&self, id: SlotId) -> Option<&Tensor> {
        self.constants.get(&self.slots.get(id)?.root)
    }

    /// The slot of `outlet`, if the plan has one (values nobody reads may have none).
    pub fn slot_of(&self, outlet: OutletId) -> Option<SlotId> {
        self.slots.iter().position(|s| s.outlet == outlet)
    }
}

struct Planning<'g> {
    graph: &'g Graph,
    slots: Vec<Slot>,
    by_outlet: HashMap<OutletId, SlotId>,
}

impl<'g> Planning<'g> {
    fn new(graph: &'g Graph) -> Planning<'g> {
        Planning { graph, slots: Vec::new(), by_outlet: HashMap::new() }
    }

    /// The slot of `o`, made on first use (its view is filled in later).
    fn slot(&mut self, o: OutletId) -> Result<SlotId> {
        if let Some(&id) = self.by_outlet.get(&o) {
            return Ok(id);
        }
        let outlet = self.graph.outlet(o).map_err(|e| CudaError::Graph(e.to_string()))?;
        let unknown = || CudaError::UnknownShape { value: outlet.name.clone(), fact: outlet.fact.to_string() };
        let dtype = outlet.fact.dtype.ok_or_else(unknown)?;
        let shape = outlet.fact.shape.as_ref().and_then(Shape::as_known).ok_or_else(unknown)?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| CudaError::Graph(format!("value '{}' is too large ({shape:?})", outlet.name)))?;
        let id = self.slots.len();
        let view = View { buffer: BufferKind::Arena, offset: 0, bytes };
        self.slots.push(Slot { name: outlet.name.clone(), outlet: o, dtype, shape, bytes, view, root: id });
        self.by_outlet.insert(o, id);
        Ok(id)
    }

    fn run(mut self) -> Result<ExecutionPlan> {
        let graph = self.graph;
        let order = graph.eval_order().map_err(|e| CudaError::Graph(e.to_string()))?;
        // Fail early, naming the first value whose shape is not known.
        for &n in &order {
            for slot in 0..graph.nodes[n].outputs.len() {
                let o = OutletId::new(n, slot);
                if !matches!(graph.nodes[n].op, Op::Constant(_)) || graph.outputs.contains(&o) {
                    self.slot(o)?;
                }
            }
        }
        let inputs: Vec<SlotId> = graph.inputs.iter().map(|&o| self.slot(o)).collect::<Result<_>>()?;
        let mut steps = Vec::new();
        for &n in &order {
            let node: &Node = &graph.nodes[n];
            if matches!(node.op, Op::Input | Op::Constant(_)) {
                continue;
            }
            let alias = is_alias(&node.op);
            let data_inputs = if alias { &node.inputs[..node.inputs.len().min(1)] } else { &node.inputs[..] };
            let step_inputs =
                data_inputs.iter().map(|i| i.map(|o| self.slot(o)).transpose()).collect::<Result<Vec<_>>>()?;
            let outputs =
                (0..node.outputs.len()).map(|s| self.slot(OutletId::new(n, s))).collect::<Result<Vec<_>>>()?;
            if alias {
                let (Some(Some(src)), [dst]) = (step_inputs.first(), outputs.as_slice()) else {
                    return Err(CudaError::Graph(format!(
                        "node '{}' ({}) needs one input and one output",
                        node.name,
                        node.op.name()
                    )));
                };
                if self.slots[*src].bytes != self.slots[*dst].bytes {
                    return Err(CudaError::Graph(format!(
                        "node '{}' ({}) changes the size from {} to {} bytes",
                        node.name,
                        node.op.name(),
                        self.slots[*src].bytes,
                        self.slots[*dst].bytes
                    )));
                }
                self.slots[*dst].root = self.slots[*src].root;
            }
            steps.push(Step {
                node: node.name.clone(),
                node_id: n,
                op: node.op.clone(),
                inputs: step_inputs,
                outputs,
                alias,
            });
        }
        let outputs: Vec<SlotId> = graph.outputs.iter().map(|&o| self.slot(o)).collect::<Result<_>>()?;
        let mut slots = self.slots;

        // Lifetimes of the roots (values that own bytes), in steps.
        let end = steps.len();
        let mut life: Vec<Option<(usize, usize)>> = vec![None; slots.len()];
        let mut touch = |slots: &[Slot], id: SlotId, at: usize| {
            let r = slots[id].root;
            let l = life[r].get_or_insert((at, at));
            l.0 = l.0.min(at);
            l.1 = l.1.max(at);
        };
        for &i in &inputs {
            touch(&slots, i, 0);
        }
        for (at, step) in steps.iter().enumerate() {
            for &i in step.inputs.iter().flatten() {
                touch(&slots, i, at);
            }
            for &o in &step.outputs {
                touch(&slots, o, at);
            }
        }
        for &o in &outputs {
            touch(&slots, o, end);
        }

        // Constants (roots produced by Op::Constant) go to the weights, packed.
        let mut weights = Vec::new();
        let mut constants = HashMap::new();
        let mut weight_bytes = 0usize;
        let mut arena_roots = Vec::new();
        for (id, slot) in slots.iter_mut().enumerate() {
            if slot.root != id {
                continue;
            }
            let node = slot.outlet.node;
            if let Op::Constant(t) = &graph.nodes[node].op {
                constants.insert(id, t.clone());
                let offset = weight_bytes;
                weight_bytes += slot.bytes.div_ceil(ALIGN) * ALIGN;
                slot.view = View { buffer: BufferKind::Weights, offset, bytes: slot.bytes };
                weights.push(WeightEntry { slot: id, node, offset, bytes: slot.bytes });
            } else {
                arena_roots.push(id);
            }
        }
        let lifetimes: Vec<Lifetime> = arena_roots
            .iter()
            .map(|&id| {
                // A value written and never read still needs its bytes while it is written.
                let (first, last) = life[id].unwrap_or((0, 0));
                Lifetime { bytes: slots[id].bytes, first, last }
            })
            .collect();
        let arena = planner::plan(&lifetimes, ALIGN);
        for (k, &id) in arena_roots.iter().enumerate() {
            slots[id].view = View { buffer: BufferKind::Arena, offset: arena.offsets[k], bytes: slots[id].bytes };
        }
        for id in 0..slots.len() {
            let root = slots[id].root;
            if root != id {
                slots[id].view = View { bytes: slots[id].bytes, ..slots[root].view };
            }
        }
        let report = MemoryReport { arena_bytes: arena.size, unshared_activation_bytes: arena.unshared, weight_bytes };
        let bound_inputs: Vec<Option<Tensor>> =
            graph.inputs.iter().map(|&o| graph.outlet(o).ok().and_then(|v| v.fact.value.clone())).collect();
        for (&id, value) in inputs.iter().zip(&bound_inputs) {
            if let Some(v) = value {
                constants.insert(slots[id].root, v.clone());
            }
        }
        Ok(ExecutionPlan { steps, slots, inputs, outputs, weights, constants, bound_inputs, report })
    }
}
