//! Conversions between tensors and the f32/f64 arrays the vision kernels compute in.

use kiln_ir::{Element, Tensor};
use num_traits::{Bounded, Float, NumCast};

use crate::Result;

/// The float type a kernel computes in: f32, or f64 for f64 data.
pub trait Real: Float + Send + Sync + Default + std::iter::Sum + std::fmt::Debug + 'static {}
impl Real for f32 {}
impl Real for f64 {}

/// The elements of `t` as `A` (NaN where a value does not convert).
pub fn to_real<T: Element + NumCast + Copy, A: Real>(t: &Tensor) -> Result<Vec<A>> {
    Ok(t.as_slice::<T>()?.iter().map(|&v| <A as NumCast>::from(v).unwrap_or_else(A::nan)).collect())
}

/// `values` as a tensor of `T`: floats round to nearest, integers round half to even
/// and saturate (as the ONNX reference's `saturate_cast`).
pub fn from_real<T: Element + NumCast + Bounded + Copy, A: Real>(values: Vec<A>, shape: Vec<usize>) -> Result<Tensor> {
    let is_int = T::DTYPE.is_integer();
    let (lo, hi) = (<A as NumCast>::from(T::min_value()), <A as NumCast>::from(T::max_value()));
    let data: Vec<T> = values
        .into_iter()
        .map(|v| {
            let v = if is_int { round_half_even(v) } else { v };
            let v = match (is_int, lo, hi) {
                (true, Some(lo), Some(hi)) => v.max(lo).min(hi),
                _ => v,
            };
            <T as NumCast>::from(v).unwrap_or_else(T::min_value)
        })
        .collect();
    Ok(Tensor::from_vec(shape, data)?)
}

fn round_half_even<A: Real>(v: A) -> A {
    let r = v.round();
    let two = A::one() + A::one();
    if (v - v.trunc()).abs() == A::one() / two && r % two != A::zero() { r - v.signum() } else { r }
}

/// Runs `$body` with `$T` the element type of `$dt` and `$A` the float type to compute
/// in: f64 for f64 and the integers (exact for all their values), f32 otherwise.
macro_rules! with_real {
    ($dt:expr, $op:expr, $T:ident, $A:ident => $body:expr) => {
        match $dt {
            kiln_ir::DType::F32 => {
                type $T = f32;
                type $A = f32;
                $body
            }
            kiln_ir::DType::F16 => {
                type $T = half::f16;
                type $A = f32;
                $body
            }
            kiln_ir::DType::BF16 => {
                type $T = half::bf16;
                type $A = f32;
                $body
            }
            kiln_ir::DType::F64 => {
                type $T = f64;
                type $A = f64;
                $body
            }
            kiln_ir::DType::I8 => {
                type $T = i8;
                type $A = f64;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                type $A = f64;
                $body
            }
            kiln_ir::DType::I16 => {
                type $T = i16;
                type $A = f64;
                $body
            }
            kiln_ir::DType::U16 => {
                type $T = u16;
                type $A = f64;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                type $A = f64;
                $body
            }
            kiln_ir::DType::U32 => {
                type $T = u32;
                type $A = f64;
                $body
            }
            kiln_ir::DType::I64 => {
                type $T = i64;
                type $A = f64;
                $body
            }
            kiln_ir::DType::U64 => {
                type $T = u64;
                type $A = f64;
                $body
            }
            other => Err($crate::CpuError::dtype($op, other)),
        }
    };
}
pub(crate) use with_real;
