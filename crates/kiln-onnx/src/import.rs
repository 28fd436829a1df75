//! GraphProto → Graph: name scopes (with capture of outer-scope names by subgraphs),
//! topological ordering, declared types as facts, and op conversion per node.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use kiln_ir::{Capture, Dim, Fact, Graph, Op, OutletId, Shape, captured_names};

use crate::error::{OnnxError, Result};
use crate::node::NodeCtx;
use crate::proto::{GraphProto, NodeProto, TypeProto, ValueInfoProto, dimension, type_proto};
use crate::tensor::{dtype_of, tensor_from_proto};

/// What every graph of one model shares while importing.
pub struct ImportEnv {
    pub base_dir: Option<PathBuf>,
    /// Opset version per domain ("" is the default ONNX domain).
    pub opsets: HashMap<String, i64>,
}

impl ImportEnv {
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let d = if domain == "ai.onnx" { "" } else { domain };
        self.opsets.get(d).copied()
    }
}

/// Looks a name up in a scope and, failing that, in the enclosing scopes.
pub trait Resolver {
    /// The fact of `name` if it is visible here; capturing it from an enclosing
    /// scope makes it visible.
    fn resolve(&mut self, name: &str) -> Option<Fact>;
}

struct Scope<'p> {
    graph: Graph,
    names: HashMap<String, OutletId>,
    parent: Option<&'p mut dyn Resolver>,
}

impl Resolver for Scope<'_> {
    fn resolve(&mut self, name: &str) -> Option<Fact> {
        self.outlet(name).and_then(|o| self.graph.fact(o).ok().cloned())
    }
}

impl Scope<'_> {
    fn outlet(&mut self, name: &str) -> Option<OutletId> {
        if let Some(o) = self.names.get(name) {
            return Some(*o);
        }
        let fact = self.parent.as_mut()?.resolve(name)?;
        let node = self.graph.push_node(name.to_string(), Op::Input, vec![], vec![(name.to_string(), fact)]).ok()?;
        let outlet = OutletId::new(node, 0);
        self.graph.captures.push(Capture { name: name.to_string(), outlet });
        self.names.insert(name.to_string(), outlet);
        Some(outlet)
    }

    fn err(&self, msg: String) -> OnnxError {
        OnnxError::Graph { graph: self.graph.name.clone(), msg }
    }
}

pub fn build_graph(proto: &GraphProto, parent: Option<&mut dyn Resolver>, env: &ImportEnv) -> Result<Graph> {
    let mut scope = Scope { graph: Graph::new(&proto.name), names: HashMap::new(), parent };
    add_initializers(&mut scope, proto, env)?;
    add_inputs(&mut scope, proto)?;
    let declared = declared_facts(proto)?;
    for i in topological_order(proto, &scope)? {
        add_node(&mut scope, &proto.node[i], i, &declared, env)?;
    }
    for out in &proto.output {
        let o = scope
            .outlet(&out.name)
            .ok_or_else(|| scope.err(format!("output '{}' is not produced by any node", out.name)))?;
        scope.graph.outputs.push(o);
    }
    Ok(scope.graph)
}

fn add_initializers(scope: &mut Scope, proto: &GraphProto, env: &ImportEnv) -> Result<()> {
    if let Some(s) = proto.sparse_initializer.first() {
        let name = s.values.as_ref().map(|v| v.name.clone()).unwrap_or_default();
        return Err(OnnxError::Tensor { name, msg: "sparse initializers are not supported".into() });
    }
    for init in &proto.initializer {
        let t = tensor_from_proto(init, env.base_dir.as_deref())?;
        let fact = Fact::constant(t.clone());
        let node =
            scope.graph.push_node(init.name.clone(), Op::Constant(t), vec![], vec![(init.name.clone(), fact)])?;
        scope.names.insert(init.name.clone(), OutletId::new(node, 0));
    }
    Ok(())
}

fn add_inputs(scope: &mut Scope, proto: &GraphProto) -> Result<()> {
    for input in &proto.input {
        // Older IRs list initializers among inputs too: those stay constants.
        if scope.names.contains_key(&input.name) {
            continue;
        }
        let fact = value_info_fact(input)?;
        let node = scope.graph.push_node(input.name.clone(), Op::Input, vec![], vec![(input.name.clone(), fact)])?;
        let o = OutletId::new(node, 0);
        scope.graph.inputs.push(o);
        scope.names.insert(input.name.clone(), o);
    }
    Ok(())
}

/// Types the file declares for outputs and intermediate values, used where inference
/// knows less.
fn declared_facts(proto: &GraphProto) -> Result<HashMap<String, Fact>> {
    let mut facts = HashMap::new();
    for vi in proto.value_info.iter().chain(&proto.output) {
        if let Ok(f) = value_info_fact(vi) {
            facts.insert(vi.name.clone(), f);
        }
    }
    Ok(facts)
}

pub fn value_info_fact(vi: &ValueInfoProto) -> Result<Fact> {
    let err = |msg: &str| OnnxError::Tensor { name: vi.name.clone(), msg: msg.to_string() };
    let Some(ty) = &vi.r#type else { return Ok(Fact::unknown()) };
    type_fact(ty, &vi.name).map_err(|e| match e {
        OnnxError::Tensor { msg, .. } => err(&msg),
        e => e,
    })
}

