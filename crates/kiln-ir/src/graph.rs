use std::collections::HashMap;
use std::fmt;

use crate::{Fact, IrError, Op, Result};

pub type NodeId = usize;

/// A value: output `slot` of node `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct OutletId {
    pub node: NodeId,
    pub slot: usize,
}

impl OutletId {
    pub fn new(node: NodeId, slot: usize) -> OutletId {
        OutletId { node, slot }
    }
}

impl fmt::Display for OutletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.node, self.slot)
    }
}

/// One named output of a node and what is known about it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outlet {
    pub name: String,
    pub fact: Fact,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// `None` for an omitted optional input (ONNX's empty input name).
    pub inputs: Vec<Option<OutletId>>,
    pub outputs: Vec<Outlet>,
}

/// A value of an enclosing graph that a subgraph reads (ONNX outer-scope names).
///
/// The subgraph sees it as the `Input` node at `outlet`; the node that owns the
/// subgraph receives the outer value as one of its trailing inputs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Capture {
    pub name: String,
    pub outlet: OutletId,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub inputs: Vec<OutletId>,
    pub outputs: Vec<OutletId>,
    pub captures: Vec<Capture>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds a node, inferring its output facts from its inputs' facts.
    /// Errors name the node and its op.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<OutletId>>,
        output_names: Vec<String>,
    ) -> Result<NodeId> {
        let name = name.into();
        let facts = self.infer(&op, &inputs, output_names.len()).map_err(|e| IrError::Node {
            node: name.clone(),
            op: op.name().to_string(),
            source: Box::new(e),
        })?;
        self.push_node(name, op, inputs, output_names.into_iter().zip(facts).collect())
    }

    /// Adds a node whose output facts are given (graph inputs, or facts known from a file).
    pub fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<Option<OutletId>>,
        outputs: Vec<(String, Fact)>,
    ) -> Result<NodeId> {
        for i in inputs.iter().flatten() {
            self.outlet(*i)?;
        }
        let outputs = outputs.into_iter().map(|(name, fact)| Outlet { name, fact }).collect();
        self.nodes.push(Node { name, op, inputs, outputs });
        Ok(self.nodes.len() - 1)
    }

    fn infer(&self, op: &Op, inputs: &[Option<OutletId>], n_outputs: usize) -> Result<Vec<Fact>> {
        let facts: Vec<Option<&Fact>> =
            inputs.iter().map(|i| i.map(|o| self.fact(o)).transpose()).collect::<Result<_>>()?;
        let mut out = op.infer(&facts, n_outputs)?;
        if out.len() < n_outputs {
            out.resize(n_outputs, Fact::unknown());
        }
        out.truncate(n_outputs);
        Ok(out)
    }

    pub fn outlet(&self, o: OutletId) -> Result<&Outlet> {
        self.nodes
            .get(o.node)
            .and_then(|n| n.outputs.get(o.slot))
            .ok_or_else(|| IrError::Graph(format!("no value {o} in graph '{}'", self.name)))
    }

    pub fn fact(&self, o: OutletId) -> Result<&Fact> {
        Ok(&self.outlet(o)?.fact)
    }

    pub fn outlet_name(&self, o: OutletId) -> &str {
        self.outlet(o).map(|x| x.name.as_str()).unwrap_or("?")
    }

    /// Nodes in an order where every node comes after its inputs' producers.
    pub fn eval_order(&self) -> Result<Vec<NodeId>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        for root in 0..self.nodes.len() {
            if mark[root] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, next input index to visit).
            let mut stack = vec![(root, 0usize)];
            mark[root] = Mark::Open;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                let inputs = &self.nodes[n].inputs;
                if let Some(input) = inputs.get(*next) {
                    *next += 1;
                    let Some(p) = input.map(|o| o.node) else { continue };
                    match mark.get(p) {
                        None => {
                            return Err(IrError::Graph(format!(
                                "node '{}' reads missing node #{p}",
                                self.nodes[n].name
                            )));
                        }
                        Some(Mark::Open) => {
                            return Err(IrError::Graph(format!("cycle through node '{}'", self.nodes[p].name)));
                        }
                        Some(Mark::New) => {
                            mark[p] = Mark::Open;
                            stack.push((p, 0));
                        }
                        Some(Mark::Done) => {}
                    }
                } else {
                    mark[n] = Mark::Done;
                    order.push(n);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    /// Checks a graph that came from outside (a plan file): every value read exists, no
    /// cycles, graph inputs are `Input` nodes, constants match their facts, and each
    /// node's facts agree with what its op infers from its inputs wherever both are
    /// known. Nested subgraphs are checked too.
    pub fn verify(&self) -> Result<()> {
        let bad = |m: String| IrError::Graph(format!("graph '{}': {m}", self.name));
        for n in &self.nodes {
            for o in n.inputs.iter().flatten() {
                self.outlet(*o).map_err(|_| bad(format!("node '{}' reads missing value {o}", n.name)))?;
            }
        }
        for o in self.inputs.iter().chain(&self.outputs).chain(self.captures.iter().map(|c| &c.outlet)) {
            self.outlet(*o)?;
        }
        for o in self.inputs.iter().chain(self.captures.iter().map(|c| &c.outlet)) {
            if !matches!(self.nodes[o.node].op, Op::Input) {
                return Err(bad(format!("input {o} is not an Input node")));
            }
        }
        for id in self.eval_order()? {
            let n = &self.nodes[id];
            let facts = match &n.op {
                Op::Input => continue,
                Op::Constant(t) => vec![Fact::constant(t.clone())],
                op => self.infer(op, &n.inputs, n.outputs.len()).map_err(|e| IrError::Node {
                    node: n.name.clone(),
                    op: op.name().to_string(),
                    source: Box::new(e),
                })?,
            };
            for (out, inferred) in n.outputs.iter().zip(&facts) {
                if !out.fact.agrees_with(inferred) {
                    return Err(bad(format!(
                        "node '{}' ({}): value '{}' is recorded as {:?} {:?} but its op gives {:?} {:?}",
                        n.name,
                        n.op.name(),
                        out.name,
                        out.fact.dtype,
                        out.fact.shape,
                        inferred.dtype,
                        inferred.shape
                    )));
                }
            }
            for g in n.op.subgraphs() {
                g.verify()?;
            }
        }
        Ok(())
    }

    /// How many times each outlet is read (by nodes and as a graph output).
    pub fn use_counts(&self) -> HashMap<OutletId, usize> {
        let mut counts = HashMap::new();
        let reads = self.nodes.iter().flat_map(|n| n.inputs.iter().flatten()).chain(&self.outputs);
        for o in reads {
            *counts.entry(*o).or_insert(0) += 1;
        }
        counts
    }

    /// Op-type histogram, including nested subgraphs.
    pub fn op_histogram(&self) -> std::collections::BTreeMap<String, usize> {
        let mut h = std::collections::BTreeMap::new();
        self.visit_nodes(&mut |n| {
            if !matches!(n.op, Op::Input | Op::Constant(_)) {
                *h.entry(n.op.name().to_string()).or_insert(0) += 1;
            }
        });
        h
    }

    /// Calls `f` on every node of this graph and of every nested subgraph.
    pub fn visit_nodes(&self, f: &mut dyn FnMut(&Node)) {
        for n in &self.nodes {
            f(n);
            for g in n.op.subgraphs() {
                g.visit_nodes(f);
            }
        }
    }
}

/// The outer values that `subgraphs` read, in the order their owning node receives
/// them as trailing inputs (after its formal inputs): each subgraph's captures in
/// turn, each name once.
pub fn captured_names(subgraphs: &[&Graph]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in subgraphs.iter().flat_map(|g| &g.captures) {
        if !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    names
}
