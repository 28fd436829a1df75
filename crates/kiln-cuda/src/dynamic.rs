//! Graphs whose shapes depend on data (NonZero, Compress, NonMaxSuppression) or that
//! branch and loop (If, Loop, Scan) run in *segments*, as TensorRT does with
//! data-dependent shapes:
//!
//! 1. The graph is prepared for the inputs at hand (the caller binds shapes and shape
//!    tensors and optimises again); if every shape is then known it is one executor.
//! 2. Otherwise the *prefix* — every node whose shapes are known and that depends on no
//!    unknown one — runs as one executor, up to the first *boundary* node.
//! 3. The boundary runs on its own: NonZero and NonMaxSuppression as GPU kernels that
//!    report how many results they wrote (`launch/dynamic.rs`); If, Loop and Scan with
//!    their control on the host (kiln-cpu's control kernels) and every body run by this
//!    same runner on the GPU.
//! 4. The rest of the graph, with the prefix's values and the boundary's results as its
//!    inputs, is run the same way.
//!
//! Compress is rewritten first as Gather(x, NonZero(condition)), and NonZero of a
//! non-bool tensor as NonZero(Cast<bool>), so that one NonZero kernel serves both.
//! Values cross segments through the host.

use std::collections::{HashMap, HashSet};

use kiln_ir::ops::{ElementwiseOp, MovementOp, VisionOp};
use kiln_ir::{DType, Fact, Graph, NodeId, Op, OutletId, Shape, Tensor};

use crate::bind::fully_known;
use crate::launch::{Kernels, Launcher};
use crate::{CudaError, Device, Executor, Options, Result};

/// Makes a graph ready for planning once its inputs are known: binds their shapes and
/// shape tensors and optimises again (the caller's builder does this).
pub type Prepare<'a> = dyn Fn(&Graph, &[Tensor]) -> Result<Graph> + 'a;

/// Runs graphs of any shape behaviour on one GPU (see the module docs).
pub struct DynamicRunner<'a> {
    dev: &'a Device,
    options: Options,
    prepare: &'a Prepare<'a>,
    kernels: std::sync::OnceLock<Kernels>,
    /// Executors built (one per segment and per body run).
    pub builds: std::cell::Cell<usize>,
    /// Why the last body failed (kiln-cpu's control kernels only carry a message).
    body_error: std::cell::RefCell<Option<CudaError>>,
}

impl<'a> DynamicRunner<'a> {
    pub fn new(dev: &'a Device, options: Options, prepare: &'a Prepare<'a>) -> DynamicRunner<'a> {
        DynamicRunner {
            dev,
            options,
            prepare,
            kernels: std::sync::OnceLock::new(),
            builds: 0.into(),
            body_error: None.into(),
        }
    }

    /// Runs `graph` on `inputs` (in the order of `graph.inputs`).
    pub fn run(&self, graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let canonical = canonicalize(graph)?;
        let prepared = (self.prepare)(&canonical, inputs)?;
        if fully_known(&prepared) && !has_control(&prepared) {
            self.builds.set(self.builds.get() + 1);
            return Executor::new(self.dev, &prepared, self.options.clone())?.run(inputs);
        }
        self.run_segments(&prepared, inputs)
    }

    fn launcher(&self) -> Result<Launcher<'_>> {
        if self.kernels.get().is_none() {
            let k = Kernels::new(self.dev)?;
            let _ = self.kernels.set(k);
        }
        let kernels = self.kernels.get().ok_or_else(|| CudaError::Graph("kernels not loaded".into()))?;
        Ok(Launcher::new(self.dev, kernels))
    }