fn type_fact(ty: &TypeProto, name: &str) -> Result<Fact> {
    let unsupported =
        |kind: &str| OnnxError::Tensor { name: name.to_string(), msg: format!("{kind} values are not supported") };
    match &ty.value {
        None => Ok(Fact::unknown()),
        Some(type_proto::Value::TensorType(t)) => {
            let dtype = if t.elem_type == 0 { None } else { Some(dtype_of(t.elem_type, name)?) };
            let shape = t.shape.as_ref().map(|s| {
                Shape(
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::sym(p),
                            _ => Dim::Unknown,
                        })
                        .collect(),
                )
            });
            Ok(Fact { dtype, shape, value: None })
        }
        Some(type_proto::Value::SequenceType(_)) => Err(unsupported("sequence")),
        Some(type_proto::Value::MapType(_)) => Err(unsupported("map")),
        Some(type_proto::Value::SparseTensorType(_)) => Err(unsupported("sparse tensor")),
        Some(type_proto::Value::OptionalType(_)) => Err(unsupported("optional")),
    }
}

/// Every name the node reads, including names read inside its subgraphs (which make
/// it depend on their producers in this graph too).
fn names_read(node: &NodeProto, out: &mut BTreeSet<String>) {
    out.extend(node.input.iter().filter(|n| !n.is_empty()).cloned());
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            for n in &g.node {
                names_read(n, out);
            }
        }
    }
}

/// Node indices in dependency order (stable: the file's order when it is already
/// sorted). A cycle is an error naming a node on it.
fn topological_order(proto: &GraphProto, scope: &Scope) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in proto.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, i).is_some() || scope.names.contains_key(o.as_str()) {
                return Err(scope.err(format!("value '{o}' is produced twice (node '{}')", n.name)));
            }
        }
    }
    let n = proto.node.len();
    let mut deps = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, node) in proto.node.iter().enumerate() {
        let mut read = BTreeSet::new();
        names_read(node, &mut read);
        let prods: BTreeSet<usize> = read.iter().filter_map(|r| producer.get(r.as_str()).copied()).collect();
        for p in prods {
            if p == i {
                return Err(scope.err(format!("node '{}' reads its own output", node.name)));
            }
            deps[i] += 1;
            users[p].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| deps[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            deps[u] -= 1;
            if deps[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < n {
        let stuck = (0..n).find(|&i| deps[i] > 0).map(|i| proto.node[i].name.clone()).unwrap_or_default();
        return Err(scope.err(format!("the graph has a cycle through node '{stuck}'")));
    }
    Ok(order)
}

fn add_node(
    scope: &mut Scope,
    proto: &NodeProto,
    index: usize,
    declared: &HashMap<String, Fact>,
    env: &ImportEnv,
) -> Result<()> {
    let name = if proto.name.is_empty() { format!("{}_{index}", proto.op_type) } else { proto.name.clone() };
    let node_err = |msg: String| OnnxError::Node { node: name.clone(), op_type: proto.op_type.clone(), msg };
    let mut inputs: Vec<Option<OutletId>> = Vec::with_capacity(proto.input.len());
    for i in &proto.input {
        if i.is_empty() {
            inputs.push(None);
        } else {
            let o = scope
                .outlet(i)
                .ok_or_else(|| node_err(format!("input '{i}' is not produced by any node, input or initializer")))?;
            inputs.push(Some(o));
        }
    }
    let opset = env
        .opset(&proto.domain)
        .ok_or_else(|| node_err(format!("domain '{}' is not imported by the model", proto.domain)))?;
    let input_facts = inputs.iter().map(|i| i.and_then(|o| scope.graph.fact(o).ok().cloned())).collect();
    let mut named = proto.clone();
    named.name = name.clone();
    let op = {
        let mut ctx = NodeCtx { proto: &named, opset, inputs: input_facts, resolver: scope, env };
        crate::ops::convert(&mut ctx)?
    };
    for c in captured_names(&op.subgraphs()) {
        let o = scope
            .outlet(&c)
            .ok_or_else(|| node_err(format!("subgraph reads '{c}', which is not defined in any enclosing graph")))?;
        inputs.push(Some(o));
    }
    let outputs: Vec<String> = proto
        .output
        .iter()
        .enumerate()
        .map(|(k, o)| if o.is_empty() { format!("{name}:unused{k}") } else { o.clone() })
        .collect();
    let node = scope.graph.add_node(name, op, inputs, outputs.clone())?;
    for (slot, out) in outputs.iter().enumerate() {
        if let Some(d) = declared.get(out) {
            merge_declared(&mut scope.graph.nodes[node].outputs[slot].fact, d);
        }
        scope.names.insert(out.clone(), OutletId::new(node, slot));
    }
    Ok(())
}

/// Fills what inference left unknown from the type the file declares.
fn merge_declared(fact: &mut Fact, declared: &Fact) {
    if fact.dtype.is_none() {
        fact.dtype = declared.dtype;
    }
    match (&mut fact.shape, &declared.shape) {
        (None, Some(s)) => fact.shape = Some(s.clone()),
        (Some(inferred), Some(d)) if inferred.rank() == d.rank() => {
            for (i, dd) in inferred.0.iter_mut().zip(&d.0) {
                if *i == Dim::Unknown {
                    *i = dd.clone();
                }
            }
        }
        _ => {}
    }
}
