//! Binding a graph to the inputs of one build: their shapes (a symbolic `batch` becomes
//! a number everywhere) and, for *shape tensors*, their values.
//!
//! A shape tensor (TensorRT's term) is a graph input that is only read as an operand
//! the CUDA lowering needs on the host: a Reshape's shape, Slice bounds, Reduce axes,
//! Resize scales, a TopK's k… Binding its value makes every shape downstream of it
//! known, so the graph can be planned; the executor then checks each run's value of that
//! input against the bound one (another value needs another build).

use std::collections::HashMap;

use kiln_ir::{DType, Dim, Graph, NodeId, Op, OutletId, Shape, Tensor};

use crate::{CudaError, Result};

/// Largest shape tensor bound by value (elements): shape operands are short.
const MAX_SHAPE_TENSOR: usize = 1024;

/// Whether input `slot` of `op` is an operand the CUDA lowering reads on the host.
pub fn is_host_operand(op: &Op, slot: usize) -> bool {
    let name = op.name();
    match slot {
        0 => matches!(name, "ConstantOfShape" | "Range"),
        1 if name.starts_with("Reduce") => true,
        1 => matches!(
            name,
            "Reshape"
                | "Expand"
                | "Tile"
                | "Squeeze"
                | "Unsqueeze"
                | "Split"
                | "TopK"
                | "Upsample"
                | "OneHot"
                | "Trilu"
                | "CumSum"
                | "CumProd"
                | "CenterCropPad"
                | "AffineGrid"
                | "Slice"
                | "Pad"
                | "Resize"
                | "Col2Im"
                | "Clip"
                | "Dropout"
                | "Range"
        ),
        2 => matches!(name, "Slice" | "Pad" | "Resize" | "Col2Im" | "NonMaxSuppression" | "Clip" | "Dropout" | "Range"),
        3 => matches!(name, "Slice" | "Pad" | "Resize" | "NonMaxSuppression"),
        4 => matches!(name, "Slice" | "NonMaxSuppression"),
        _ => false,
    }
}

/// Per graph input, whether it is a shape tensor: read by at least one node, and every
/// value computed from it (through any ops without subgraphs) ends only in host-operand
/// positions, never in a graph output or a data operand.
pub fn shape_tensor_inputs(graph: &Graph) -> Vec<bool> {
    let mut uses: HashMap<OutletId, Vec<(NodeId, usize)>> = HashMap::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        for (slot, i) in node.inputs.iter().enumerate() {
            if let Some(o) = i {
                uses.entry(*o).or_default().push((n, slot));
            }
        }
    }
    let mut memo: HashMap<OutletId, bool> = HashMap::new();
    graph.inputs.iter().map(|&o| host_only(graph, &uses, o, &mut memo)).collect()
}

/// Whether every use of `o` is (transitively) a host operand.
fn host_only(
    graph: &Graph,
    uses: &HashMap<OutletId, Vec<(NodeId, usize)>>,
    o: OutletId,
    memo: &mut HashMap<OutletId, bool>,
) -> bool {
    if let Some(&h) = memo.get(&o) {
        return h;
    }
    memo.insert(o, false); // a cycle (malformed graph) is not host-only
    let users = uses.get(&o).map(Vec::as_slice).unwrap_or_default();
    let h = !graph.outputs.contains(&o)
        && !users.is_empty()
        && users.iter().all(|&(n, slot)| {
            let node = &graph.nodes[n];
            is_host_operand(&node.op, slot)
                || (node.op.subgraphs().is_empty()
                    && !node.outputs.is_empty()
                    && (0..node.outputs.len()).all(|s| host_only(graph, uses, OutletId::new(n, s), memo)))
        });
    memo.insert(o, h);
    h
}

/// Which inputs [`bind_inputs`] binds by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueBinding {
    /// Shape tensors only ([`shape_tensor_inputs`]).
    ShapeTensors,
    /// Shape tensors and every other integer (i32/i64) input of at most 8 elements: a
    /// specialisation for graphs whose shapes depend on small integer inputs that are
    /// also read as data (a window's size, a grid's size). The run-time check still
    /// refuses another value. Float and bool inputs are data and never bound.
    SmallInputs,
}

