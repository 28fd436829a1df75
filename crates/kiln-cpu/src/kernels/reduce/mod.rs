//! Reductions and normalizations (see `kiln_ir::ops::reduce`), a file per concept:
//! `rows` (axis arithmetic and parallel rows), `real` (element arithmetic), `fold`
//! (Reduce*), `select` (ArgMax/ArgMin/TopK), `softmax`, `norm`, `lrn`, `loss`.

mod fold;
mod loss;
mod lrn;
mod norm;
mod real;
mod rows;
mod select;
mod softmax;

use kiln_ir::Tensor;
use kiln_ir::ops::{OpFamily, ReduceOp};

use crate::{EvalContext, Result};

pub fn eval(op: &ReduceOp, inputs: &[Option<Tensor>], _n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        ReduceOp::Reduce(r) => one(fold::eval(r, inputs, name)),
        ReduceOp::Arg(a) => one(select::arg(a, inputs, name)),
        ReduceOp::TopK(t) => select::topk(t, inputs, name),
        ReduceOp::Softmax(s) => one(softmax::eval(s, inputs, name)),
        ReduceOp::BatchNorm(b) => norm::batch_norm(b, inputs, name),
        ReduceOp::InstanceNorm(i) => one(norm::instance_norm(i, inputs, name)),
        ReduceOp::LayerNorm(l) => norm::layer_norm(l, inputs, name),
        ReduceOp::GroupNorm(g) => one(norm::group_norm(g, inputs, name)),
        ReduceOp::RmsNorm(r) => one(norm::rms_norm(r, inputs, name)),
        ReduceOp::Lrn(l) => one(lrn::eval(l, inputs, name)),
        ReduceOp::MeanVarianceNorm(m) => one(norm::mvn(m, inputs, name)),
        ReduceOp::Loss(l) => loss::eval(l, inputs, name),
    }
}
