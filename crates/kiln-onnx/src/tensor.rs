//! `TensorProto` → [`Tensor`]: raw bytes, typed fields and external-data files.

use std::path::Path;

use bytes::Bytes;
use half::{bf16, f16};
use kiln_ir::{DType, Tensor};

use crate::error::{OnnxError, Result};
use crate::proto::{DataLocation, TensorProto};

/// Names of ONNX data types Kiln does not support, for error messages.
pub fn onnx_type_name(id: i32) -> &'static str {
    match id {
        0 => "undefined",
        8 => "string",
        14 => "complex64",
        15 => "complex128",
        18 => "float8e4m3fnuz",
        20 => "float8e5m2fnuz",
        21 => "uint4",
        22 => "int4",
        23 => "float4e2m1",
        _ => "unknown",
    }
}

pub fn dtype_of(id: i32, what: &str) -> Result<DType> {
    DType::from_onnx_id(id).ok_or_else(|| OnnxError::Tensor {
        name: what.to_string(),
        msg: format!("data type {id} ({}) is not supported", onnx_type_name(id)),
    })
}

/// Reads a tensor; `base_dir` is where external-data paths are relative to.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let err = |msg: String| OnnxError::Tensor { name: t.name.clone(), msg };
    let dtype = dtype_of(t.data_type, &t.name)?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| err("too many elements".into()))?;
    let bytes = if t.data_location == DataLocation::External as i32 {
        external_bytes(t, base_dir)?
    } else if !t.raw_data.is_empty() || n == 0 {
        t.raw_data.clone()
    } else {
        typed_field_bytes(t, dtype).map_err(err)?
    };
    Tensor::from_bytes(dtype, shape, bytes).map_err(|e| err(e.to_string()))
}

fn typed_field_bytes(t: &TensorProto, dtype: DType) -> std::result::Result<Bytes, String> {
    fn pack<T: bytemuck::Pod>(v: Vec<T>) -> Bytes {
        Bytes::from(bytemuck::cast_slice::<T, u8>(&v).to_vec())
    }
    let i32s = || t.int32_data.iter().copied();
    Ok(match dtype {
        DType::F32 => pack(t.float_data.clone()),
        DType::F64 => pack(t.double_data.clone()),
        DType::I64 => pack(t.int64_data.clone()),
        DType::U64 => pack(t.uint64_data.clone()),
        DType::U32 => pack(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::I32 => pack(t.int32_data.clone()),
        DType::I16 => pack(i32s().map(|v| v as i16).collect()),
        DType::U16 => pack(i32s().map(|v| v as u16).collect()),
        // FP16/BF16 values are stored as their bit patterns in int32_data.
        DType::F16 => pack(i32s().map(|v| f16::from_bits(v as u16)).collect()),
        DType::BF16 => pack(i32s().map(|v| bf16::from_bits(v as u16)).collect()),
        DType::I8 => pack(i32s().map(|v| v as i8).collect()),
        DType::U8 | DType::Bool | DType::F8E4M3FN | DType::F8E5M2 => pack(i32s().map(|v| v as u8).collect()),
    })
}

fn external_bytes(t: &TensorProto, base_dir: Option<&Path>) -> Result<Bytes> {
    let err = |msg: String| OnnxError::Tensor { name: t.name.clone(), msg };
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let location = get("location").ok_or_else(|| err("external data without a location".into()))?;
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(err(format!(
            "external data location '{location}' must be a relative path inside the model's folder"
        )));
    }
    let parse = |k: &str| -> Result<Option<usize>> {
        get(k)
            .map(|v| v.parse::<usize>().map_err(|_| err(format!("external data {k} '{v}' is not a number"))))
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let path = base_dir.unwrap_or(Path::new(".")).join(rel);
    let file = crate::map_file(&path)?;
    let length = parse("length")?.unwrap_or(file.len().saturating_sub(offset));
    let end = offset.checked_add(length).filter(|&e| e <= file.len()).ok_or_else(|| {
        err(format!(
            "external data [{offset}, +{length}) runs past the end of {} ({} bytes)",
            path.display(),
            file.len()
        ))
    })?;
    Ok(file.slice(offset..end))
}
