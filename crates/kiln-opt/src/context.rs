//! What a rewrite sees of the graph: nodes, facts and constant values, and who reads
//! each value. Rebuilt after every applied patch, so it is never stale.

use std::collections::HashMap;

use kiln_ir::{Fact, Graph, Node, NodeId, Op, OutletId, Tensor};

use crate::Evaluator;

pub struct Context<'a> {
    pub graph: &'a Graph,
    pub options: &'a Options<'a>,
    consumers: HashMap<OutletId, Vec<(NodeId, usize)>>,
    outputs: HashMap<OutletId, usize>,
    live: Vec<bool>,
}

/// Settings the passes read.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Constant folding keeps results up to this many bytes (so that folding a weight
    /// transform does not store a second copy of a large weight); larger results are
    /// folded only where they replace inputs of at least the same size.
    pub fold_limit_bytes: usize,
    /// Evaluates ops on constant inputs; without one, only what shape inference already
    /// knows is folded.
    pub evaluator: Option<&'a dyn Evaluator>,
    /// The layout conv regions should use.
    pub layout: Layout,
}

/// Tensor layout of activations in convolution regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// Keep the model's layout (ONNX: NCHW).
    #[default]
    Nchw,
    /// Channels last, as tensor-core kernels prefer.
    Nhwc,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { fold_limit_bytes: 1 << 20, evaluator: None, layout: Layout::Nchw }
    }
}

impl<'a> Context<'a> {
    pub fn new(graph: &'a Graph, options: &'a Options<'a>) -> Context<'a> {
        let mut consumers: HashMap<OutletId, Vec<(NodeId, usize)>> = HashMap::new();
        for (id, n) in graph.nodes.iter().enumerate() {
            for (i, o) in n.inputs.iter().enumerate() {
                if let Some(o) = o {
                    consumers.entry(*o).or_default().push((id, i));
                }
            }
        }
        let mut outputs = HashMap::new();
        for o in &graph.outputs {
            *outputs.entry(*o).or_insert(0) += 1;
        }
        let live = liveness(graph);
        Context { graph, options, consumers, outputs, live }
    }

    pub fn node(&self, id: NodeId) -> &'a Node {
        &self.graph.nodes[id]
    }

    /// Whether the node contributes to a graph output (dead nodes are skipped).
    pub fn is_live(&self, id: NodeId) -> bool {
        self.live.get(id).copied().unwrap_or(false)
    }

    pub fn live(&self) -> &[bool] {
        &self.live
    }

    pub fn fact(&self, o: OutletId) -> &'a Fact {
        &self.graph.nodes[o.node].outputs[o.slot].fact
    }

    /// Input `i` of node `id`, if present.
    pub fn input(&self, id: NodeId, i: usize) -> Option<OutletId> {
        self.graph.nodes[id].inputs.get(i).copied().flatten()
    }

    /// The node producing `o`.
    pub fn producer(&self, o: OutletId) -> &'a Node {
        &self.graph.nodes[o.node]
    }

    /// The value of `o` when it is known before running (a constant or folded value).
    pub fn value(&self, o: OutletId) -> Option<&'a Tensor> {
        match &self.producer(o).op {
            Op::Constant(t) => Some(t),
            _ => self.fact(o).value.as_ref(),
        }
    }

    /// The single element of a constant `o`, as f64.
    pub fn scalar(&self, o: OutletId) -> Option<f64> {
        let v = self.value(o)?;
        if v.len() != 1 {
            return None;
        }
        v.to_f64_vec().ok().and_then(|x| x.first().copied())
    }

    /// The nodes (and input positions) that read `o`.
    pub fn consumers(&self, o: OutletId) -> &[(NodeId, usize)] {
        self.consumers.get(&o).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_output(&self, o: OutletId) -> bool {
        self.outputs.contains_key(&o)
    }

    /// Reads of `o` by nodes, plus one per graph output it is.
    pub fn uses(&self, o: OutletId) -> usize {
        self.consumers(o).len() + self.outputs.get(&o).copied().unwrap_or(0)
    }

    /// `o` has exactly one reader and is not a graph output: it may be fused away.
    pub fn single_use(&self, o: OutletId) -> bool {
        self.consumers(o).len() == 1 && !self.is_output(o)
    }

    /// Whether readers of `old` can simply read `new` instead. Not when `old` is a graph
    /// output and `new` is a graph input or another output: the output would need an
    /// Identity again, so forwarding would change nothing.
    pub fn can_forward(&self, old: OutletId, new: OutletId) -> bool {
        !(self.is_output(old) && (matches!(self.producer(new).op, Op::Input) || self.is_output(new)))
    }

    /// The one node reading `o`, when `single_use(o)`.
    pub fn sole_consumer(&self, o: OutletId) -> Option<NodeId> {
        if self.single_use(o) { Some(self.consumers(o)[0].0) } else { None }
    }
}

/// Nodes that some graph output depends on; graph inputs always count as live.
fn liveness(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.nodes.len()];
    let mut stack: Vec<NodeId> = graph.outputs.iter().map(|o| o.node).collect();
    stack.extend(graph.inputs.iter().map(|o| o.node));
    stack.extend(graph.captures.iter().map(|c| c.outlet.node));
    while let Some(n) = stack.pop() {
        if n >= live.len() || live[n] {
            continue;
        }
        live[n] = true;
        stack.extend(graph.nodes[n].inputs.iter().flatten().map(|o| o.node));
    }
    live
}
