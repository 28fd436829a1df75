//! Tensors as ndarray arrays, and dtype dispatch for kernels.

use kiln_ir::{DType, Element, Tensor};
use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn};

use crate::{CpuError, Result};

/// The tensor as an n-d array of `T` (borrowed when its bytes are aligned).
pub fn view<T: Element>(t: &Tensor) -> Result<CowArray<'_, T, IxDyn>> {
    let shape = IxDyn(t.shape());
    Ok(match t.as_slice::<T>()? {
        std::borrow::Cow::Borrowed(s) => CowArray::from(ArrayViewD::from_shape(shape, s).map_err(shape_err)?),
        std::borrow::Cow::Owned(v) => CowArray::from(ArrayD::from_shape_vec(shape, v).map_err(shape_err)?),
    })
}

fn shape_err(e: ndarray::ShapeError) -> CpuError {
    CpuError::invalid("tensor", e.to_string())
}

/// An array as a tensor (any memory layout; copied into row-major order if needed).
pub fn tensor<T: Element>(a: ArrayD<T>) -> Tensor {
    tensor_as(T::DTYPE, a)
}

/// Like [`tensor`] with a storage-compatible dtype (`u8` data as `Bool`).
pub fn tensor_as<T: Element>(dtype: DType, a: ArrayD<T>) -> Tensor {
    let shape = a.shape().to_vec();
    let data = if a.is_standard_layout() {
        let (v, offset) = a.into_raw_vec_and_offset();
        match offset {
            Some(0) | None => v,
            Some(o) => v[o..].to_vec(),
        }
    } else {
        a.iter().cloned().collect()
    };
    Tensor::from_vec_as(dtype, shape, data).expect("array length matches its shape")
}

/// A bool array as a `Bool` tensor.
pub fn bool_tensor(a: ArrayD<bool>) -> Tensor {
    tensor_as(DType::Bool, a.mapv(u8::from))
}

/// A `Bool` tensor as a bool array.
pub fn bool_view(t: &Tensor) -> Result<ArrayD<bool>> {
    if t.dtype() != DType::Bool {
        return Err(CpuError::invalid("tensor", format!("expected a bool tensor, got {}", t.dtype())));
    }
    Ok(view::<u8>(t)?.mapv(|v| v != 0))
}

/// Numpy broadcast shape of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize], op: &str) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(CpuError::invalid(op, format!("shapes {a:?} and {b:?} do not broadcast"))),
            }
        })
        .collect()
}

/// Input `i`, which the op requires.
pub fn req<'a>(inputs: &'a [Option<Tensor>], i: usize, op: &str) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| CpuError::invalid(op, format!("input {i} is required but missing")))
}

/// Input `i` if present.
pub fn opt(inputs: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    inputs.get(i).and_then(Option::as_ref)
}

/// Runs `$body` with `$T` bound to the Rust type of a dtype, for the listed families:
/// `float` (f32 f64 f16 bf16), `int` (all integers), `num` (float + int).
/// Other dtypes are an `UnsupportedDType` error naming `$op`.
#[macro_export]
macro_rules! dispatch {
    (float, $dt:expr, $op:expr, $T:ident => $body:expr) => {
        match $dt {
            kiln_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            kiln_ir::DType::F64 => {
                type $T = f64;
                $body
            }
            kiln_ir::DType::F16 => {
                type $T = half::f16;
                $body
            }
            kiln_ir::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err($crate::CpuError::dtype($op, other)),
        }
    };
    (int, $dt:expr, $op:expr, $T:ident => $body:expr) => {
        match $dt {
            kiln_ir::DType::I8 => {
                type $T = i8;
                $body
            }
            kiln_ir::DType::I16 => {
                type $T = i16;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            kiln_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                $body
            }
            kiln_ir::DType::U16 => {
                type $T = u16;
                $body
            }
            kiln_ir::DType::U32 => {
                type $T = u32;
                $body
            }
            kiln_ir::DType::U64 => {
                type $T = u64;
                $body
            }
            other => Err($crate::CpuError::dtype($op, other)),
        }
    };
    (num, $dt:expr, $op:expr, $T:ident => $body:expr) => {
        match $dt {
            kiln_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            kiln_ir::DType::F64 => {
                type $T = f64;
                $body
            }
            kiln_ir::DType::F16 => {
                type $T = half::f16;
                $body
            }
            kiln_ir::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            kiln_ir::DType::I8 => {
                type $T = i8;
                $body
            }
            kiln_ir::DType::I16 => {
                type $T = i16;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            kiln_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                $body
            }
            kiln_ir::DType::U16 => {
                type $T = u16;
                $body
            }
            kiln_ir::DType::U32 => {
                type $T = u32;
                $body
            }
            kiln_ir::DType::U64 => {
                type $T = u64;
                $body
            }
            other => Err($crate::CpuError::dtype($op, other)),
        }
    };
    // Any dtype, by storage: bool and FP8 as u8 (for data movement that copies elements).
    (any, $dt:expr, $op:expr, $T:ident => $body:expr) => {
        kiln_ir::with_storage!($dt, $T => $body)
    };
}
