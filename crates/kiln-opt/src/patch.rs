//! A rewrite's edit, applied to the graph as one transaction: new nodes are appended,
//! then every reader of a replaced outlet is pointed at its replacement. If any new
//! node is invalid, or a replacement's dtype or shape contradicts the value it replaces,
//! nothing changes. Replaced nodes are not deleted here: they become dead and the
//! engine's compaction drops them.

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::{Fact, Graph, IrError, Op, OutletId, Shape, Tensor};

/// A value a new node reads: an existing outlet, or an output of a node the patch adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Graph(OutletId),
    New { node: usize, slot: usize },
}

impl From<OutletId> for Wire {
    fn from(o: OutletId) -> Wire {
        Wire::Graph(o)
    }
}

#[derive(Clone, Debug)]
struct NewNode {
    name: String,
    op: Op,
    inputs: Vec<Option<Wire>>,
    outputs: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Patch {
    nodes: Vec<NewNode>,
    shunts: Vec<(OutletId, Wire)>,
}

impl Patch {
    pub fn new() -> Patch {
        Patch::default()
    }

    /// Adds a single-output node.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[Wire]) -> Wire {
        self.add_multi(name, op, inputs.iter().map(|&w| Some(w)).collect(), 1)[0]
    }

    /// Adds a node with `outputs` outputs and optional inputs.
    pub fn add_multi(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<Wire>>,
        outputs: usize,
    ) -> Vec<Wire> {
        self.nodes.push(NewNode { name: name.into(), op, inputs, outputs });
        let node = self.nodes.len() - 1;
        (0..outputs).map(|slot| Wire::New { node, slot }).collect()
    }

    pub fn constant(&mut self, name: impl Into<String>, value: Tensor) -> Wire {
        self.add(name, Op::Constant(value), &[])
    }

    /// Every reader of `old` (and the graph output it may be) will read `new` instead.
    pub fn shunt(&mut self, old: OutletId, new: impl Into<Wire>) {
        self.shunts.push((old, new.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.shunts.is_empty()
    }

    /// Applies the patch; returns the names of the nodes it added. On error the graph
    /// is exactly as before.
    pub fn apply(self, graph: &mut Graph) -> Result<Vec<String>, IrError> {
        let base = graph.nodes.len();
        let saved_outputs = graph.outputs.clone();
        let saved_names: Vec<(OutletId, String)> =
            graph.outputs.iter().map(|&o| (o, graph.outlet_name(o).to_string())).collect();
        let result = self.apply_inner(graph, base);
        if result.is_err() {
            graph.nodes.truncate(base);
            graph.outputs = saved_outputs;
            for (o, name) in saved_names {
                graph.nodes[o.node].outputs[o.slot].name = name;
            }
        }
        result
    }

    fn apply_inner(self, graph: &mut Graph, base: usize) -> Result<Vec<String>, IrError> {
        let resolve = |w: Wire| match w {
            Wire::Graph(o) => o,
            Wire::New { node, slot } => OutletId::new(base + node, slot),
        };
        let mut added = Vec::with_capacity(self.nodes.len());
        for n in self.nodes {
            let inputs = n.inputs.iter().map(|w| w.map(resolve)).collect();
            let names = (0..n.outputs)
                .map(|i| if n.outputs == 1 { n.name.clone() } else { format!("{}:{i}", n.name) })
                .collect();
            added.push(n.name.clone());
            graph.add_node(n.name, n.op, inputs, names)?;
        }
        let shunts: Vec<(OutletId, OutletId)> = self.shunts.iter().map(|&(old, new)| (old, resolve(new))).collect();
        for &(old, new) in &shunts {
            let (a, b) = (graph.fact(old)?, graph.fact(new)?);
            if !compatible(a, b) {
                return Err(IrError::Graph(format!(
                    "replacement {} ({b}) for '{}' ({a}) has another dtype or shape",
                    graph.outlet_name(new),
                    graph.outlet_name(old)
                )));
            }
        }
        for &(old, new) in &shunts {
            refine(graph, old, new);
        }
        for &(old, new) in &shunts {
            for node in &mut graph.nodes[..base] {
                for i in node.inputs.iter_mut().flatten() {
                    if *i == old {
                        *i = new;
                    }
                }
            }
            for k in 0..graph.outputs.len() {
                if graph.outputs[k] == old {
                    let name = graph.outlet_name(old).to_string();
                    graph.outputs[k] = output_outlet(graph, new, &name, k)?;
                }
            }
        }
        Ok(added)
    }
}

/// `new`, renamed to the graph output name it now carries; behind an Identity when it
/// cannot take that name (a graph input, or already another output).
fn output_outlet(graph: &mut Graph, new: OutletId, name: &str, k: usize) -> Result<OutletId, IrError> {
    let is_input = matches!(graph.nodes[new.node].op, Op::Input);
    let other_output = graph.outputs.iter().enumerate().any(|(j, &o)| j != k && o == new);
    if is_input || other_output {
        let id = graph.add_node(
            format!("{name}/output"),
            Op::Elementwise(ElementwiseOp::Identity),
            vec![Some(new)],
            vec![name.to_string()],
        )?;
        return Ok(OutletId::new(id, 0));
    }
    // The replaced outlet keeps a distinct name so that the output's name is unique.
    for n in graph.nodes.iter_mut() {
        for o in n.outputs.iter_mut() {
            if o.name == name {
                o.name = format!("{name}/replaced");
            }
        }
    }
    graph.nodes[new.node].outputs[new.slot].name = name.to_string();
    Ok(new)
}

/// `new` computes the value of `old`: where inference knew less of a new node's shape
/// (e.g. symbolic dims the importer computed), it takes the dims `old` knew.
fn refine(graph: &mut Graph, old: OutletId, new: OutletId) {
    let Some(known) = graph.nodes.get(old.node).and_then(|n| n.outputs.get(old.slot)).map(|o| o.fact.shape.clone())
    else {
        return;
    };
    let Some(fact) = graph.nodes.get_mut(new.node).and_then(|n| n.outputs.get_mut(new.slot)).map(|o| &mut o.fact)
    else {
        return;
    };
    match (&mut fact.shape, known) {
        (None, Some(k)) => fact.shape = Some(k),
        (Some(s), Some(k)) if s.rank() == k.rank() => {
            for (d, k) in s.0.iter_mut().zip(k.0) {
                if *d == kiln_ir::Dim::Unknown {
                    *d = k;
                }
            }
        }
        _ => {}
    }
}

/// Whether `new` may stand for `old`: same dtype and no contradicting dim where both
/// are known.
pub fn compatible(old: &Fact, new: &Fact) -> bool {
    if let (Some(a), Some(b)) = (old.dtype, new.dtype)
        && a != b
    {
        return false;
    }
    match (&old.shape, &new.shape) {
        (Some(a), Some(b)) => shapes_agree(a, b),
        _ => true,
    }
}

fn shapes_agree(a: &Shape, b: &Shape) -> bool {
    use kiln_ir::Dim::*;
    a.rank() == b.rank()
        && a.0.iter().zip(&b.0).all(|(x, y)| match (x, y) {
            (Known(p), Known(q)) => p == q,
            (Sym(p), Sym(q)) => p == q,
            (Known(_), Sym(_)) | (Sym(_), Known(_)) => false,
            _ => true,
        })
}