    fn run_segments(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let order = g.eval_order().map_err(|e| CudaError::Graph(e.to_string()))?;
        let ready = ready_nodes(g, &order);
        let boundary = order
            .iter()
            .copied()
            .find(|&n| !ready.contains(&n) && g.nodes[n].inputs.iter().flatten().all(|o| ready.contains(&o.node)))
            .ok_or_else(|| CudaError::Graph("no node of the graph can run next".into()))?;
        let node = &g.nodes[boundary];

        // Values of the prefix that later nodes (or the graph's outputs) read.
        let mut cut: Vec<OutletId> = Vec::new();
        let mut seen = HashSet::new();
        let reads = order
            .iter()
            .filter(|n| !ready.contains(n))
            .flat_map(|&n| g.nodes[n].inputs.iter().flatten().copied())
            .chain(g.outputs.iter().copied());
        for o in reads {
            let is_const = matches!(g.nodes[o.node].op, Op::Constant(_));
            if ready.contains(&o.node) && !is_const && seen.insert(o) {
                cut.push(o);
            }
        }
        let mut values: HashMap<OutletId, Tensor> = g.inputs.iter().copied().zip(inputs.iter().cloned()).collect();
        let computed: Vec<OutletId> = cut.iter().copied().filter(|o| !values.contains_key(o)).collect();
        if !computed.is_empty() {
            let prefix_nodes: Vec<NodeId> = order.iter().copied().filter(|n| ready.contains(n)).collect();
            let as_inputs: Vec<(OutletId, Fact)> =
                g.inputs.iter().map(|&o| Ok((o, g.fact(o).map_err(graph_err)?.clone()))).collect::<Result<_>>()?;
            let prefix = extract(g, &prefix_nodes, &as_inputs, &computed)?;
            self.builds.set(self.builds.get() + 1);
            let outs = Executor::new(self.dev, &prefix, self.options.clone())?.run(inputs)?;
            values.extend(computed.iter().copied().zip(outs));
        }

        let args: Vec<Option<Tensor>> =
            node.inputs.iter().map(|i| i.map(|o| value_of(g, &values, o)).transpose()).collect::<Result<_>>()?;
        let results = self.run_boundary(g, boundary, &args)?;
        for (s, t) in results.into_iter().enumerate() {
            values.insert(OutletId::new(boundary, s), t);
        }

        // The rest: every node not yet run, fed by the values so far.
        let rest_nodes: Vec<NodeId> = order.iter().copied().filter(|&n| !ready.contains(&n) && n != boundary).collect();
        let mut feeds: Vec<OutletId> = cut;
        feeds.extend((0..node.outputs.len()).map(|s| OutletId::new(boundary, s)));
        let needed: HashSet<OutletId> = rest_nodes
            .iter()
            .flat_map(|&n| g.nodes[n].inputs.iter().flatten().copied())
            .chain(g.outputs.iter().copied())
            .collect();
        feeds.retain(|o| needed.contains(o));
        if rest_nodes.is_empty() {
            return g.outputs.iter().map(|&o| value_of(g, &values, o)).collect();
        }
        let as_inputs: Vec<(OutletId, Fact)> = feeds.iter().map(|&o| (o, fact_of(&values[&o]))).collect();
        let rest = extract(g, &rest_nodes, &as_inputs, &g.outputs)?;
        let rest_inputs: Vec<Tensor> = feeds.iter().map(|o| values[o].clone()).collect();
        self.run(&rest, &rest_inputs)
    }

    /// Runs the boundary node `n` on its input values.
    fn run_boundary(&self, g: &Graph, n: NodeId, args: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
        let node = &g.nodes[n];
        let named =
            |e: CudaError| CudaError::Node { node: node.name.clone(), op: node.op.name().into(), source: Box::new(e) };
        let arg = |i: usize| args.get(i).and_then(Option::as_ref);
        let result = match &node.op {
            Op::Control(_) => {
                let ctx = kiln_cpu::EvalContext::with_runner(self);
                kiln_cpu::eval_op(&node.op, args, node.outputs.len(), &ctx).map_err(|e| CudaError::Graph(e.to_string()))
            }
            Op::Movement(MovementOp::NonZero) => {
                let x = arg(0).ok_or_else(|| CudaError::Graph("NonZero has no input".into()))?;
                self.launcher()?.nonzero(x).map(|t| vec![t])
            }
            Op::Vision(VisionOp::NonMaxSuppression { center_point_box }) => {
                let (boxes, scores) = match (arg(0), arg(1)) {
                    (Some(b), Some(s)) => (b, s),
                    _ => return Err(named(CudaError::Graph("boxes and scores are required".into()))),
                };
                let first = |i: usize| -> Result<Option<f64>> {
                    arg(i)
                        .map(|t| t.to_f64_vec().map_err(|e| CudaError::Graph(e.to_string())))
                        .transpose()
                        .map(|v| v.and_then(|v| v.first().copied()))
                };
                let max_out = first(2)?.unwrap_or(0.0).max(0.0) as usize;
                let iou = first(3)?.unwrap_or(0.0) as f32;
                let score_min = first(4)?.map(|v| v as f32);
                let f32s = |t: &Tensor| -> Result<Tensor> {
                    if t.dtype() == DType::F32 {
                        return Ok(t.clone());
                    }
                    let v: Vec<f32> = t
                        .to_f64_vec()
                        .map_err(|e| CudaError::Graph(e.to_string()))?
                        .iter()
                        .map(|&x| x as f32)
                        .collect();
                    Tensor::from_vec(t.shape().to_vec(), v).map_err(|e| CudaError::Graph(e.to_string()))
                };
                self.launcher()?
                    .nms(&f32s(boxes)?, &f32s(scores)?, max_out, iou, score_min, *center_point_box)
                    .map(|t| vec![t])
            }
            op => {
                let unknown =
                    node.outputs.iter().find(|o| o.fact.shape.as_ref().is_none_or(|s| s.as_known().is_none()));
                return Err(CudaError::UnknownShape {
                    value: unknown.map_or_else(|| node.name.clone(), |o| o.name.clone()),
                    fact: format!(
                        "{} (its shape depends on data that {} cannot report at run time)",
                        unknown.map_or_else(String::new, |o| o.fact.to_string()),
                        op.name()
                    ),
                });
            }
        };
        result.map_err(named)
    }
}

