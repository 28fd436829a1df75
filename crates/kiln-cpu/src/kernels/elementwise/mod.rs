//! Elementwise kernels. `map` holds the shared broadcasting loops (with the fast paths),
//! `scalar` the per-type arithmetic; each other file is one group of ops.

mod binary;
mod cast;
mod fp8;
mod map;
mod scalar;
mod select;
mod unary;

use kiln_ir::ops::{ElementwiseOp, OpFamily};
use kiln_ir::{DType, Tensor};

use crate::array::{opt, req};
use crate::{CpuError, EvalContext, Result};

pub use cast::cast;

pub fn eval(
    op: &ElementwiseOp,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
    _ctx: &EvalContext,
) -> Result<Vec<Tensor>> {
    let name = op.name();
    let x = req(inputs, 0, name)?;
    let second = || req(inputs, 1, name);
    let out = match op {
        ElementwiseOp::Unary(u) => unary::eval(*u, x)?,
        ElementwiseOp::Binary(b) => binary::eval(*b, x, second()?)?,
        ElementwiseOp::Compare(c) => binary::compare(*c, x, second()?)?,
        ElementwiseOp::Logic(l) => binary::logic(*l, x, second()?)?,
        ElementwiseOp::Variadic(v) => {
            let all: Vec<&Tensor> = inputs.iter().flatten().collect();
            select::variadic(*v, &all)?
        }
        ElementwiseOp::Not => not(x)?,
        ElementwiseOp::IsNaN => select::is_nan(x)?,
        ElementwiseOp::IsInf { detect_positive, detect_negative } => {
            select::is_inf(x, *detect_positive, *detect_negative)?
        }
        ElementwiseOp::Clip { min, max } => select::clip(x, *min, *max, opt(inputs, 1), opt(inputs, 2))?,
        ElementwiseOp::Where => select::where_(x, second()?, req(inputs, 2, name)?)?,
        ElementwiseOp::Cast { to, saturate } => cast::cast(x, *to, *saturate)?,
        ElementwiseOp::CastLike { saturate } => cast::cast(x, second()?.dtype(), *saturate)?,
        ElementwiseOp::Identity => x.clone(),
        ElementwiseOp::Dropout { mask_is_bool } => return dropout(x, inputs, n_outputs, *mask_is_bool),
    };
    Ok(vec![out])
}

fn not(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::Bool {
        return Err(CpuError::dtype("Not", x.dtype()));
    }
    map::map1::<u8, u8>(x, DType::Bool, |b| u8::from(b == 0))
}

/// Inference Dropout: the data unchanged and, if asked for, a mask of all ones.
fn dropout(x: &Tensor, inputs: &[Option<Tensor>], n_outputs: usize, mask_is_bool: bool) -> Result<Vec<Tensor>> {
    // Training mode is random unless the ratio is 0, when it is the identity too.
    let training = opt(inputs, 2).map(|t| t.to_bools()).transpose()?.is_some_and(|v| v.iter().any(|&b| b));
    let ratio_zero = opt(inputs, 1).map(|t| t.to_f64_vec()).transpose()?.is_some_and(|v| v.iter().all(|&r| r == 0.0));
    if training && !ratio_zero {
        return Err(CpuError::unsupported("Dropout", "training_mode=true with a non-zero ratio (training only)"));
    }
    let mut out = vec![x.clone()];
    if n_outputs > 1 {
        let ones = Tensor::from_bools(x.shape().to_vec(), vec![true; x.len()])?;
        out.push(if mask_is_bool { ones } else { cast::cast(&ones, x.dtype(), true)? });
    }
    Ok(out)
}
