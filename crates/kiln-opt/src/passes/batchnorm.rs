//! Inference BatchNormalization is `x * s + t` per channel (axis 1) with
//! `s = scale / sqrt(var + eps)` and `t = B - mean * s`. After a Conv, ConvTranspose,
//! Gemm or MatMul with constant weights whose output only the BatchNorm reads, it folds
//! into new weights and bias; otherwise it becomes a `FusedElementwise` `x * s + t`.

use kiln_ir::ops::elementwise::BinaryOp;
use kiln_ir::ops::{Expr, ExprNode, FusedOp, ReduceOp};
use kiln_ir::{NodeId, Op, OutletId};

use super::elementwise::float;
use super::weights::{Linear, channel_shape, floats, store};
use crate::context::Context;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// The per-channel factors `(s, t)` of an inference BatchNorm with constant parameters.
fn factors(cx: &Context, id: NodeId) -> Option<(Vec<f64>, Vec<f64>)> {
    let node = cx.node(id);
    let Op::Reduce(ReduceOp::BatchNorm(bn)) = &node.op else { return None };
    if bn.training || (1..node.outputs.len()).any(|k| cx.uses(OutletId::new(id, k)) > 0) {
        return None;
    }
    let param = |i: usize| -> Option<Vec<f64>> {
        let t = cx.value(cx.input(id, i)?)?;
        if t.rank() != 1 {
            return None;
        }
        floats(t)
    };
    let (scale, b, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let c = scale.len();
    if [b.len(), mean.len(), var.len()].iter().any(|&n| n != c) || c == 0 {
        return None;
    }
    let eps = f64::from(bn.epsilon);
    let s: Vec<f64> = scale.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    if s.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let t = b.iter().zip(&mean).zip(&s).map(|((b, m), s)| b - m * s).collect();
    Some((s, t))
}

/// BatchNorm after a compute op with constant weights: folded into them.
pub struct FoldBatchNorm;

impl Rewrite for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let (s, t) = factors(cx, id)?;
        let x = cx.input(id, 0)?;
        if !cx.single_use(x) || x.slot != 0 {
            return None;
        }
        let lin = Linear::of(cx, x.node)?;
        if lin.axis != 1 || lin.channels != s.len() || cx.fact(OutletId::new(id, 0)).dtype != Some(lin.w.dtype()) {
            return None;
        }
        let name = format!("{} + {}", cx.node(x.node).name, cx.node(id).name);
        lin.fold(cx, &s, Some(&t), OutletId::new(id, 0), name)
    }
}

/// Any other inference BatchNorm: `x * s + t` with constants shaped `[C, 1, …]`.
pub struct BatchNormToElementwise;

impl Rewrite for BatchNormToElementwise {
    fn name(&self) -> &'static str {
        "batchnorm-to-elementwise"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let (s, t) = factors(cx, id)?;
        let x = cx.input(id, 0)?;
        let fx = cx.fact(x);
        let shape = fx.shape.as_ref()?;
        let dtype = fx.dtype?;
        if !float(Some(dtype)) || shape.rank() < 2 {
            return None;
        }
        if let Some(c) = shape.0.get(1).and_then(|d| d.known())
            && c != s.len()
        {
            return None;
        }
        let cs = channel_shape(s.len(), shape.rank());
        let name = cx.node(id).name.clone();
        let mut p = Patch::new();
        let sw = p.constant(format!("{name}/scale"), store(dtype, cs.clone(), &s)?);
        let tw = p.constant(format!("{name}/shift"), store(dtype, cs, &t)?);
        let e = Expr {
            nodes: vec![
                ExprNode::Input(0),
                ExprNode::Input(1),
                ExprNode::Input(2),
                ExprNode::Binary(BinaryOp::Mul, 0, 1),
                ExprNode::Binary(BinaryOp::Add, 3, 2),
            ],
        };
        let y = p.add(name, Op::Fused(FusedOp::Elementwise(e)), &[Wire::Graph(x), sw, tw]);
        p.shunt(OutletId::new(id, 0), y);
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&FoldBatchNorm, &BatchNormToElementwise]
}
