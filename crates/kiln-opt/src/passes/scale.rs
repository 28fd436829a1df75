//! A constant per output channel applied right after a Conv, ConvTranspose, Gemm or
//! MatMul with constant weights (whose output nothing else reads) folds into them:
//! `Mul`/`Div` scale the weights and bias, `Add`/`Sub` shift the bias. The constant must
//! vary along the channel axis only (`[C, 1, 1]` after a Conv, `[N]` after a MatMul) and
//! must not grow the output.

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::BinaryOp;
use kiln_ir::{NodeId, Op, OutletId};

use super::weights::{Linear, floats};
use crate::context::Context;
use crate::patch::Patch;
use crate::rewrite::Rewrite;

pub struct FoldScale;

impl Rewrite for FoldScale {
    fn name(&self) -> &'static str {
        "fold-scale"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        let Op::Elementwise(ElementwiseOp::Binary(op)) = &node.op else { return None };
        if !matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div) || node.inputs.len() != 2 {
            return None;
        }
        let out = OutletId::new(id, 0);
        for k in 0..2 {
            let (y, c) = (cx.input(id, k)?, cx.input(id, 1 - k)?);
            if y.slot != 0 || !cx.single_use(y) || y == c {
                continue;
            }
            let Some(cv) = cx.value(c) else { continue };
            let Some(lin) = Linear::of(cx, y.node) else { continue };
            if cx.fact(out).dtype != Some(lin.w.dtype()) || cv.dtype() != lin.w.dtype() {
                continue;
            }
            let Some(values) = floats(cv) else { continue };
            let Some(per) = lin.per_channel(cv.shape(), &values) else { continue };
            let ones = vec![1.0; lin.channels];
            let (s, t): (Vec<f64>, Option<Vec<f64>>) = match (op, k) {
                (BinaryOp::Mul, _) => (per, None),
                (BinaryOp::Div, 0) => {
                    if per.iter().any(|&v| v == 0.0 || !v.is_finite()) {
                        return None;
                    }
                    (per.iter().map(|v| 1.0 / v).collect(), None)
                }
                (BinaryOp::Add, _) => (ones, Some(per)),
                (BinaryOp::Sub, 0) => (ones, Some(per.iter().map(|v| -v).collect())),
                (BinaryOp::Sub, _) => (vec![-1.0; lin.channels], Some(per)),
                _ => continue,
            };
            let name = format!("{} + {}", cx.node(y.node).name, node.name);
            if let Some(p) = lin.fold(cx, &s, t.as_deref(), out, name) {
                return Some(p);
            }
        }
        None
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&FoldScale]
}
