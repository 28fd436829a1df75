//! One-input ops: integer-capable ones (Abs, Neg, Sign, Relu, BitwiseNot) and float
//! math and activations (computed in f32 for f16/bf16, rounded once).

use kiln_ir::Tensor;
use kiln_ir::ops::elementwise::UnaryOp;
use num_traits::{Float, FloatConst};

use super::map::map1;
use super::scalar::{Arith, Bits, Compute, Real};
use crate::{CpuError, Result, dispatch};

pub fn eval(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let name = op.name();
    let dt = x.dtype();
    match op {
        UnaryOp::Abs | UnaryOp::Neg | UnaryOp::Sign | UnaryOp::Relu => {
            dispatch!(num, dt, name, T => numeric::<T>(op, x))
        }
        UnaryOp::BitwiseNot => dispatch!(int, dt, name, T => map1::<T, T>(x, dt, |v| v.not())),
        _ => dispatch!(float, dt, name, T => float::<T>(op, x)),
    }
}

fn numeric<T: Arith>(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    match op {
        UnaryOp::Abs => map1::<T, T>(x, dt, |v| v.abs()),
        UnaryOp::Neg => map1::<T, T>(x, dt, |v| v.neg()),
        UnaryOp::Sign => map1::<T, T>(x, dt, |v| v.sign()),
        // NaN stays NaN (`v > 0` is false, but so is `v < 0`).
        _ => map1::<T, T>(x, dt, |v| if v < T::zero() { T::zero() } else { v }),
    }
}

fn float<T: Compute>(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    use UnaryOp::*;
    let dt = x.dtype();
    // Each arm monomorphises its own loop, so hot activations inline fully.
    macro_rules! go {
        ($f:expr) => {
            map1::<T, T>(x, dt, |v: T| T::down($f(v.up())))
        };
    }
    type R<T> = <T as Compute>::R;
    let c = |v: f32| R::<T>::c(v as f64);
    let (zero, one, half) = (c(0.0), c(1.0), c(0.5));
    match op {
        Sqrt => go!(|v: R<T>| v.sqrt()),
        Reciprocal => go!(|v: R<T>| v.recip()),
        Exp => go!(|v: R<T>| v.exp()),
        Log => go!(|v: R<T>| v.ln()),
        Floor => go!(|v: R<T>| v.floor()),
        Ceil => go!(|v: R<T>| v.ceil()),
        Round => go!(|v: R<T>| v.round_even()),
        Erf => go!(|v: R<T>| v.erf()),
        Sin => go!(|v: R<T>| v.sin()),
        Cos => go!(|v: R<T>| v.cos()),
        Tan => go!(|v: R<T>| v.tan()),
        Asin => go!(|v: R<T>| v.asin()),
        Acos => go!(|v: R<T>| v.acos()),
        Atan => go!(|v: R<T>| v.atan()),
        Sinh => go!(|v: R<T>| v.sinh()),
        Cosh => go!(|v: R<T>| v.cosh()),
        Asinh => go!(|v: R<T>| v.asinh()),
        Acosh => go!(|v: R<T>| v.acosh()),
        Atanh => go!(|v: R<T>| v.atanh()),
        Tanh => go!(|v: R<T>| v.tanh()),
        Sigmoid => go!(sigmoid::<R<T>>),
        HardSigmoid { alpha, beta } => {
            let (a, b) = (c(alpha), c(beta));
            go!(|v: R<T>| (a * v + b).max(zero).min(one))
        }
        HardSwish => {
            let sixth = R::<T>::c(1.0 / 6.0);
            go!(|v: R<T>| v * (v * sixth + half).max(zero).min(one))
        }
        LeakyRelu { alpha } => {
            let a = c(alpha);
            go!(|v: R<T>| if v < zero { a * v } else { v })
        }
        Elu { alpha } => {
            let a = c(alpha);
            go!(|v: R<T>| if v < zero { a * v.exp_m1() } else { v })
        }
        Selu { alpha, gamma } => {
            let (a, g) = (c(alpha), c(gamma));
            go!(|v: R<T>| if v > zero { g * v } else { g * (a * v.exp() - a) })
        }
        Celu { alpha } => {
            let a = c(alpha);
            go!(|v: R<T>| v.max(zero) + (a * (v / a).exp_m1()).min(zero))
        }
        Gelu { tanh: false } => {
            let inv_sqrt2 = R::<T>::FRAC_1_SQRT_2();
            go!(|v: R<T>| half * v * (one + (v * inv_sqrt2).erf()))
        }
        Gelu { tanh: true } => {
            let k = (c(2.0) / R::<T>::PI()).sqrt();
            let b = c(0.044715);
            go!(|v: R<T>| half * v * (one + (k * (v + b * v * v * v)).tanh()))
        }
        Mish => go!(|v: R<T>| v * softplus(v).tanh()),
        Softplus => go!(softplus::<R<T>>),
        Softsign => go!(|v: R<T>| v / (one + v.abs())),
        ThresholdedRelu { alpha } => {
            let a = c(alpha);
            go!(|v: R<T>| if v > a { v } else { zero })
        }
        Shrink { bias, lambd } => {
            let (b, l) = (c(bias), c(lambd));
            go!(|v: R<T>| if v < -l {
                v + b
            } else if v > l {
                v - b
            } else {
                zero
            })
        }
        Swish { alpha } => {
            let a = c(alpha);
            go!(|v: R<T>| v * sigmoid(a * v))
        }
        Abs | Neg | Sign | Relu | BitwiseNot => Err(CpuError::invalid(op.name(), "not a float op")),
    }
}

/// 1 / (1 + e^-x), without overflowing e^-x for large negative x.
fn sigmoid<R: Real>(v: R) -> R {
    let one = R::one();
    if v >= R::zero() {
        one / (one + (-v).exp())
    } else {
        let e = v.exp();
        e / (one + e)
    }
}

/// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), stable for large |x|.
fn softplus<R: Real>(v: R) -> R {
    if v.is_nan() { v } else { v.max(R::zero()) + (-v.abs()).exp().ln_1p() }
}
