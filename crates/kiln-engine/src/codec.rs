//! The plan's `GRAPHS`, `WEIGHTS` and `KERNELS` sections.
//!
//! Graphs are Kiln's IR encoded with postcard, with their top-level constants moved out
//! into the `WEIGHTS` section: each constant is a blob aligned to 256 bytes (identical
//! blobs stored once, so the graphs of several profiles share their weights), and the
//! encoded graph keeps a reference. Decoding puts views of the mapped file back in their
//! place (no copy), then checks the graph (`Graph::verify`) before anything runs it.

use std::collections::HashMap;

use bytes::Bytes;
use kiln_ir::{DType, Graph, Op, Tensor};
use serde::{Deserialize, Serialize};

use crate::format::ALIGN;
use crate::{EngineError, Result};

/// What a graph is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphRole {
    /// Optimised, with symbolic dims: bound again for each new shape in a profile.
    Source,
    /// Bound to profile `n`'s optimal shapes, precision lowered: what its contexts run.
    Built(usize),
}

#[derive(Serialize, Deserialize)]
struct StoredGraph {
    role: GraphRole,
    graph: Graph,
    constants: Vec<ConstRef>,
}

/// Where a constant node's value went.
#[derive(Serialize, Deserialize)]
struct ConstRef {
    node: usize,
    dtype: DType,
    shape: Vec<usize>,
    offset: u64,
    len: u64,
    /// Its output fact held the value too.
    in_fact: bool,
}

/// The `WEIGHTS` section being written: blobs aligned to [`ALIGN`], each distinct one once.
#[derive(Default)]
pub struct WeightsWriter {
    bytes: Vec<u8>,
    index: HashMap<(u32, usize), Vec<usize>>,
}

impl WeightsWriter {
    /// The blob's offset (an existing one when the same bytes were added before).
    fn add(&mut self, data: &[u8]) -> usize {
        let key = (crc32fast::hash(data), data.len());
        if let Some(found) =
            self.index.get(&key).and_then(|c| c.iter().find(|&&o| &self.bytes[o..o + data.len()] == data))
        {
            return *found;
        }
        let at = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(at, 0);
        self.bytes.extend_from_slice(data);
        self.index.entry(key).or_default().push(at);
        at
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Encodes `graphs` (section `GRAPHS`), moving their constants into `weights`.
pub fn encode_graphs(graphs: &[(GraphRole, &Graph)], weights: &mut WeightsWriter) -> Result<Vec<u8>> {
    let stored: Vec<StoredGraph> = graphs.iter().map(|(role, g)| strip_constants(*role, g, weights)).collect();
    postcard::to_stdvec(&stored).map_err(|e| EngineError::Build(format!("encoding the graphs: {e}")))
}

fn strip_constants(role: GraphRole, graph: &Graph, weights: &mut WeightsWriter) -> StoredGraph {
    let mut graph = graph.clone();
    let mut constants = Vec::new();
    for (id, node) in graph.nodes.iter_mut().enumerate() {
        let Op::Constant(t) = &node.op else { continue };
        let offset = weights.add(t.bytes());
        let in_fact = node.outputs.first().is_some_and(|o| o.fact.value.is_some());
        constants.push(ConstRef {
            node: id,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            offset: offset as u64,
            len: t.bytes().len() as u64,
            in_fact,
        });
        node.op = Op::Constant(empty(t.dtype()));
        if let Some(o) = node.outputs.first_mut() {
            o.fact.value = None;
        }
    }
    StoredGraph { role, graph, constants }
}

fn empty(dtype: DType) -> Tensor {
    Tensor::from_bytes(dtype, vec![0], Bytes::new()).expect("an empty tensor has no bytes")
}

/// Decodes section `GRAPHS` against section `WEIGHTS` (views, not copies) and checks
/// every graph.
pub fn decode_graphs(section: &[u8], weights: &Bytes) -> Result<Vec<(GraphRole, Graph)>> {
    let stored: Vec<StoredGraph> =
        postcard::from_bytes(section).map_err(|e| EngineError::Corrupt(format!("the graphs do not decode: {e}")))?;
    stored
        .into_iter()
        .map(|s| {
            let graph = restore_constants(s.graph, s.constants, weights)?;
            graph.verify().map_err(|e| EngineError::Corrupt(format!("the stored graph is invalid: {e}")))?;
            Ok((s.role, graph))
        })
        .collect()
}

fn restore_constants(mut graph: Graph, constants: Vec<ConstRef>, weights: &Bytes) -> Result<Graph> {
    for c in constants {
        let corrupt = |m: &str| EngineError::Corrupt(format!("weight of node #{}: {m}", c.node));
        let end = c.offset.checked_add(c.len).filter(|&e| e <= weights.len() as u64).ok_or_else(|| {
            corrupt(&format!("{} bytes at {} run past the {}-byte weights section", c.len, c.offset, weights.len()))
        })?;
        let data = weights.slice(c.offset as usize..end as usize);
        let tensor = Tensor::from_bytes(c.dtype, c.shape, data).map_err(|e| corrupt(&e.to_string()))?;
        let node = graph.nodes.get_mut(c.node).ok_or_else(|| corrupt("no such node"))?;
        if !matches!(node.op, Op::Constant(_)) {
            return Err(corrupt("not a constant node"));
        }
        if c.in_fact
            && let Some(o) = node.outputs.first_mut()
        {
            o.fact.value = Some(tensor.clone());
        }
        node.op = Op::Constant(tensor);
    }
    Ok(graph)
}

/// One compiled kernel module as stored (section `KERNELS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModule {
    pub name: String,
    pub arch: String,
    pub cubin: Vec<u8>,
    pub ptx: String,
}

pub fn encode_modules(modules: &[StoredModule]) -> Result<Vec<u8>> {
    postcard::to_stdvec(modules).map_err(|e| EngineError::Build(format!("encoding the kernels: {e}")))
}

pub fn decode_modules(section: &[u8]) -> Result<Vec<StoredModule>> {
    postcard::from_bytes(section).map_err(|e| EngineError::Corrupt(format!("the kernels do not decode: {e}")))
}
