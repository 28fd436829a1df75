//! Building graphs in Rust (TensorRT's `INetworkDefinition`): tests use this heavily.

use crate::{DType, Fact, Graph, IrError, Op, OutletId, Result, Shape, Tensor};

/// A graph under construction. Every added layer has its outputs inferred at once,
/// so a mistake is reported at the line that made it.
#[derive(Debug, Default)]
pub struct NetworkDefinition {
    graph: Graph,
}

impl NetworkDefinition {
    pub fn new(name: &str) -> NetworkDefinition {
        NetworkDefinition { graph: Graph::new(name) }
    }

    pub fn add_input(&mut self, name: &str, dtype: DType, shape: Shape) -> OutletId {
        let node = self.graph.nodes.len();
        self.graph.nodes.push(crate::Node {
            name: name.to_string(),
            op: Op::Input,
            inputs: vec![],
            outputs: vec![crate::graph::Outlet { name: name.to_string(), fact: Fact::new(dtype, shape) }],
        });
        let o = OutletId::new(node, 0);
        self.graph.inputs.push(o);
        o
    }

    pub fn add_constant(&mut self, name: &str, value: Tensor) -> OutletId {
        let fact = Fact::constant(value.clone());
        self.graph.nodes.push(crate::Node {
            name: name.to_string(),
            op: Op::Constant(value),
            inputs: vec![],
            outputs: vec![crate::graph::Outlet { name: name.to_string(), fact }],
        });
        OutletId::new(self.graph.nodes.len() - 1, 0)
    }

    /// Adds a layer with one output per name in `outputs`; returns the outputs.
    pub fn add_layer(&mut self, name: &str, op: Op, inputs: &[OutletId], n_outputs: usize) -> Result<Vec<OutletId>> {
        self.add_layer_opt(name, op, inputs.iter().map(|&i| Some(i)).collect(), n_outputs)
    }

    /// Like `add_layer`, with optional inputs left out as `None`.
    pub fn add_layer_opt(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<OutletId>>,
        n_outputs: usize,
    ) -> Result<Vec<OutletId>> {
        let names =
            (0..n_outputs).map(|i| if n_outputs == 1 { name.to_string() } else { format!("{name}:{i}") }).collect();
        let node = self.graph.add_node(name, op, inputs, names)?;
        Ok((0..n_outputs).map(|s| OutletId::new(node, s)).collect())
    }

    /// Adds a single-output layer.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[OutletId]) -> Result<OutletId> {
        Ok(self.add_layer(name, op, inputs, 1)?[0])
    }

    pub fn mark_output(&mut self, outlet: OutletId, name: &str) -> Result<()> {
        let o = self.graph.nodes.get_mut(outlet.node).and_then(|n| n.outputs.get_mut(outlet.slot));
        let o = o.ok_or_else(|| IrError::Graph(format!("no value {outlet} to mark as output '{name}'")))?;
        o.name = name.to_string();
        self.graph.outputs.push(outlet);
        Ok(())
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn build(self) -> Graph {
        self.graph
    }
}
