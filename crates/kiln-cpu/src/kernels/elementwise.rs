use kiln_ir::Tensor;
use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use ndarray::{ArrayD, IxDyn, Zip};
use num_traits::Float;

use crate::array::{broadcast_shape, req, tensor, view};
use crate::{CpuError, EvalContext, Result, dispatch};

pub fn eval(
    op: &ElementwiseOp,
    inputs: &[Option<Tensor>],
    _n_outputs: usize,
    _ctx: &EvalContext,
) -> Result<Vec<Tensor>> {
    let name = kiln_ir::ops::OpFamily::name(op);
    let out = match op {
        ElementwiseOp::Unary(u) => {
            let x = req(inputs, 0, name)?;
            dispatch!(float, x.dtype(), name, T => unary::<T>(*u, x))?
        }
        ElementwiseOp::Binary(b) => {
            let (a, c) = (req(inputs, 0, name)?, req(inputs, 1, name)?);
            if a.dtype() != c.dtype() {
                return Err(CpuError::invalid(name, format!("input dtypes differ: {} and {}", a.dtype(), c.dtype())));
            }
            dispatch!(num, a.dtype(), name, T => binary::<T>(*b, a, c, name))?
        }
    };
    Ok(vec![out])
}

fn unary<T: kiln_ir::Element + Float>(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let x = view::<T>(x)?;
    let f = match op {
        UnaryOp::Relu => |v: T| if v > T::zero() { v } else { T::zero() },
        UnaryOp::Neg => |v: T| -v,
        UnaryOp::Exp => |v: T| v.exp(),
    };
    Ok(tensor(x.mapv(f)))
}

fn binary<T>(op: BinaryOp, a: &Tensor, b: &Tensor, name: &str) -> Result<Tensor>
where
    T: kiln_ir::Element + num_traits::NumOps,
{
    let shape = broadcast_shape(a.shape(), b.shape(), name)?;
    let (a, b) = (view::<T>(a)?, view::<T>(b)?);
    let (a, b) = (a.broadcast(IxDyn(&shape)).unwrap(), b.broadcast(IxDyn(&shape)).unwrap());
    let f = match op {
        BinaryOp::Add => |x: T, y: T| x + y,
        BinaryOp::Sub => |x: T, y: T| x - y,
        BinaryOp::Mul => |x: T, y: T| x * y,
        BinaryOp::Div => |x: T, y: T| x / y,
    };
    let out: ArrayD<T> = Zip::from(&a).and(&b).map_collect(|&x, &y| f(x, y));
    Ok(tensor(out))
}