/// [`bind_input_shapes`] with the shapes of `inputs`, and the values of the inputs that
/// `binding` names bound too.
pub fn bind_inputs(graph: &Graph, inputs: &[Tensor], binding: ValueBinding) -> Result<Graph> {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let shape_tensors = shape_tensor_inputs(graph);
    let values: Vec<Option<Tensor>> = inputs
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let shape_tensor = shape_tensors.get(k) == Some(&true) && t.len() <= MAX_SHAPE_TENSOR;
            let small =
                binding == ValueBinding::SmallInputs && matches!(t.dtype(), DType::I32 | DType::I64) && t.len() <= 8;
            (shape_tensor || small).then(|| t.clone())
        })
        .collect();
    let dtypes: Vec<Option<DType>> = inputs.iter().map(|t| Some(t.dtype())).collect();
    bind(graph, &shapes, &values, &dtypes)
}

/// Whether every value of `graph` has a known dtype and shape.
pub fn fully_known(graph: &Graph) -> bool {
    graph
        .nodes
        .iter()
        .flat_map(|n| &n.outputs)
        .all(|o| o.fact.dtype.is_some() && o.fact.shape.as_ref().is_some_and(|s| s.as_known().is_some()))
}

/// A copy of `graph` whose inputs have the given shapes, every fact inferred again (so
/// a symbolic `batch` becomes a number everywhere). Shapes are given in input order.
pub fn bind_input_shapes(graph: &Graph, shapes: &[Vec<usize>]) -> Result<Graph> {
    bind(graph, shapes, &vec![None; shapes.len()], &vec![None; shapes.len()])
}

/// Binds input `k` to `shapes[k]` and, where given, to `values[k]` and `dtypes[k]` (the
/// dtype of an input the graph leaves untyped, as subgraph inputs may be).
fn bind(graph: &Graph, shapes: &[Vec<usize>], values: &[Option<Tensor>], dtypes: &[Option<DType>]) -> Result<Graph> {
    if shapes.len() != graph.inputs.len() {
        return Err(CudaError::Graph(format!(
            "the graph has {} inputs, {} shapes given",
            graph.inputs.len(),
            shapes.len()
        )));
    }
    let order = graph.eval_order().map_err(|e| CudaError::Graph(e.to_string()))?;
    let mut out = Graph::new(graph.name.clone());
    out.captures = graph.captures.clone();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let gerr = |e: kiln_ir::IrError| CudaError::Graph(e.to_string());
    for &n in &order {
        let node = &graph.nodes[n];
        let inputs: Vec<Option<OutletId>> =
            node.inputs.iter().map(|i| i.map(|o| OutletId::new(map[&o.node], o.slot))).collect();
        let id = if let Some(k) = graph.inputs.iter().position(|o| o.node == n) {
            let mut fact = node.outputs[0].fact.clone();
            let shape = &shapes[k];
            if let Some(declared) = &fact.shape {
                let fits = declared.rank() == shape.len()
                    && declared.0.iter().zip(shape).all(|(d, &s)| !matches!(d, Dim::Known(k) if *k != s));
                if !fits {
                    return Err(CudaError::Input {
                        name: node.outputs[0].name.clone(),
                        msg: format!("shape {shape:?} does not fit the declared {declared}"),
                    });
                }
            }
            if let Some(v) = &values[k]
                && fact.dtype.is_some_and(|d| d != v.dtype())
            {
                return Err(CudaError::Input {
                    name: node.outputs[0].name.clone(),
                    msg: format!("dtype {} but the graph declares {}", v.dtype(), fact.dtype.unwrap_or(v.dtype())),
                });
            }
            if let (Some(want), Some(d)) = (fact.dtype, dtypes[k])
                && want != d
            {
                return Err(CudaError::Input {
                    name: node.outputs[0].name.clone(),
                    msg: format!("dtype {d} but the graph declares {want}"),
                });
            }
            fact.dtype = fact.dtype.or(dtypes[k]);
            fact.shape = Some(Shape::known(shape));
            fact.value = values[k].clone();
            out.push_node(node.name.clone(), node.op.clone(), inputs, vec![(node.outputs[0].name.clone(), fact)])
                .map_err(gerr)?
        } else if matches!(node.op, Op::Constant(_)) {
            let outs = node.outputs.iter().map(|o| (o.name.clone(), o.fact.clone())).collect();
            out.push_node(node.name.clone(), node.op.clone(), inputs, outs).map_err(gerr)?
        } else {
            let names = node.outputs.iter().map(|o| o.name.clone()).collect();
            out.add_node(node.name.clone(), node.op.clone(), inputs, names).map_err(gerr)?
        };
        map.insert(n, id);
    }
    out.inputs = graph.inputs.iter().map(|o| OutletId::new(map[&o.node], o.slot)).collect();
    out.outputs = graph.outputs.iter().map(|o| OutletId::new(map[&o.node], o.slot)).collect();
    Ok(out)
}
