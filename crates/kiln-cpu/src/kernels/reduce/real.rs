//! The element types of the family's kernels and their arithmetic: floats compute in an
//! accumulator type (f32 for f32/f16/bf16, f64 for f64) and round once at the end;
//! integers wrap like the reference's fixed-width arithmetic.

use half::{bf16, f16};
use kiln_ir::{DType, Element, Tensor};
use ndarray::ArrayD;
use num_traits::Float;

use crate::array::tensor;
use crate::{Result, dispatch};

pub trait Real: Element + Copy + PartialOrd + Default {
    type Acc: Float + Into<f64> + Send + Sync + Default + std::fmt::Debug;
    fn acc(self) -> Self::Acc;
    fn of_acc(a: Self::Acc) -> Self;
    fn acc_of_f64(v: f64) -> Self::Acc;
    fn to_f64(self) -> f64 {
        self.acc().into()
    }
    fn of_f64(v: f64) -> Self {
        Self::of_acc(Self::acc_of_f64(v))
    }
}

impl Real for f32 {
    type Acc = f32;
    fn acc(self) -> f32 {
        self
    }
    fn of_acc(a: f32) -> f32 {
        a
    }
    fn acc_of_f64(v: f64) -> f32 {
        v as f32
    }
}

impl Real for f64 {
    type Acc = f64;
    fn acc(self) -> f64 {
        self
    }
    fn of_acc(a: f64) -> f64 {
        a
    }
    fn acc_of_f64(v: f64) -> f64 {
        v
    }
    fn of_f64(v: f64) -> f64 {
        v
    }
}

macro_rules! half_real {
    ($($t:ty),*) => {$(
        impl Real for $t {
            type Acc = f32;
            fn acc(self) -> f32 {
                self.to_f32()
            }
            fn of_acc(a: f32) -> $t {
                <$t>::from_f32(a)
            }
            fn acc_of_f64(v: f64) -> f32 {
                v as f32
            }
            // Round once from f64, not through f32.
            fn of_f64(v: f64) -> $t {
                <$t>::from_f64(v)
            }
        }
    )*};
}
half_real!(f16, bf16);

/// Integer elements: wrapping arithmetic, conversions through f64 for the
/// reductions that the reference computes in floating point.
pub trait Int:
    Element + Copy + Ord + Default + num_traits::PrimInt + num_traits::WrappingAdd + num_traits::WrappingMul
{
    fn wrapping_abs(self) -> Self;
    fn as_f64(self) -> f64;
    /// Saturating, truncating toward zero (numpy's `astype`).
    fn of_f64(v: f64) -> Self;
}

macro_rules! int {
    (signed $($t:ty),*) => {$(
        impl Int for $t {
            fn wrapping_abs(self) -> $t {
                <$t>::wrapping_abs(self)
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn of_f64(v: f64) -> $t {
                v as $t
            }
        }
    )*};
    (unsigned $($t:ty),*) => {$(
        impl Int for $t {
            fn wrapping_abs(self) -> $t {
                self
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn of_f64(v: f64) -> $t {
                v as $t
            }
        }
    )*};
}
int!(signed i8, i16, i32, i64);
int!(unsigned u8, u16, u32, u64);

/// NaN test that also compiles for integers (always false there).
#[allow(clippy::eq_op)]
pub fn is_nan<T: PartialEq>(v: &T) -> bool {
    v != v
}

/// A total order where NaN is greater than every number (numpy's sort order).
pub fn nan_last<T: PartialOrd>(a: &T, b: &T) -> std::cmp::Ordering {
    a.partial_cmp(b).unwrap_or_else(|| is_nan(a).cmp(&is_nan(b)))
}

/// f64 values as a tensor of the float `dtype` (statistics outputs, running means).
pub fn float_tensor(dtype: DType, values: ArrayD<f64>, op: &str) -> Result<Tensor> {
    dispatch!(float, dtype, op, T => Ok(tensor(values.mapv(<T as Real>::of_f64))))
}
