use kiln_ir::IrError;

/// Everything that can go wrong reading an ONNX model. Each names the file, node,
/// op type or tensor it is about.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid ONNX protobuf: {source}")]
    Decode { path: String, source: prost::DecodeError },
    #[error("model has no graph")]
    NoGraph,
    #[error("node '{node}': op {domain}{op_type} (opset {opset}) is not supported")]
    UnsupportedOp { node: String, op_type: String, domain: String, opset: i64 },
    #[error("model imports opset {version} of domain '{domain}', which is not supported (Kiln supports {supported})")]
    UnsupportedOpset { domain: String, version: i64, supported: String },
    #[error("node '{node}' ({op_type}): attribute '{attr}': {msg}")]
    Attribute { node: String, op_type: String, attr: String, msg: String },
    #[error("node '{node}' ({op_type}): {msg}")]
    Node { node: String, op_type: String, msg: String },
    #[error("tensor '{name}': {msg}")]
    Tensor { name: String, msg: String },
    #[error("graph '{graph}': {msg}")]
    Graph { graph: String, msg: String },
    #[error(transparent)]
    Ir(#[from] IrError),
}

pub type Result<T> = std::result::Result<T, OnnxError>;
