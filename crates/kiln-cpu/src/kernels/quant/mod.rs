//! Quantization kernels: (de)quantization (`linear`), integer matmul and convolution
//! (`integer`), FP8 conversions (`fp8`), and value conversions shared by them.

mod fp8;
mod integer;
mod linear;

pub use fp8::Fp8;

use half::{bf16, f16};
use kiln_ir::ops::{OpFamily, QuantOp};
use kiln_ir::{DType, Tensor};

use crate::{CpuError, EvalContext, Result};

pub fn eval(op: &QuantOp, inputs: &[Option<Tensor>], _n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    match op {
        QuantOp::Quantize(q) => linear::quantize(q, inputs, name).map(|t| vec![t]),
        QuantOp::Dequantize(d) => linear::dequantize(d, inputs, name).map(|t| vec![t]),
        QuantOp::DynamicQuantize => linear::dynamic_quantize(inputs, name),
        QuantOp::MatMulInteger => integer::matmul_integer(inputs, name).map(|t| vec![t]),
        QuantOp::QLinearMatMul => integer::qlinear_matmul(inputs, name).map(|t| vec![t]),
        QuantOp::ConvInteger(g) => integer::conv_integer(g, inputs, name).map(|t| vec![t]),
        QuantOp::QLinearConv(g) => integer::qlinear_conv(g, inputs, name).map(|t| vec![t]),
    }
}

/// Any numeric tensor's values as f64 (FP8 decoded).
fn values_f64(t: &Tensor) -> Result<Vec<f64>> {
    match Fp8::of(t.dtype()) {
        Some(f) => Ok(t.bytes().iter().map(|&b| f.decode(b) as f64).collect()),
        None => Ok(t.to_f64_vec()?),
    }
}

/// `v` rounded to the precision of float dtype `dtype` (f16/bf16 through f32, as
/// numpy and ORT compute them).
fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F64 => v,
        DType::F16 => f16::from_f32(v as f32).to_f64(),
        DType::BF16 => bf16::from_f32(v as f32).to_f64(),
        _ => v as f32 as f64,
    }
}

/// A float tensor of `dtype` from f64 values (each rounded once, f16/bf16 via f32).
fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f64>, op: &str) -> Result<Tensor> {
    Ok(match dtype {
        DType::F64 => Tensor::from_vec(shape, v)?,
        DType::F32 => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect())?,
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(|x| f16::from_f32(x as f32)).collect())?,
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(|x| bf16::from_f32(x as f32)).collect())?,
        other => return Err(CpuError::dtype(op, other)),
    })
}

/// The integer range a quantized integer type saturates to.
fn int_range(dtype: DType) -> Option<(i64, i64)> {
    match dtype {
        DType::U8 => Some((0, u8::MAX as i64)),
        DType::I8 => Some((i8::MIN as i64, i8::MAX as i64)),
        DType::U16 => Some((0, u16::MAX as i64)),
        DType::I16 => Some((i16::MIN as i64, i16::MAX as i64)),
        DType::I32 => Some((i32::MIN as i64, i32::MAX as i64)),
        _ => None,
    }
}

/// An integer tensor of `dtype` from values already within its range.
fn int_tensor(dtype: DType, shape: Vec<usize>, v: Vec<i64>, op: &str) -> Result<Tensor> {
    Ok(match dtype {
        DType::U8 => Tensor::from_vec(shape, v.into_iter().map(|x| x as u8).collect())?,
        DType::I8 => Tensor::from_vec(shape, v.into_iter().map(|x| x as i8).collect())?,
        DType::U16 => Tensor::from_vec(shape, v.into_iter().map(|x| x as u16).collect())?,
        DType::I16 => Tensor::from_vec(shape, v.into_iter().map(|x| x as i16).collect())?,
        DType::I32 => Tensor::from_vec(shape, v.into_iter().map(|x| x as i32).collect())?,
        other => return Err(CpuError::dtype(op, other)),
    })
}

/// Rounds half to even and saturates to `dtype`'s integer range (NaN → 0, as a
/// float-to-int conversion does).
fn saturate_int(v: f64, (lo, hi): (i64, i64)) -> i64 {
    let r = v.round_ties_even();
    if r.is_nan() { 0 } else { (r.clamp(lo as f64, hi as f64)) as i64 }
}
