//! Elementwise chains and DAGs: float elementwise ops (unary maps, Add/Sub/Mul/Div/Pow,
//! PRelu, Clip with constant bounds, Min/Max of two) whose intermediate values have no
//! other reader become one `FusedElementwise` node, one op at a time: a producer is
//! inlined into its only consumer. Inputs read twice are read once; one-element
//! constants become scalars where that keeps the output's rank.

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};
use kiln_ir::ops::{ElementwiseOp, Expr, ExprNode, FusedOp};
use kiln_ir::{DType, NodeId, Op, OutletId};

use crate::context::Context;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// An elementwise computation as an expression over its inputs. An input `None` stands
/// for the output of a layer's core (only in epilogues).
#[derive(Clone, Debug)]
pub struct Ew {
    pub expr: Expr,
    pub inputs: Vec<Option<OutletId>>,
}

/// Float dtypes an expression may compute in.
pub fn float(d: Option<DType>) -> bool {
    d.is_some_and(|d| d.is_float() && !matches!(d, DType::F8E4M3FN | DType::F8E5M2))
}

fn unary_ok(u: UnaryOp) -> bool {
    !matches!(u, UnaryOp::BitwiseNot)
}

/// The single element of a constant as f64, when it is one element.
fn one_element(cx: &Context, o: OutletId) -> Option<f64> {
    cx.scalar(o).filter(|v| v.is_finite())
}

/// Node `id` as an expression, when it is a float elementwise op that fuses: its output
/// and every non-scalar input have the same float dtype.
pub fn as_expr(cx: &Context, id: NodeId) -> Option<Ew> {
    let node = cx.node(id);
    if node.outputs.len() != 1 {
        return None;
    }
    let out = cx.fact(OutletId::new(id, 0));
    if !float(out.dtype) {
        return None;
    }
    let ew = match &node.op {
        Op::Fused(FusedOp::Elementwise(e)) => {
            let inputs: Option<Vec<OutletId>> = node.inputs.iter().copied().collect();
            Ew { expr: e.clone(), inputs: inputs?.into_iter().map(Some).collect() }
        }
        Op::Elementwise(op) => plain(cx, id, op)?,
        _ => return None,
    };
    let dtypes_ok = ew.inputs.iter().flatten().all(|&i| cx.fact(i).dtype == out.dtype);
    (dtypes_ok && ew.inputs.iter().any(Option::is_some) && ew.expr.check().is_ok()).then_some(ew)
}

fn plain(cx: &Context, id: NodeId, op: &ElementwiseOp) -> Option<Ew> {
    let x = cx.input(id, 0)?;
    let unary = |n: ExprNode| Ew { expr: Expr { nodes: vec![ExprNode::Input(0), n] }, inputs: vec![Some(x)] };
    let binary = |f: fn(usize, usize) -> ExprNode| -> Option<Ew> {
        if cx.node(id).inputs.len() != 2 {
            return None;
        }
        let a = x;
        let b = cx.input(id, 1)?;
        let rank = |o: OutletId| cx.fact(o).rank();
        let mut e = Expr::default();
        let mut inputs = vec![];
        let mut operand = |o: OutletId, other: OutletId, e: &mut Expr| -> Option<usize> {
            if let Some(v) = one_element(cx, o)
                && rank(o)? <= rank(other)?
                && one_element(cx, other).is_none()
            {
                return Some(e.push(ExprNode::Scalar(v)));
            }
            inputs.push(Some(o));
            Some(e.push(ExprNode::Input(inputs.len() - 1)))
        };
        let ia = operand(a, b, &mut e)?;
        let ib = operand(b, a, &mut e)?;
        e.push(f(ia, ib));
        Some(Ew { expr: e, inputs })
    };
    match op {
        ElementwiseOp::Unary(u) if unary_ok(*u) => Some(unary(ExprNode::Unary(*u, 0))),
        ElementwiseOp::Binary(
            b @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow | BinaryOp::PRelu),
        ) => match b {
            BinaryOp::Add => binary(|a, b| ExprNode::Binary(BinaryOp::Add, a, b)),
            BinaryOp::Sub => binary(|a, b| ExprNode::Binary(BinaryOp::Sub, a, b)),
            BinaryOp::Mul => binary(|a, b| ExprNode::Binary(BinaryOp::Mul, a, b)),
            BinaryOp::Div => binary(|a, b| ExprNode::Binary(BinaryOp::Div, a, b)),
            BinaryOp::Pow => binary(|a, b| ExprNode::Binary(BinaryOp::Pow, a, b)),
            _ => binary(|a, b| ExprNode::Binary(BinaryOp::PRelu, a, b)),
        },
        ElementwiseOp::Variadic(VariadicOp::Min) => binary(ExprNode::Min),
        ElementwiseOp::Variadic(VariadicOp::Max) => binary(ExprNode::Max),
        ElementwiseOp::Variadic(VariadicOp::Sum) => binary(|a, b| ExprNode::Binary(BinaryOp::Add, a, b)),
        ElementwiseOp::Clip { min, max } => {
            let bound = |i: usize, attr: Option<f32>| -> Option<Option<f32>> {
                match cx.input(id, i) {
                    None => Some(attr),
                    // Expression bounds are f32: an f64 bound must be one exactly.
                    Some(o) => {
                        let v = cx.scalar(o)?;
                        ((v as f32) as f64 == v).then_some(Some(v as f32))
                    }
                }
            };
            let (min, max) = (bound(1, *min)?, bound(2, *max)?);
            Some(unary(ExprNode::Clip { x: 0, min, max }))
        }
        _ => None,
    }
}