impl kiln_cpu::GraphRunner for DynamicRunner<'_> {
    /// A body of If/Loop/Scan on the GPU: its captured outer values become inputs.
    fn run_graph(
        &self,
        graph: &Graph,
        inputs: &[Tensor],
        captures: &kiln_cpu::Captures,
    ) -> kiln_cpu::Result<Vec<Tensor>> {
        let mut body = graph.clone();
        let mut all = inputs.to_vec();
        for c in &graph.captures {
            let t = captures
                .get(&c.name)
                .ok_or_else(|| kiln_cpu::CpuError::Graph(format!("captured value '{}' not provided", c.name)))?;
            body.inputs.push(c.outlet);
            all.push(t.clone());
        }
        body.captures.clear();
        self.run(&body, &all).map_err(|e| {
            let msg = format!("on CUDA: {e}");
            *self.body_error.borrow_mut() = Some(e);
            kiln_cpu::CpuError::Graph(msg)
        })
    }
}

fn graph_err(e: kiln_ir::IrError) -> CudaError {
    CudaError::Graph(e.to_string())
}

/// Whether `g` has control flow (which always runs in segments).
pub fn has_control(g: &Graph) -> bool {
    g.nodes.iter().any(|n| matches!(n.op, Op::Control(_)))
}

fn known(g: &Graph, n: NodeId) -> bool {
    g.nodes[n]
        .outputs
        .iter()
        .all(|o| o.fact.dtype.is_some() && o.fact.shape.as_ref().is_some_and(|s| s.as_known().is_some()))
}

/// Nodes that can run in the prefix: shapes known, no control flow, and every input
/// from such a node.
fn ready_nodes(g: &Graph, order: &[NodeId]) -> HashSet<NodeId> {
    let mut ready = HashSet::new();
    for &n in order {
        let node = &g.nodes[n];
        let ok = known(g, n)
            && !matches!(node.op, Op::Control(_) | Op::Movement(MovementOp::NonZero))
            && !matches!(node.op, Op::Vision(VisionOp::NonMaxSuppression { .. }))
            && node.inputs.iter().flatten().all(|o| ready.contains(&o.node));
        if ok {
            ready.insert(n);
        }
    }
    ready
}

/// A value: computed, or a constant's.
fn value_of(g: &Graph, values: &HashMap<OutletId, Tensor>, o: OutletId) -> Result<Tensor> {
    if let Some(t) = values.get(&o) {
        return Ok(t.clone());
    }
    match &g.nodes[o.node].op {
        Op::Constant(t) => Ok(t.clone()),
        _ => Err(CudaError::Graph(format!("value '{}' was not computed", g.outlet_name(o)))),
    }
}

