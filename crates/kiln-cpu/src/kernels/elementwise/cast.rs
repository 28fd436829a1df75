//! Cast between all of Kiln's dtypes. Each element goes through an exact intermediate
//! (`Repr`: f64 for floats, i64/u64 for integers) and is rounded once into the target.

use half::{bf16, f16};
use kiln_ir::{DType, Element, Tensor};

use super::fp8::{E4M3FN, E5M2, Fp8};
use super::map::map1;
use crate::{CpuError, Result};

/// A value in a form every source type converts to exactly.
#[derive(Clone, Copy)]
enum Repr {
    F(f64),
    I(i64),
    U(u64),
}

impl Repr {
    fn as_f64(self) -> f64 {
        match self {
            Repr::F(f) => f,
            Repr::I(i) => i as f64,
            Repr::U(u) => u as f64,
        }
    }

    fn is_true(self) -> bool {
        match self {
            // NaN is true: it is not ±0.
            Repr::F(f) => f != 0.0,
            Repr::I(i) => i != 0,
            Repr::U(u) => u != 0,
        }
    }

    /// Integer bits: floats truncate toward zero; out-of-range integers wrap (two's complement).
    fn as_i64_bits(self) -> i64 {
        match self {
            Repr::F(f) if f < 0.0 => f as i64,
            Repr::F(f) => (f as u64) as i64,
            Repr::I(i) => i,
            Repr::U(u) => u as i64,
        }
    }
}

trait Castable: Element + Copy {
    fn to_repr(self) -> Repr;
    fn from_repr(r: Repr) -> Self;
}

macro_rules! castable_int {
    ($($t:ty => $k:ident),*) => {$(
        impl Castable for $t {
            fn to_repr(self) -> Repr { Repr::$k(self as _) }
            fn from_repr(r: Repr) -> Self { r.as_i64_bits() as $t }
        }
    )*};
}
castable_int!(i8 => I, i16 => I, i32 => I, i64 => I, u8 => U, u16 => U, u32 => U, u64 => U);

impl Castable for f32 {
    fn to_repr(self) -> Repr {
        Repr::F(self as f64)
    }
    fn from_repr(r: Repr) -> Self {
        // Integers round once, directly to f32.
        match r {
            Repr::F(f) => f as f32,
            Repr::I(i) => i as f32,
            Repr::U(u) => u as f32,
        }
    }
}

impl Castable for f64 {
    fn to_repr(self) -> Repr {
        Repr::F(self)
    }
    fn from_repr(r: Repr) -> Self {
        r.as_f64()
    }
}

impl Castable for f16 {
    fn to_repr(self) -> Repr {
        Repr::F(self.to_f64())
    }
    fn from_repr(r: Repr) -> Self {
        f16::from_f64(r.as_f64())
    }
}

impl Castable for bf16 {
    fn to_repr(self) -> Repr {
        Repr::F(self.to_f64())
    }
    fn from_repr(r: Repr) -> Self {
        bf16::from_f64(r.as_f64())
    }
}

/// Casts `x` to `to`; `saturate` applies to FP8 targets only.
pub fn cast(x: &Tensor, to: DType, saturate: bool) -> Result<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    match x.dtype() {
        DType::Bool => write::<u8>(x, to, saturate, |b| Repr::U(u64::from(b != 0))),
        DType::F8E4M3FN => write::<u8>(x, to, saturate, |b| Repr::F(E4M3FN.decode(b) as f64)),
        DType::F8E5M2 => write::<u8>(x, to, saturate, |b| Repr::F(E5M2.decode(b) as f64)),
        DType::F32 => write::<f32>(x, to, saturate, f32::to_repr),
        DType::F64 => write::<f64>(x, to, saturate, f64::to_repr),
        DType::F16 => write::<f16>(x, to, saturate, f16::to_repr),
        DType::BF16 => write::<bf16>(x, to, saturate, bf16::to_repr),
        DType::I8 => write::<i8>(x, to, saturate, i8::to_repr),
        DType::I16 => write::<i16>(x, to, saturate, i16::to_repr),
        DType::I32 => write::<i32>(x, to, saturate, i32::to_repr),
        DType::I64 => write::<i64>(x, to, saturate, i64::to_repr),
        DType::U8 => write::<u8>(x, to, saturate, u8::to_repr),
        DType::U16 => write::<u16>(x, to, saturate, u16::to_repr),
        DType::U32 => write::<u32>(x, to, saturate, u32::to_repr),
        DType::U64 => write::<u64>(x, to, saturate, u64::to_repr),
    }
}

/// The second half of a cast: from the source's `Repr` into the target type.
fn write<S: Element + Copy>(x: &Tensor, to: DType, saturate: bool, read: impl Fn(S) -> Repr + Sync) -> Result<Tensor> {
    fn to_fp8<S: Element + Copy>(
        x: &Tensor,
        to: DType,
        f: Fp8,
        sat: bool,
        read: impl Fn(S) -> Repr + Sync,
    ) -> Result<Tensor> {
        map1::<S, u8>(x, to, |v| f.encode(fp8_source(read(v)), sat))
    }
    match to {
        DType::Bool => map1::<S, u8>(x, to, |v| u8::from(read(v).is_true())),
        DType::F8E4M3FN => to_fp8(x, to, E4M3FN, saturate, read),
        DType::F8E5M2 => to_fp8(x, to, E5M2, saturate, read),
        DType::F32 => map1::<S, f32>(x, to, |v| f32::from_repr(read(v))),
        DType::F64 => map1::<S, f64>(x, to, |v| f64::from_repr(read(v))),
        DType::F16 => map1::<S, f16>(x, to, |v| f16::from_repr(read(v))),
        DType::BF16 => map1::<S, bf16>(x, to, |v| bf16::from_repr(read(v))),
        DType::I8 => map1::<S, i8>(x, to, |v| i8::from_repr(read(v))),
        DType::I16 => map1::<S, i16>(x, to, |v| i16::from_repr(read(v))),
        DType::I32 => map1::<S, i32>(x, to, |v| i32::from_repr(read(v))),
        DType::I64 => map1::<S, i64>(x, to, |v| i64::from_repr(read(v))),
        DType::U8 => map1::<S, u8>(x, to, |v| u8::from_repr(read(v))),
        DType::U16 => map1::<S, u16>(x, to, |v| u16::from_repr(read(v))),
        DType::U32 => map1::<S, u32>(x, to, |v| u32::from_repr(read(v))),
        DType::U64 => map1::<S, u64>(x, to, |v| u64::from_repr(read(v))),
    }
    .map_err(|e| match e {
        CpuError::Ir(_) => CpuError::invalid("Cast", format!("cannot cast {} to {to}: {e}", x.dtype())),
        e => e,
    })
}

/// FP8 encoders see values as ONNX Runtime does: wider sources go through f32 first.
fn fp8_source(r: Repr) -> f64 {
    r.as_f64() as f32 as f64
}
