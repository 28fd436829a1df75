//! Neural-network kernels, a file per concept: matrix products, convolutions,
//! pools, einsum; `window` holds the sliding-window arithmetic they share and
//! `scalar` the compute types (f16/bf16 compute in f32) and the GEMM entry point.

mod conv;
mod einsum;
mod matmul;
mod pool;
mod scalar;
mod window;

use kiln_ir::ops::nn::PoolKind;
use kiln_ir::ops::{NnOp, OpFamily};
use kiln_ir::{DType, Tensor};

use crate::array::{opt, req};
use crate::{CpuError, EvalContext, Result, dispatch};

/// All inputs share the dtype of the first (ONNX's type constraint `T`).
fn same_dtype(ts: &[&Tensor], op: &str) -> Result<DType> {
    let d = ts[0].dtype();
    match ts.iter().find(|t| t.dtype() != d) {
        Some(t) => Err(CpuError::invalid(op, format!("input dtypes differ: {d} and {}", t.dtype()))),
        None => Ok(d),
    }
}

pub fn eval(op: &NnOp, inputs: &[Option<Tensor>], n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    let x = req(inputs, 0, name)?;
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        NnOp::MatMul => {
            let b = req(inputs, 1, name)?;
            one(dispatch!(num, same_dtype(&[x, b], name)?, name, T => matmul::matmul::<T>(x, b)))
        }
        NnOp::Gemm(g) => {
            let (b, c) = (req(inputs, 1, name)?, opt(inputs, 2));
            let d = same_dtype(&[x, b].into_iter().chain(c).collect::<Vec<_>>(), name)?;
            one(dispatch!(num, d, name, T => matmul::gemm_op::<T>(g, x, b, c)))
        }
        NnOp::Einsum(e) => {
            let ts = (0..inputs.len()).map(|i| req(inputs, i, name)).collect::<Result<Vec<_>>>()?;
            one(dispatch!(num, same_dtype(&ts, name)?, name, T => einsum::einsum::<T>(e, &ts)))
        }
        NnOp::Conv(c) => {
            let (w, b) = (req(inputs, 1, name)?, opt(inputs, 2));
            let d = same_dtype(&[x, w].into_iter().chain(b).collect::<Vec<_>>(), name)?;
            one(dispatch!(float, d, name, T => conv::conv::<T>(c, x, w, b)))
        }
        NnOp::ConvTranspose(c) => {
            let (w, b) = (req(inputs, 1, name)?, opt(inputs, 2));
            let d = same_dtype(&[x, w].into_iter().chain(b).collect::<Vec<_>>(), name)?;
            one(dispatch!(float, d, name, T => conv::conv_transpose::<T>(c, x, w, b)))
        }
        NnOp::Pool(p) => match p.kind {
            PoolKind::Max { .. } => dispatch!(num, x.dtype(), name, T => pool::pool::<T>(p, x, n_outputs > 1, name)),
            _ => dispatch!(float, x.dtype(), name, T => pool::pool::<T>(p, x, false, name)),
        },
        NnOp::GlobalPool(k) => match k {
            PoolKind::Max { .. } => one(dispatch!(num, x.dtype(), name, T => pool::global_pool::<T>(*k, x, name))),
            _ => one(dispatch!(float, x.dtype(), name, T => pool::global_pool::<T>(*k, x, name))),
        },
        NnOp::MaxUnpool(w) => {
            let (i, shape) = (req(inputs, 1, name)?, opt(inputs, 2));
            one(dispatch!(any, x.dtype(), name, T => pool::max_unpool::<T>(w, x, i, shape)))
        }
        NnOp::Col2Im(w) => {
            let (image, block) = (req(inputs, 1, name)?, req(inputs, 2, name)?);
            one(dispatch!(num, x.dtype(), name, T => conv::col2im_op::<T>(w, x, image, block)))
        }
    }
}
