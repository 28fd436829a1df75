//! Runs a graph node by node in dependency order, freeing each value after its last use.

use std::collections::HashMap;

use kiln_ir::{Dim, Fact, Graph, Node, Op, OutletId, Tensor, captured_names};

use crate::kernels;
use crate::{CpuError, Result};

/// Values captured by subgraphs, by name.
pub type Captures = HashMap<String, Tensor>;

/// Runs the nested graphs of control-flow ops. The CPU executor is the default; another
/// backend passes its own (kiln-cuda runs If/Loop/Scan bodies on the GPU while the
/// control — the condition, the iteration, scan slicing — stays in these kernels).
pub trait GraphRunner {
    /// Runs `graph` with its formal inputs and the outer values it captures (by name).
    fn run_graph(&self, graph: &Graph, inputs: &[Tensor], captures: &Captures) -> Result<Vec<Tensor>>;
}

/// What a kernel may ask of the executor: running nested graphs (If/Loop/Scan).
#[derive(Default)]
pub struct EvalContext<'a> {
    runner: Option<&'a dyn GraphRunner>,
}

impl<'a> EvalContext<'a> {
    /// Nested graphs run by `runner` instead of the CPU executor.
    pub fn with_runner(runner: &'a dyn GraphRunner) -> EvalContext<'a> {
        EvalContext { runner: Some(runner) }
    }

    /// Runs `graph` with its formal inputs and the outer values it captures (by name).
    pub fn run_graph(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        captures: &HashMap<String, Tensor>,
    ) -> Result<Vec<Tensor>> {
        if let Some(r) = self.runner {
            return r.run_graph(graph, inputs, captures);
        }
        let mut bound: Vec<(OutletId, Tensor)> = Vec::new();
        for c in &graph.captures {
            let t = captures
                .get(&c.name)
                .ok_or_else(|| CpuError::Graph(format!("captured value '{}' not provided", c.name)))?;
            bound.push((c.outlet, t.clone()));
        }
        if inputs.len() != graph.inputs.len() {
            return Err(CpuError::Graph(format!(
                "subgraph '{}' takes {} inputs, got {}",
                graph.name,
                graph.inputs.len(),
                inputs.len()
            )));
        }
        bound.extend(graph.inputs.iter().copied().zip(inputs.iter().cloned()));
        execute(graph, bound)
    }

    /// Splits a node's inputs into its formal inputs and the values its subgraphs
    /// capture (by name).
    pub fn split_captures(
        &self,
        subgraphs: &[&Graph],
        inputs: &[Option<Tensor>],
    ) -> Result<(Vec<Option<Tensor>>, Captures)> {
        let names = captured_names(subgraphs);
        let n_formal =
            inputs.len().checked_sub(names.len()).ok_or_else(|| CpuError::Graph("missing captured inputs".into()))?;
        let mut caps = HashMap::new();
        for (name, t) in names.into_iter().zip(&inputs[n_formal..]) {
            let t = t.clone().ok_or_else(|| CpuError::Graph(format!("captured value '{name}' is missing")))?;
            caps.insert(name, t);
        }
        Ok((inputs[..n_formal].to_vec(), caps))
    }
}

/// Runs `graph` on `inputs` given in the order of `graph.inputs`; returns its outputs.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        return Err(CpuError::Graph(format!("the graph takes {} inputs, got {}", graph.inputs.len(), inputs.len())));
    }
    let mut symbols: HashMap<String, usize> = HashMap::new();
    for (o, t) in graph.inputs.iter().zip(inputs) {
        let outlet = graph.outlet(*o)?;
        check_input(&outlet.name, &outlet.fact, t, &mut symbols)?;
    }
    execute(graph, graph.inputs.iter().copied().zip(inputs.iter().cloned()).collect())
}

/// Runs `graph` with inputs given by name (every graph input must be given).
pub fn run_named(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
    for name in inputs.keys() {
        if !graph.inputs.iter().any(|o| graph.outlet_name(*o) == name) {
            return Err(CpuError::Input { name: name.clone(), msg: "the model has no input of this name".into() });
        }
    }
    let ordered = graph
        .inputs
        .iter()
        .map(|o| {
            let name = graph.outlet_name(*o);
            inputs.get(name).cloned().ok_or_else(|| CpuError::Input { name: name.to_string(), msg: "not given".into() })
        })
        .collect::<Result<Vec<_>>>()?;
    run(graph, &ordered)
}

