use kiln_ir::Tensor;
use kiln_ir::ops::VisionOp;

use crate::{EvalContext, Result};

pub fn eval(op: &VisionOp, _inputs: &[Option<Tensor>], _n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    match *op {}
}
