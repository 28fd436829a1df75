//! Attention kernels: scaled dot-product `Attention` and recurrent `LinearAttention`.

mod linear;
mod sdpa;

use kiln_ir::Tensor;
use kiln_ir::ops::AttentionOp;

use crate::{EvalContext, Result};

pub fn eval(op: &AttentionOp, inputs: &[Option<Tensor>], n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    match op {
        AttentionOp::Attention(a) => sdpa::eval(a, inputs, n_outputs),
        AttentionOp::LinearAttention(l) => linear::eval(l, inputs),
    }
}
