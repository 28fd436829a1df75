//! Two-input ops with multidirectional broadcasting: arithmetic, Pow, Mod, bit ops,
//! PRelu, comparisons and bool logic.

use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, LogicOp};
use kiln_ir::{DType, Tensor};

use super::map::{map1, map2};

use super::scalar::{Arith, Bits, Compute};
use crate::{CpuError, Result, dispatch};

pub fn eval(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = op.name();
    if op != BinaryOp::Pow && a.dtype() != b.dtype() {
        return Err(CpuError::invalid(name, format!("input dtypes differ: {} and {}", a.dtype(), b.dtype())));
    }
    let dt = a.dtype();
    match op {
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod { .. } | BinaryOp::PRelu => {
            dispatch!(num, dt, name, T => arith::<T>(op, a, b))
        }
        BinaryOp::Pow => dispatch!(num, dt, name, T => pow::<T>(a, b)),
        BinaryOp::BitShift { left } => match dt {
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => {
                dispatch!(int, dt, name, T => map2::<T, T, T>(a, b, dt, name, |x, n| if left { x.shl(n) } else { x.shr(n) }))
            }
            other => Err(CpuError::dtype(name, other)),
        },
        BinaryOp::BitwiseAnd => dispatch!(int, dt, name, T => map2::<T, T, T>(a, b, dt, name, |x, y| x.and(y))),
        BinaryOp::BitwiseOr => dispatch!(int, dt, name, T => map2::<T, T, T>(a, b, dt, name, |x, y| x.or(y))),
        BinaryOp::BitwiseXor => dispatch!(int, dt, name, T => map2::<T, T, T>(a, b, dt, name, |x, y| x.xor(y))),
    }
}

fn arith<T: Arith + Send + Sync>(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (dt, name) = (a.dtype(), op.name());
    let divides = matches!(op, BinaryOp::Div | BinaryOp::Mod { .. });
    if T::IS_INT && divides && b.as_slice::<T>()?.iter().any(|v| v.is_zero()) {
        return Err(CpuError::invalid(name, "integer division by zero"));
    }
    match op {
        BinaryOp::Add => map2::<T, T, T>(a, b, dt, name, T::add),
        BinaryOp::Sub => map2::<T, T, T>(a, b, dt, name, T::sub),
        BinaryOp::Mul => map2::<T, T, T>(a, b, dt, name, T::mul),
        BinaryOp::Div => map2::<T, T, T>(a, b, dt, name, T::div),
        BinaryOp::Mod { fmod: true } => map2::<T, T, T>(a, b, dt, name, T::rem_trunc),
        BinaryOp::Mod { fmod: false } if !T::IS_INT => {
            Err(CpuError::invalid(name, "fmod must be 1 for floating-point inputs"))
        }
        BinaryOp::Mod { fmod: false } => map2::<T, T, T>(a, b, dt, name, T::rem_floor),
        BinaryOp::PRelu => prelu::<T>(a, b),
        _ => Err(CpuError::invalid(name, "not an arithmetic op")),
    }
}

/// The slope broadcasts to the input (unidirectionally): the output has the input's shape.
fn prelu<T: Arith + Send + Sync>(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let shape = crate::array::broadcast_shape(x.shape(), slope.shape(), "PRelu")?;
    if shape != x.shape() {
        return Err(CpuError::invalid(
            "PRelu",
            format!("slope shape {:?} does not broadcast to input shape {:?}", slope.shape(), x.shape()),
        ));
    }
    map2::<T, T, T>(x, slope, x.dtype(), "PRelu", |v, s| if v < T::zero() { v.mul(s) } else { v })
}

/// Pow: the exponent may have any numeric dtype (opset 12+); the output has the base's.
fn pow<T: Arith + Send + Sync>(base: &Tensor, exp: &Tensor) -> Result<Tensor> {
    let dt = base.dtype();
    // x^2 (LayerNorm variance) as a plain multiply: exact and fast.
    if exp.len() == 1 && exp.to_f64_vec().ok().and_then(|v| v.first().copied()) == Some(2.0) {
        return map1::<T, T>(base, dt, |v| v.mul(v));
    }
    if !T::IS_INT && exp.dtype() == dt {
        return dispatch!(float, dt, "Pow", F => map2::<F, F, F>(base, exp, dt, "Pow", |x, y| F::down(x.up().powf(y.up()))));
    }
    // Mixed dtypes: one exact widening of the exponent, then f64 math rounded into T.
    let e = super::cast::cast(exp, DType::F64, true)?;
    map2::<T, f64, T>(base, &e, dt, "Pow", |x, y| T::from_f64(x.to_f64().powf(y)))
}

pub fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = op.name();
    if a.dtype() != b.dtype() {
        return Err(CpuError::invalid(name, format!("input dtypes differ: {} and {}", a.dtype(), b.dtype())));
    }
    let dt = if a.dtype() == DType::Bool { DType::U8 } else { a.dtype() };
    dispatch!(num, dt, name, T => {
        let f = |x: T, y: T| -> u8 {
            u8::from(match op {
                CompareOp::Equal => x == y,
                CompareOp::Less => x < y,
                CompareOp::Greater => x > y,
                CompareOp::LessOrEqual => x <= y,
                CompareOp::GreaterOrEqual => x >= y,
            })
        };
        map2::<T, T, u8>(a, b, DType::Bool, name, f)
    })
}

pub fn logic(op: LogicOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = op.name();
    for t in [a, b] {
        if t.dtype() != DType::Bool {
            return Err(CpuError::dtype(name, t.dtype()));
        }
    }
    let (x, y) = (a, b);
    match op {
        LogicOp::And => map2::<u8, u8, u8>(x, y, DType::Bool, name, |p, q| u8::from(p != 0 && q != 0)),
        LogicOp::Or => map2::<u8, u8, u8>(x, y, DType::Bool, name, |p, q| u8::from(p != 0 || q != 0)),
        LogicOp::Xor => map2::<u8, u8, u8>(x, y, DType::Bool, name, |p, q| u8::from((p != 0) != (q != 0))),
    }
}
