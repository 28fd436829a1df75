use std::path::PathBuf;

/// What can go wrong building, saving, loading or running a plan. Each names the thing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a Kiln plan at all.
    #[error("{0} is not a Kiln plan (no KILNPLAN magic at its start)")]
    NotAPlan(String),
    /// The file is a plan, but damaged: truncated, bit-flipped, out-of-bounds sections.
    #[error("corrupt plan: {0}")]
    Corrupt(String),
    /// A plan from another format, Kiln, GPU or library version.
    #[error("plan mismatch: {0}")]
    Mismatch(String),
    /// What this Kiln does not do yet (named), as opposed to invalid input.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// An input or output used wrongly: unknown name, shape outside the profile, dtype.
    #[error("{0}")]
    Binding(String),
    #[error("{0}")]
    Build(String),
    #[error(transparent)]
    Onnx(#[from] kiln_onnx::OnnxError),
    #[error(transparent)]
    Cuda(#[from] kiln_cuda::CudaError),
    #[error(transparent)]
    Cpu(#[from] kiln_cpu::CpuError),
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io { path: path.into(), source }
    }
}
