//! ONNX → Kiln graph.
//!
//! The model file is memory-mapped and decoded without copying weights: initializers'
//! `raw_data` stay views of the mapping (and external-data files are mapped too).

pub mod error;
mod import;
mod node;
pub mod ops;
pub mod proto;
mod tensor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kiln_ir::{Graph, Tensor};
use prost::Message;

pub use error::{OnnxError, Result};
pub use node::NodeCtx;
pub use tensor::tensor_from_proto;

/// Default-domain opset versions Kiln imports.
pub const OPSET_RANGE: std::ops::RangeInclusive<i64> = 7..=27;

/// An imported model.
#[derive(Debug)]
pub struct Model {
    pub graph: Graph,
    pub ir_version: i64,
    pub producer: String,
    /// Opset version per imported domain ("" is ONNX's default domain).
    pub opsets: BTreeMap<String, i64>,
}

/// Maps a file into memory as shared bytes.
pub fn map_file(path: &Path) -> Result<Bytes> {
    let io = |source| OnnxError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only; like every mmap-based loader we assume the
    // file is not truncated while the model is in use.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_owner(map))
}

/// Loads an ONNX model file; external data is looked up beside it.
pub fn load(path: impl AsRef<Path>) -> Result<Model> {
    let path = path.as_ref();
    let bytes = map_file(path)?;
    let base = path.parent().map(Path::to_path_buf);
    load_bytes(bytes, base).map_err(|e| match e {
        OnnxError::Decode { source, .. } => OnnxError::Decode { path: path.display().to_string(), source },
        e => e,
    })
}

/// Loads a model from bytes; `base_dir` is where external-data files are.
pub fn load_bytes(bytes: Bytes, base_dir: Option<PathBuf>) -> Result<Model> {
    let proto =
        proto::ModelProto::decode(bytes).map_err(|source| OnnxError::Decode { path: "<bytes>".into(), source })?;
    let mut opsets = BTreeMap::new();
    for o in &proto.opset_import {
        let domain = if o.domain == "ai.onnx" { String::new() } else { o.domain.clone() };
        opsets.insert(domain, o.version);
    }
    // IR version 3 and up must import an opset; older files mean opset 1.
    let default = *opsets.entry(String::new()).or_insert(1);
    if !OPSET_RANGE.contains(&default) {
        return Err(OnnxError::UnsupportedOpset {
            domain: "ai.onnx".into(),
            version: default,
            supported: format!("{} to {}", OPSET_RANGE.start(), OPSET_RANGE.end()),
        });
    }
    let env = import::ImportEnv { base_dir, opsets: opsets.clone().into_iter().collect() };
    let graph_proto = proto.graph.as_ref().ok_or(OnnxError::NoGraph)?;
    let graph = import::build_graph(graph_proto, None, &env)?;
    Ok(Model { graph, ir_version: proto.ir_version, producer: proto.producer_name.clone(), opsets })
}

/// Reads a serialised `TensorProto` file (the ONNX test cases' `input_0.pb`).
pub fn read_tensor_file(path: impl AsRef<Path>) -> Result<(String, Tensor)> {
    let path = path.as_ref();
    let bytes = map_file(path)?;
    let t = proto::TensorProto::decode(bytes)
        .map_err(|source| OnnxError::Decode { path: path.display().to_string(), source })?;
    Ok((t.name.clone(), tensor_from_proto(&t, path.parent())?))
}
