use std::borrow::Cow;
use std::fmt;

pub use bytes::Bytes;
use half::{bf16, f16};

use crate::{DType, IrError, Result};

/// A plain element type that a tensor can be viewed as.
///
/// Unsigned integers also view any dtype of their size, by storage.
pub trait Element: bytemuck::Pod + Send + Sync + fmt::Debug + PartialEq + 'static {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i8 => I8, u8 => U8, i16 => I16,
         u16 => U16, i32 => I32, u32 => U32, i64 => I64, u64 => U64);

/// A host tensor: dtype, shape and bytes in row-major order.
///
/// The bytes are shared and immutable: a weight read from an mmap'd model file is a
/// view of the file (no copy), and cloning a tensor never copies its data.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Bytes,
}

/// Owner of a typed vector, so `Bytes` keeps the element alignment of `T`.
struct TypedVec<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for TypedVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl Tensor {
    /// A tensor over raw little-endian bytes (e.g. ONNX `raw_data` or a mapped file).
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor> {
        let expected = shape.iter().product::<usize>() * dtype.size();
        if data.len() != expected {
            return Err(IrError::DataSize { dtype, shape, expected, actual: data.len() });
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor> {
        Self::from_vec_as(T::DTYPE, shape, values)
    }

    /// Like `from_vec` with a storage-compatible dtype (e.g. `u8` data as `Bool`).
    pub fn from_vec_as<T: Element>(dtype: DType, shape: Vec<usize>, values: Vec<T>) -> Result<Tensor> {
        if dtype.size() != std::mem::size_of::<T>() {
            return Err(IrError::DTypeMismatch { expected: dtype, actual: T::DTYPE });
        }
        let data = Bytes::from_owner(TypedVec(values));
        Self::from_bytes(dtype, shape, data)
    }

    pub fn from_bools(shape: Vec<usize>, values: Vec<bool>) -> Result<Tensor> {
        let bytes: Vec<u8> = values.into_iter().map(u8::from).collect();
        Self::from_vec_as(DType::Bool, shape, bytes)
    }

    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor { dtype: T::DTYPE, shape: vec![], data: Bytes::from_owner(TypedVec(vec![value])) }
    }

    /// A tensor of `shape` whose bytes are all zero (0, 0.0 or false).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>() * dtype.size();
        Tensor { dtype, shape, data: Bytes::from(vec![0u8; n]) }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// The same data under another shape with as many elements.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::from_bytes(self.dtype, shape, self.data.clone())
    }

    fn check_view<T: Element>(&self) -> Result<()> {
        // Any dtype may be viewed by storage as the unsigned integer of its size
        // (bool and FP8 as u8, f16 as u16, …): data movement copies elements blindly.
        let unsigned = matches!(T::DTYPE, DType::U8 | DType::U16 | DType::U32 | DType::U64);
        let compatible = T::DTYPE == self.dtype || (unsigned && T::DTYPE.size() == self.dtype.size());
        if compatible { Ok(()) } else { Err(IrError::DTypeMismatch { expected: self.dtype, actual: T::DTYPE }) }
    }

    /// The elements as a slice: borrowed when the bytes are aligned for `T`
    /// (always for computed tensors), copied otherwise (e.g. unaligned file weights).
    pub fn as_slice<T: Element>(&self) -> Result<Cow<'_, [T]>> {
        self.check_view::<T>()?;
        Ok(match bytemuck::try_cast_slice(&self.data) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(&self.data)),
        })
    }

    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.as_slice::<T>()?.into_owned())
    }

    pub fn to_bools(&self) -> Result<Vec<bool>> {
        if self.dtype != DType::Bool {
            return Err(IrError::DTypeMismatch { expected: DType::Bool, actual: self.dtype });
        }
        Ok(self.data.iter().map(|&b| b != 0).collect())
    }

    /// Any integer tensor's elements as i64 (shape tensors, axes, indices).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            DType::I64 => self.to_vec::<i64>()?,
            DType::I32 => self.as_slice::<i32>()?.iter().map(|&v| v as i64).collect(),
            DType::I16 => self.as_slice::<i16>()?.iter().map(|&v| v as i64).collect(),
            DType::I8 => self.as_slice::<i8>()?.iter().map(|&v| v as i64).collect(),
            DType::U8 | DType::Bool => self.data.iter().map(|&v| v as i64).collect(),
            DType::U16 => self.as_slice::<u16>()?.iter().map(|&v| v as i64).collect(),
            DType::U32 => self.as_slice::<u32>()?.iter().map(|&v| v as i64).collect(),
            DType::U64 => self.as_slice::<u64>()?.iter().map(|&v| v as i64).collect(),
            other => return Err(IrError::invalid("tensor", format!("expected an integer tensor, got {other}"))),
        })
    }

    /// Any numeric tensor's elements as f64 (for summaries and comparisons).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(match self.dtype {
            DType::F64 => self.to_vec::<f64>()?,
            DType::F32 => self.as_slice::<f32>()?.iter().map(|&v| v as f64).collect(),
            DType::F16 => self.as_slice::<f16>()?.iter().map(|v| v.to_f64()).collect(),
            DType::BF16 => self.as_slice::<bf16>()?.iter().map(|v| v.to_f64()).collect(),
            DType::F8E4M3FN | DType::F8E5M2 => {
                return Err(IrError::invalid("tensor", "FP8 tensors have no f64 view; cast them first"));
            }
            _ => self.to_i64_vec()?.into_iter().map(|v| v as f64).collect(),
        })
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?}", self.dtype, self.shape)?;
        if self.len() <= 16
            && let Ok(v) = self.to_f64_vec()
        {
            write!(f, " {v:?}")?;
        }
        Ok(())
    }
}

impl PartialEq for Tensor {
    /// Bitwise equality of dtype, shape and bytes.
    fn eq(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.data == other.data
    }
}

/// A tensor serialises as its dtype, shape and raw bytes; reading one back checks that
/// the bytes fit the shape (a corrupt file is an error, not a bad tensor).
impl serde::Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.dtype)?;
        t.serialize_element(&self.shape)?;
        t.serialize_element(&RawBytes(&self.data))?;
        t.end()
    }
}

struct RawBytes<'a>(&'a [u8]);

impl serde::Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct OwnedBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for OwnedBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OwnedBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("tensor bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<OwnedBytes, E> {
                Ok(OwnedBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<OwnedBytes, E> {
                Ok(OwnedBytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<OwnedBytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(OwnedBytes(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

impl<'de> serde::Deserialize<'de> for Tensor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (dtype, shape, OwnedBytes(data)): (DType, Vec<usize>, OwnedBytes) = serde::Deserialize::deserialize(d)?;
        let expected = shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(serde::de::Error::custom(format!(
                "a {dtype} tensor of shape {shape:?} with {} bytes",
                data.len()
            )));
        }
        Ok(Tensor { dtype, shape, data: Bytes::from(data) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_unaligned_view() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert!(matches!(t.as_slice::<f32>().unwrap(), Cow::Borrowed(_)));
        let mut raw = vec![0u8];
        raw.extend_from_slice(t.bytes());
        let unaligned = Bytes::from(raw).slice(1..);
        let u = Tensor::from_bytes(DType::F32, vec![4], unaligned).unwrap();
        assert_eq!(u.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(t.as_slice::<i32>().is_err());
        assert!(Tensor::from_bytes(DType::F32, vec![3], Bytes::from(vec![0u8; 8])).is_err());
    }
}