/// Inlines `producer` into `consumer`, whose inputs at `positions` read the producer's
/// value. Inputs are deduplicated, the producer's first (so that an epilogue's core
/// output stays input 0).
pub fn merge(consumer: &Ew, positions: &[usize], producer: &Ew) -> Option<Ew> {
    let mut inputs: Vec<Option<OutletId>> = vec![];
    let index = |o: Option<OutletId>, inputs: &mut Vec<Option<OutletId>>| -> usize {
        match inputs.iter().position(|&i| i == o) {
            Some(k) => k,
            None => {
                inputs.push(o);
                inputs.len() - 1
            }
        }
    };
    let p_at: Vec<usize> = producer.inputs.iter().map(|&o| index(o, &mut inputs)).collect();
    let c_at: Vec<Option<usize>> = consumer
        .inputs
        .iter()
        .enumerate()
        .map(|(k, &o)| if positions.contains(&k) { None } else { Some(index(o, &mut inputs)) })
        .collect();
    let mut e = Expr::default();
    let leaves: Vec<usize> = (0..inputs.len()).map(|k| e.push(ExprNode::Input(k))).collect();
    let p_map: Vec<usize> = p_at.iter().map(|&k| leaves[k]).collect();
    let p_val = e.inline(&producer.expr, &p_map).ok()?;
    let c_map: Vec<usize> = c_at.iter().map(|k| k.map_or(p_val, |k| leaves[k])).collect();
    let c_val = e.inline(&consumer.expr, &c_map).ok()?;
    if c_val + 1 != e.nodes.len() {
        return None;
    }
    e.check().ok()?;
    Some(Ew { expr: e, inputs })
}

/// The positions at which `consumer` reads `o`, when every reader of `o` is `consumer`
/// and `o` is no graph output.
pub fn only_reader(cx: &Context, o: OutletId, consumer: NodeId) -> Option<Vec<usize>> {
    let readers = cx.consumers(o);
    if cx.is_output(o) || readers.is_empty() || readers.iter().any(|&(n, _)| n != consumer) {
        return None;
    }
    Some(readers.iter().map(|&(_, i)| i).collect())
}

/// The positions at which the expression `ew` reads `o`.
pub fn positions(ew: &Ew, o: OutletId) -> Vec<usize> {
    ew.inputs.iter().enumerate().filter(|(_, i)| **i == Some(o)).map(|(k, _)| k).collect()
}

/// Whether a node `op` reading `inputs` infers an output that may replace `old`, as the
/// patch will check (so that a rewrite never offers a patch that is refused).
pub fn accepted(cx: &Context, op: &Op, inputs: &[Option<OutletId>], old: OutletId) -> bool {
    let facts: Vec<Option<&kiln_ir::Fact>> = inputs.iter().map(|i| i.map(|o| cx.fact(o))).collect();
    match op.infer(&facts, 1) {
        Ok(out) => out.first().is_some_and(|f| crate::patch::compatible(cx.fact(old), f)),
        Err(_) => false,
    }
}

/// A producer elementwise op (or FusedElementwise) inlined into its only consumer.
pub struct FuseElementwise;

impl Rewrite for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse-elementwise"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let consumer = as_expr(cx, id)?;
        let node = cx.node(id);
        for o in node.inputs.iter().flatten() {
            if only_reader(cx, *o, id).is_none() || o.slot != 0 {
                continue;
            }
            let Some(producer) = as_expr(cx, o.node) else { continue };
            let positions = positions(&consumer, *o);
            if positions.is_empty() {
                continue;
            }
            let Some(merged) = merge(&consumer, &positions, &producer) else { continue };
            let inputs: Option<Vec<Wire>> = merged.inputs.iter().map(|i| i.map(Wire::Graph)).collect();
            let Some(inputs) = inputs else { continue };
            let op = Op::Fused(FusedOp::Elementwise(merged.expr));
            if !accepted(cx, &op, &merged.inputs, OutletId::new(id, 0)) {
                continue;
            }
            let name = format!("{} + {}", cx.node(o.node).name, node.name);
            let mut p = Patch::new();
            let y = p.add(name, op, &inputs);
            p.shunt(OutletId::new(id, 0), y);
            return Some(p);
        }
        None
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&FuseElementwise]
}