/// The nodes `nodes` (in order) of `g` as a graph of their own: `as_inputs` become its
/// inputs (with the given facts), constants they read are copied, `outputs` its outputs.
fn extract(g: &Graph, nodes: &[NodeId], as_inputs: &[(OutletId, Fact)], outputs: &[OutletId]) -> Result<Graph> {
    let mut out = Graph::new(g.name.clone());
    let mut map: HashMap<OutletId, OutletId> = HashMap::new();
    for (o, fact) in as_inputs {
        let name = g.outlet_name(*o).to_string();
        let id = out.push_node(name.clone(), Op::Input, vec![], vec![(name, fact.clone())]).map_err(graph_err)?;
        map.insert(*o, OutletId::new(id, 0));
    }
    out.inputs = as_inputs.iter().map(|(o, _)| map[o]).collect();
    let resolve = |out: &mut Graph, map: &mut HashMap<OutletId, OutletId>, o: OutletId| -> Result<OutletId> {
        if let Some(&m) = map.get(&o) {
            return Ok(m);
        }
        let src = &g.nodes[o.node];
        if !matches!(src.op, Op::Constant(_)) {
            return Err(CudaError::Graph(format!("value '{}' is not available to this segment", g.outlet_name(o))));
        }
        let outs = src.outputs.iter().map(|v| (v.name.clone(), v.fact.clone())).collect();
        let id = out.push_node(src.name.clone(), src.op.clone(), vec![], outs).map_err(graph_err)?;
        for s in 0..src.outputs.len() {
            map.insert(OutletId::new(o.node, s), OutletId::new(id, s));
        }
        Ok(map[&o])
    };
    for &n in nodes {
        let node = &g.nodes[n];
        if matches!(node.op, Op::Input) {
            continue;
        }
        let inputs = node
            .inputs
            .iter()
            .map(|i| i.map(|o| resolve(&mut out, &mut map, o)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let outs = node.outputs.iter().map(|v| (v.name.clone(), v.fact.clone())).collect();
        let id = out.push_node(node.name.clone(), node.op.clone(), inputs, outs).map_err(graph_err)?;
        for s in 0..node.outputs.len() {
            map.insert(OutletId::new(n, s), OutletId::new(id, s));
        }
    }
    out.outputs = outputs.iter().map(|&o| resolve(&mut out, &mut map, o)).collect::<Result<_>>()?;
    Ok(out)
}

/// Compress as Gather of NonZero, and NonZero of bools only.
fn canonicalize(g: &Graph) -> Result<Graph> {
    let needs = g.nodes.iter().any(|n| match &n.op {
        Op::Movement(MovementOp::Compress { .. }) => true,
        Op::Movement(MovementOp::NonZero) => {
            n.inputs.first().copied().flatten().and_then(|o| g.fact(o).ok()?.dtype) != Some(DType::Bool)
        }
        _ => false,
    });
    if !needs {
        return Ok(g.clone());
    }
    let order = g.eval_order().map_err(graph_err)?;
    let mut out = Graph::new(g.name.clone());
    out.captures = g.captures.clone();
    let mut map: HashMap<OutletId, OutletId> = HashMap::new();
    for &n in &order {
        let node = &g.nodes[n];
        let inputs: Vec<Option<OutletId>> = node.inputs.iter().map(|i| i.map(|o| map[&o])).collect();
        let names: Vec<String> = node.outputs.iter().map(|o| o.name.clone()).collect();
        let add = |out: &mut Graph, name: String, op: Op, ins: Vec<Option<OutletId>>| -> Result<OutletId> {
            out.add_node(name.clone(), op, ins, vec![name]).map(|id| OutletId::new(id, 0)).map_err(graph_err)
        };
        let id = match (&node.op, inputs.as_slice()) {
            (Op::Input | Op::Constant(_), _) => {
                let outs = node.outputs.iter().map(|o| (o.name.clone(), o.fact.clone())).collect();
                out.push_node(node.name.clone(), node.op.clone(), inputs, outs).map_err(graph_err)?
            }
            (Op::Movement(MovementOp::NonZero), [Some(x)])
                if out.fact(*x).ok().and_then(|f| f.dtype) != Some(DType::Bool) =>
            {
                let cast = Op::Elementwise(ElementwiseOp::Cast { to: DType::Bool, saturate: true });
                let b = add(&mut out, format!("{}/to_bool", node.name), cast, vec![Some(*x)])?;
                out.add_node(node.name.clone(), node.op.clone(), vec![Some(b)], names).map_err(graph_err)?
            }
            (Op::Movement(MovementOp::Compress { axis }), [Some(x), Some(c)]) => {
                let minus_one = Tensor::from_vec(vec![1], vec![-1i64]).map_err(|e| CudaError::Graph(e.to_string()))?;
                let flat = add(&mut out, format!("{}/flat_shape", node.name), Op::Constant(minus_one), vec![])?;
                let reshape = || Op::Movement(MovementOp::Reshape { allowzero: false });
                let nz =
                    add(&mut out, format!("{}/nonzero", node.name), Op::Movement(MovementOp::NonZero), vec![Some(*c)])?;
                let idx = add(&mut out, format!("{}/indices", node.name), reshape(), vec![Some(nz), Some(flat)])?;
                let (data, gaxis) = match axis {
                    Some(a) => (*x, *a),
                    None => (add(&mut out, format!("{}/flat", node.name), reshape(), vec![Some(*x), Some(flat)])?, 0),
                };
                let gather = Op::Movement(MovementOp::Gather { axis: gaxis });
                out.add_node(node.name.clone(), gather, vec![Some(data), Some(idx)], names).map_err(graph_err)?
            }
            _ => {
                let outs: Vec<(String, Fact)> = node.outputs.iter().map(|o| (o.name.clone(), o.fact.clone())).collect();
                match out.add_node(node.name.clone(), node.op.clone(), inputs.clone(), names) {
                    Ok(id) => id,
                    Err(_) => out.push_node(node.name.clone(), node.op.clone(), inputs, outs).map_err(graph_err)?,
                }
            }
        };
        for s in 0..node.outputs.len() {
            map.insert(OutletId::new(n, s), OutletId::new(id, s));
        }
    }
    out.inputs = g.inputs.iter().map(|o| map[o]).collect();
    out.outputs = g.outputs.iter().map(|o| map[o]).collect();
    Ok(out)
}

/// The fact of a concrete tensor.
fn fact_of(t: &Tensor) -> Fact {
    Fact::new(t.dtype(), Shape::known(t.shape()))
}
