use crate::DType;

/// Errors of the IR: building graphs, inferring shapes, handling tensors.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("tensor of dtype {dtype} and shape {shape:?} needs {expected} bytes, got {actual}")]
    DataSize { dtype: DType, shape: Vec<usize>, expected: usize, actual: usize },
    #[error("expected a tensor of dtype {expected}, got {actual}")]
    DTypeMismatch { expected: DType, actual: DType },
    #[error("{op}: {msg}")]
    Invalid { op: String, msg: String },
    #[error("graph: {0}")]
    Graph(String),
    #[error("node '{node}' ({op}): {source}")]
    Node { node: String, op: String, source: Box<IrError> },
}

impl IrError {
    /// An error about an op's inputs or attributes.
    pub fn invalid(op: impl Into<String>, msg: impl Into<String>) -> Self {
        IrError::Invalid { op: op.into(), msg: msg.into() }
    }
}
