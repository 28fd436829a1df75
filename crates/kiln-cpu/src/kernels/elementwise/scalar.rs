//! Per-element arithmetic over Kiln's Rust element types, so each kernel is written once.
//!
//! Integers wrap on overflow (as ONNX Runtime's C++ does in practice) and divide
//! truncating toward zero; callers check divisors for zero first. Floats follow IEEE.

use half::{bf16, f16};
use kiln_ir::Element;

/// Arithmetic every numeric element type has.
pub trait Arith: Element + Copy + PartialOrd + Default {
    const IS_INT: bool;
    fn zero() -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Integers: truncating division; the divisor must not be zero.
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod` / `%`).
    fn rem_trunc(self, o: Self) -> Self;
    fn abs(self) -> Self;
    fn neg(self) -> Self;
    fn is_zero(self) -> bool;
    fn is_nan(self) -> bool;
    fn to_f64(self) -> f64;
    /// Rust `as` semantics (saturating for float → int).
    fn from_f64(v: f64) -> Self;

    /// -1, 0 or 1 (NaN stays NaN).
    fn sign(self) -> Self {
        let z = Self::zero();
        if self.is_nan() || self == z {
            self
        } else if self > z {
            Self::from_f64(1.0)
        } else {
            Self::from_f64(-1.0)
        }
    }

    /// Remainder with the sign of the divisor (Python `%`), for `Mod` with `fmod=0`.
    fn rem_floor(self, o: Self) -> Self {
        let r = self.rem_trunc(o);
        let z = Self::zero();
        if r != z && ((r < z) != (o < z)) { r.add(o) } else { r }
    }

    /// Min and max that propagate NaN, like ONNX Runtime.
    fn min_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o < self {
            o
        } else {
            self
        }
    }

    fn max_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o > self {
            o
        } else {
            self
        }
    }
}

macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const IS_INT: bool = true;
            fn zero() -> Self { 0 }
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn rem_trunc(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self { if self < 0 { self.wrapping_neg() } else { self } }
            fn neg(self) -> Self { self.wrapping_neg() }
            fn is_zero(self) -> bool { self == 0 }
            fn is_nan(self) -> bool { false }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
arith_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const IS_INT: bool = false;
            fn zero() -> Self { <$t as num_traits::Zero>::zero() }
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            fn rem_trunc(self, o: Self) -> Self { self % o }
            fn abs(self) -> Self { num_traits::Float::abs(self) }
            fn neg(self) -> Self { -self }
            fn is_zero(self) -> bool { self == Self::zero() }
            fn is_nan(self) -> bool { num_traits::Float::is_nan(self) }
            fn to_f64(self) -> f64 { num_traits::ToPrimitive::to_f64(&self).unwrap_or(f64::NAN) }
            fn from_f64(v: f64) -> Self { <$t as num_traits::FromPrimitive>::from_f64(v).unwrap_or(<$t as num_traits::Float>::nan()) }
        }
    )*};
}
arith_float!(f32, f64, f16, bf16);

/// Bit operations of the integer types.
pub trait Bits: Arith {
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
    /// Shifts by `n` bits; shifting out every bit gives 0 (not C's undefined behaviour).
    fn shl(self, n: Self) -> Self;
    fn shr(self, n: Self) -> Self;
}

macro_rules! bits {
    ($($t:ty),*) => {$(
        impl Bits for $t {
            fn and(self, o: Self) -> Self { self & o }
            fn or(self, o: Self) -> Self { self | o }
            fn xor(self, o: Self) -> Self { self ^ o }
            fn not(self) -> Self { !self }
            fn shl(self, n: Self) -> Self { u32::try_from(n).ok().and_then(|n| self.checked_shl(n)).unwrap_or(0) }
            fn shr(self, n: Self) -> Self { u32::try_from(n).ok().and_then(|n| self.checked_shr(n)).unwrap_or(0) }
        }
    )*};
}
bits!(i8, i16, i32, i64, u8, u16, u32, u64);

/// A float type transcendental math runs in: f32 or f64.
pub trait Real: num_traits::Float + num_traits::FloatConst + Send + Sync + 'static {
    fn c(v: f64) -> Self;
    fn erf(self) -> Self;
    fn round_even(self) -> Self;
}

impl Real for f32 {
    fn c(v: f64) -> Self {
        v as f32
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
}

impl Real for f64 {
    fn c(v: f64) -> Self {
        v
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
}

/// A float element type and the type its math is computed in: f16 and bf16 compute
/// in f32 and round once at the end, as ONNX Runtime does.
pub trait Compute: Arith + Send + Sync {
    type R: Real;
    fn up(self) -> Self::R;
    fn down(r: Self::R) -> Self;
}

impl Compute for f32 {
    type R = f32;
    fn up(self) -> f32 {
        self
    }
    fn down(r: f32) -> f32 {
        r
    }
}

impl Compute for f64 {
    type R = f64;
    fn up(self) -> f64 {
        self
    }
    fn down(r: f64) -> f64 {
        r
    }
}

impl Compute for f16 {
    type R = f32;
    fn up(self) -> f32 {
        self.to_f32()
    }
    fn down(r: f32) -> f16 {
        f16::from_f32(r)
    }
}

impl Compute for bf16 {
    type R = f32;
    fn up(self) -> f32 {
        self.to_f32()
    }
    fn down(r: f32) -> bf16 {
        bf16::from_f32(r)
    }
}
