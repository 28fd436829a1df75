//! Fused ops, by composition of the ordinary kernels: the reference semantics that a
//! GPU backend's single kernels are checked against.

use kiln_ir::Tensor;
use kiln_ir::ops::fused::{TO_NCHW, TO_NHWC};
use kiln_ir::ops::{ElementwiseOp, Expr, ExprNode, FusedLayer, FusedOp, MovementOp};

use super::elementwise;
use crate::array::req;
use crate::{CpuError, EvalContext, Result};

pub fn eval(op: &FusedOp, inputs: &[Option<Tensor>], n_outputs: usize, ctx: &EvalContext) -> Result<Vec<Tensor>> {
    match op {
        FusedOp::Elementwise(e) => {
            let operands: Vec<Tensor> = inputs.iter().flatten().cloned().collect();
            Ok(vec![eval_expr(e, &operands, ctx)?])
        }
        FusedOp::Layer(l) => Ok(vec![layer(l, inputs, ctx)?]),
        FusedOp::ConcatInPlace { axis } => {
            super::movement::eval(&MovementOp::Concat { axis: *axis as i64 }, inputs, n_outputs, ctx)
        }
        FusedOp::SliceView { axis, windows } => {
            let x = req(inputs, 0, "SliceView")?;
            windows.iter().map(|&(start, len)| slice_view(x, *axis, start, len)).collect()
        }
        FusedOp::ChannelsLast { op, nhwc } => {
            let transpose = |t: &Tensor, perm: &[usize; 4]| -> Result<Tensor> {
                let op = MovementOp::Transpose { perm: Some(perm.iter().map(|&p| p as i64).collect()) };
                let out = super::movement::eval(&op, &[Some(t.clone())], 1, ctx)?;
                out.into_iter().next().ok_or_else(|| CpuError::invalid("ChannelsLast", "transpose gave no output"))
            };
            let mut args = inputs.to_vec();
            for &i in nhwc {
                let t = req(inputs, i, "ChannelsLast")?;
                args[i] = Some(transpose(t, &TO_NCHW)?);
            }
            let mut out = crate::eval_op(op, &args, n_outputs, ctx)?;
            if let Some(o) = out.first_mut() {
                *o = transpose(o, &TO_NHWC)?;
            }
            Ok(out)
        }
    }
}

fn layer(l: &FusedLayer, inputs: &[Option<Tensor>], ctx: &EvalContext) -> Result<Tensor> {
    let n = l.core_inputs.min(inputs.len());
    let core = crate::eval_op(&l.core, &inputs[..n], 1, ctx)?;
    let mut operands = core;
    operands.truncate(1);
    operands.extend(inputs[n..].iter().flatten().cloned());
    eval_expr(&l.epilogue, &operands, ctx)
}

/// Evaluates `e` node by node with the elementwise kernels.
pub fn eval_expr(e: &Expr, inputs: &[Tensor], ctx: &EvalContext) -> Result<Tensor> {
    // Every node reads only earlier ones, so `values[i]` below is always computed.
    e.check()?;
    let dtype = inputs
        .first()
        .map(Tensor::dtype)
        .ok_or_else(|| CpuError::invalid("FusedElementwise", "expression without inputs"))?;
    let mut values: Vec<Tensor> = Vec::with_capacity(e.nodes.len());
    for node in &e.nodes {
        let v = |i: usize| Some(values[i].clone());
        let (op, args) = match node {
            ExprNode::Input(i) => {
                let t = inputs
                    .get(*i)
                    .ok_or_else(|| CpuError::invalid("FusedElementwise", format!("expression input {i} missing")))?;
                values.push(t.clone());
                continue;
            }
            ExprNode::Scalar(s) => {
                values.push(elementwise::cast(&Tensor::scalar(*s), dtype, false)?);
                continue;
            }
            ExprNode::Unary(u, a) => (ElementwiseOp::Unary(*u), vec![v(*a)]),
            ExprNode::Binary(b, x, y) => (ElementwiseOp::Binary(*b), vec![v(*x), v(*y)]),
            ExprNode::Clip { x, min, max } => (ElementwiseOp::Clip { min: *min, max: *max }, vec![v(*x)]),
            ExprNode::Min(x, y) => {
                (ElementwiseOp::Variadic(kiln_ir::ops::elementwise::VariadicOp::Min), vec![v(*x), v(*y)])
            }
            ExprNode::Max(x, y) => {
                (ElementwiseOp::Variadic(kiln_ir::ops::elementwise::VariadicOp::Max), vec![v(*x), v(*y)])
            }
        };
        let out = elementwise::eval(&op, &args, 1, ctx)?;
        values.push(
            out.into_iter()
                .next()
                .ok_or_else(|| CpuError::invalid("FusedElementwise", "elementwise op gave no output"))?,
        );
    }
    values.pop().ok_or_else(|| CpuError::invalid("FusedElementwise", "empty expression"))
}

/// A window of `x` along `axis` whose outer dims are all 1: shares `x`'s bytes.
fn slice_view(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let shape = x.shape();
    let bad =
        || CpuError::invalid("SliceView", format!("window {start}+{len} on axis {axis} of {shape:?} is not a view"));
    if axis >= shape.len() || shape[..axis].iter().any(|&d| d != 1) || start + len > shape[axis] {
        return Err(bad());
    }
    let inner: usize = shape[axis + 1..].iter().product::<usize>() * x.dtype().size();
    let bytes = x.bytes().slice(start * inner..(start + len) * inner);
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    Ok(Tensor::from_bytes(x.dtype(), out_shape, bytes)?)
}