/// Checks a given input against the graph's declared dtype and shape.
fn check_input(name: &str, fact: &Fact, t: &Tensor, symbols: &mut HashMap<String, usize>) -> Result<()> {
    let err = |msg: String| CpuError::Input { name: name.to_string(), msg };
    if let Some(d) = fact.dtype
        && d != t.dtype()
    {
        return Err(err(format!("expected dtype {d}, got {}", t.dtype())));
    }
    let Some(shape) = &fact.shape else { return Ok(()) };
    if shape.rank() != t.rank() {
        return Err(err(format!(
            "expected shape {shape}, got {:?} (rank {} vs {})",
            t.shape(),
            shape.rank(),
            t.rank()
        )));
    }
    for (i, (d, &n)) in shape.0.iter().zip(t.shape()).enumerate() {
        match d {
            Dim::Known(k) if *k != n => {
                return Err(err(format!("expected shape {shape}, got {:?} (dim {i})", t.shape())));
            }
            Dim::Sym(s) => {
                let bound = *symbols.entry(s.to_string()).or_insert(n);
                if bound != n {
                    return Err(err(format!("dim {i} ('{s}') is {n}, but '{s}' is {bound} in another input")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn execute(graph: &Graph, bound: Vec<(OutletId, Tensor)>) -> Result<Vec<Tensor>> {
    let mut values: Vec<Vec<Option<Tensor>>> = graph.nodes.iter().map(|n| vec![None; n.outputs.len()]).collect();
    for (o, t) in bound {
        values[o.node][o.slot] = Some(t);
    }
    let mut remaining = graph.use_counts();
    let ctx = EvalContext::default();
    for id in graph.eval_order()? {
        let node = &graph.nodes[id];
        if matches!(node.op, Op::Input) {
            if values[id][0].is_none() {
                return Err(CpuError::Graph(format!("input '{}' has no value", node.name)));
            }
            continue;
        }
        let inputs = node
            .inputs
            .iter()
            .map(|i| i.map(|o| take_input(&mut values, &mut remaining, o)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let outputs = eval_node(node, &inputs, &ctx)?;
        if outputs.len() < node.outputs.len() {
            return Err(CpuError::Graph(format!(
                "node '{}' produced {} outputs, {} expected",
                node.name,
                outputs.len(),
                node.outputs.len()
            )));
        }
        for (slot, t) in outputs.into_iter().enumerate().take(node.outputs.len()) {
            if remaining.contains_key(&OutletId::new(id, slot)) {
                values[id][slot] = Some(t);
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|o| {
            values[o.node][o.slot]
                .clone()
                .ok_or_else(|| CpuError::Graph(format!("output '{}' was not computed", graph.outlet_name(*o))))
        })
        .collect()
}

/// The value of `o`, dropped from the table after its last reader.
fn take_input(
    values: &mut [Vec<Option<Tensor>>],
    remaining: &mut HashMap<OutletId, usize>,
    o: OutletId,
) -> Result<Tensor> {
    let slot = &mut values[o.node][o.slot];
    let t = slot.clone().ok_or_else(|| CpuError::Graph(format!("value {o} read before it was computed")))?;
    if let Some(n) = remaining.get_mut(&o) {
        *n -= 1;
        if *n == 0 {
            *slot = None;
        }
    }
    Ok(t)
}

fn eval_node(node: &Node, inputs: &[Option<Tensor>], ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let wrap =
        |e: CpuError| CpuError::Node { node: node.name.clone(), op: node.op.name().to_string(), source: Box::new(e) };
    eval_op(&node.op, inputs, node.outputs.len(), ctx).map_err(wrap)
}

/// Evaluates one op on its inputs (`None` for omitted optional ones); returns at least
/// `n_outputs` tensors. The optimiser folds constants with this.
pub fn eval_op(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize, ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let n = n_outputs;
    match op {
        Op::Input => Err(CpuError::Graph("input node evaluated".into())),
        Op::Constant(t) => Ok(vec![t.clone()]),
        Op::Elementwise(op) => kernels::elementwise::eval(op, inputs, n, ctx),
        Op::Movement(op) => kernels::movement::eval(op, inputs, n, ctx),
        Op::Reduce(op) => kernels::reduce::eval(op, inputs, n, ctx),
        Op::Nn(op) => kernels::nn::eval(op, inputs, n, ctx),
        Op::Vision(op) => kernels::vision::eval(op, inputs, n, ctx),
        Op::Attention(op) => kernels::attention::eval(op, inputs, n, ctx),
        Op::Quant(op) => kernels::quant::eval(op, inputs, n, ctx),
        Op::Recurrent(op) => kernels::recurrent::eval(op, inputs, n, ctx),
        Op::Control(op) => kernels::control::eval(op, inputs, n, ctx),
        Op::Fused(op) => kernels::fused::eval(op, inputs, n, ctx),
    }
}
