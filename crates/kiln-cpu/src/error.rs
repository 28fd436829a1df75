use kiln_ir::{DType, IrError};

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("node '{node}' ({op}): {source}")]
    Node { node: String, op: String, source: Box<CpuError> },
    #[error("{op}: dtype {dtype} is not supported by the CPU backend")]
    UnsupportedDType { op: String, dtype: DType },
    #[error("{op}: {msg}")]
    Invalid { op: String, msg: String },
    /// A valid model uses a feature the CPU backend deliberately does not have
    /// (e.g. training-mode behaviour).
    #[error("{op}: {what} is not supported")]
    Unsupported { op: String, what: String },
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error("graph: {0}")]
    Graph(String),
    #[error(transparent)]
    Ir(#[from] IrError),
}

impl CpuError {
    pub fn invalid(op: impl Into<String>, msg: impl Into<String>) -> Self {
        CpuError::Invalid { op: op.into(), msg: msg.into() }
    }

    pub fn unsupported(op: impl Into<String>, what: impl Into<String>) -> Self {
        CpuError::Unsupported { op: op.into(), what: what.into() }
    }

    pub fn dtype(op: impl Into<String>, dtype: DType) -> Self {
        CpuError::UnsupportedDType { op: op.into(), dtype }
    }
}

pub type Result<T> = std::result::Result<T, CpuError>;
