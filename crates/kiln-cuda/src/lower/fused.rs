//! kiln-opt's fused ops: an elementwise expression evaluated node by node (one launch a
//! node, temporaries in the workspace, the last node written into the output), a layer's
//! epilogue after its core, in-place Concat and slice views as copies.

use kiln_ir::ops::{Expr, ExprNode};

use super::elementwise::{binary, binary_code_kernel, expand_into, unary};
use super::{Cx, Lowered, is_float};
use crate::executor::Kernel;
use crate::kernels::{BinaryCode, UnaryCode};
use crate::plan::SlotId;

/// The broadcast of two shapes (numpy rules).
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (k, o) in out.iter_mut().enumerate() {
        let da = if k + a.len() >= r { a[k + a.len() - r] } else { 1 };
        let db = if k + b.len() >= r { b[k + b.len() - r] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Evaluates `expr` into `y`: `inputs[i]` is the expression's `Input(i)`.
pub(crate) fn expr(cx: &mut Cx, e: &Expr, inputs: &[SlotId], y: SlotId) -> Lowered {
    let dtype = cx.dtype(y);
    if !is_float(dtype) {
        return Err(format!("a fused expression of dtype {dtype}"));
    }
    let out_shape = cx.shape(y);
    let last = e.nodes.len().checked_sub(1).ok_or("an empty expression")?;
    let mut vals: Vec<SlotId> = Vec::with_capacity(e.nodes.len());
    let mut ks = Vec::new();
    for (i, node) in e.nodes.iter().enumerate() {
        // The natural shape of this node's value.
        let shape = match node {
            ExprNode::Input(j) => {
                let s = *inputs.get(*j).ok_or_else(|| format!("expression input {j} is missing"))?;
                if cx.dtype(s) != dtype {
                    return Err(format!("expression input {j} of dtype {}", cx.dtype(s)));
                }
                if i != last {
                    vals.push(s);
                    continue;
                }
                cx.shape(s)
            }
            ExprNode::Scalar(_) => vec![],
            ExprNode::Unary(_, a) | ExprNode::Clip { x: a, .. } => cx.shape(vals[*a]),
            ExprNode::Binary(_, a, b) | ExprNode::Min(a, b) | ExprNode::Max(a, b) => {
                broadcast(&cx.shape(vals[*a]), &cx.shape(vals[*b]))?
            }
        };
        // The last node writes the output directly when its shape is the output's.
        let direct = i == last && shape == out_shape;
        let dst = if direct { y } else { cx.temp(dtype, &shape) };
        match node {
            ExprNode::Input(j) => ks.push(expand_into(cx, inputs[*j], dst)?),
            ExprNode::Scalar(v) => ks.push(Kernel::Fill { dtype, y: dst, value: *v }),
            ExprNode::Unary(u, a) => ks.push(unary(cx, u, vals[*a], dst)?),
            ExprNode::Clip { x, min, max } => {
                let p = [min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY)];
                ks.push(Kernel::Unary { code: UnaryCode::Clip, p, dtype, x: vals[*x], y: dst, n: cx.len(dst) })
            }
            ExprNode::Binary(op, a, b) => ks.push(binary(cx, *op, vals[*a], vals[*b], dst)?),
            ExprNode::Min(a, b) => ks.push(binary_code_kernel(cx, BinaryCode::Min, vals[*a], vals[*b], dst)?),
            ExprNode::Max(a, b) => ks.push(binary_code_kernel(cx, BinaryCode::Max, vals[*a], vals[*b], dst)?),
        }
        if i == last && !direct {
            ks.push(expand_into(cx, dst, y)?);
        }
        vals.push(dst);
    }
    Ok(ks)
}
