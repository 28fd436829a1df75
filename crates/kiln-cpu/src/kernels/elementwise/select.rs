//! Ops that pick or fold values: variadic Min/Max/Mean/Sum, Clip, Where, IsNaN/IsInf.

use kiln_ir::ops::elementwise::VariadicOp;
use kiln_ir::{DType, Tensor};

use super::map::{map1, map2, map3};
use super::scalar::Arith;
use crate::{CpuError, Result, dispatch};

/// Folds the inputs pairwise left to right (each step broadcasts); Mean divides at the end.
pub fn variadic(op: VariadicOp, inputs: &[&Tensor]) -> Result<Tensor> {
    let name = op.name();
    let first = *inputs.first().ok_or_else(|| CpuError::invalid(name, "needs at least one input"))?;
    let dt = first.dtype();
    if let Some(t) = inputs.iter().find(|t| t.dtype() != dt) {
        return Err(CpuError::invalid(name, format!("input dtypes differ: {dt} and {}", t.dtype())));
    }
    dispatch!(num, dt, name, T => {
        let f: fn(T, T) -> T = match op {
            VariadicOp::Min => T::min_nan,
            VariadicOp::Max => T::max_nan,
            VariadicOp::Mean | VariadicOp::Sum => T::add,
        };
        let mut acc = first.clone();
        for t in &inputs[1..] {
            acc = map2::<T, T, T>(&acc, t, dt, name, f)?;
        }
        if op == VariadicOp::Mean && inputs.len() > 1 {
            let n = T::from_f64(inputs.len() as f64);
            acc = map1::<T, T>(&acc, dt, |v| v.div(n))?;
        }
        Ok(acc)
    })
}

/// Clip to `[lo, hi]` (attributes before opset 11, scalar inputs after). NaN stays NaN;
/// when lo > hi every value becomes hi, as ONNX specifies.
pub fn clip(
    x: &Tensor,
    min: Option<f32>,
    max: Option<f32>,
    lo: Option<&Tensor>,
    hi: Option<&Tensor>,
) -> Result<Tensor> {
    let dt = x.dtype();
    dispatch!(num, dt, "Clip", T => {
        let bound = |attr: Option<f32>, input: Option<&Tensor>| -> Result<Option<T>> {
            if let Some(t) = input {
                if t.dtype() != dt {
                    return Err(CpuError::invalid("Clip", format!("bound dtype {} differs from input dtype {dt}", t.dtype())));
                }
                if t.len() != 1 {
                    return Err(CpuError::invalid("Clip", format!("bounds must be scalars, got shape {:?}", t.shape())));
                }
                return Ok(t.as_slice::<T>()?.first().copied());
            }
            Ok(attr.map(|a| T::from_f64(a as f64)))
        };
        let (lo, hi) = (bound(min, lo)?, bound(max, hi)?);
        map1::<T, T>(x, dt, |v| {
            let v = match lo { Some(l) if v < l => l, _ => v };
            match hi { Some(h) if v > h => h, _ => v }
        })
    })
}

/// Where(cond, x, y): elements of x where cond is true, else of y (any dtype, by storage).
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if cond.dtype() != DType::Bool {
        return Err(CpuError::invalid("Where", format!("condition must be bool, got {}", cond.dtype())));
    }
    if x.dtype() != y.dtype() {
        return Err(CpuError::invalid("Where", format!("input dtypes differ: {} and {}", x.dtype(), y.dtype())));
    }
    let dt = x.dtype();
    dispatch!(any, dt, "Where", T => map3::<u8, T, T, T>(cond, x, y, dt, "Where", |c, a, b| if c != 0 { a } else { b }))
}

pub fn is_nan(x: &Tensor) -> Result<Tensor> {
    dispatch!(float, x.dtype(), "IsNaN", T => map1::<T, u8>(x, DType::Bool, |v| u8::from(v.is_nan())))
}

pub fn is_inf(x: &Tensor, positive: bool, negative: bool) -> Result<Tensor> {
    dispatch!(float, x.dtype(), "IsInf", T => map1::<T, u8>(x, DType::Bool, |v| {
        let f = v.to_f64();
        u8::from(f.is_infinite() && if f > 0.0 { positive } else { negative })
    }))
}
