use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library could not be loaded from any place Kiln looked.
    #[error("{what} ({file}) not found; looked in: {}", searched_list(.searched))]
    LibraryMissing { what: &'static str, file: &'static str, searched: Vec<PathBuf> },
    #[error("no CUDA GPU: {0}")]
    NoDevice(String),
    #[error("CUDA driver: {what}: {msg}")]
    Driver { what: String, msg: String },
    /// NVRTC rejected a kernel source: the log says why.
    #[error("kernel '{kernel}' failed to compile for {arch}:\n{log}")]
    Compile { kernel: String, arch: String, log: String },
    #[error("CUDA headers (cuda_fp16.h) not found; set CUDA_HOME; looked in: {}", searched_list(.searched))]
    HeadersMissing { searched: Vec<PathBuf> },
    #[error("out of GPU memory allocating {bytes} bytes for {what}")]
    OutOfMemory { what: String, bytes: usize },
    #[error("kernel cache {path}: {msg}")]
    Cache { path: PathBuf, msg: String },
    /// The graph itself is malformed (a cycle, a dangling value).
    #[error("graph: {0}")]
    Graph(String),
    /// A value whose dtype or shape is not fully known: the CUDA backend plans memory
    /// at build time, so every dim must be a number (bind symbolic dims first).
    #[error("value '{value}' has no fully known shape and dtype ({fact}); bind the inputs' dims first")]
    UnknownShape { value: String, fact: String },
    /// An op (or an op on these dtypes/shapes) the CUDA backend has no kernel for;
    /// reported when the executor is built, never while it runs.
    #[error("node '{node}': op {op} is not supported on CUDA: {reason}")]
    Unsupported { node: String, op: String, reason: String },
    /// A launch (or the check after it) failed.
    #[error("node '{node}' ({op}): {msg}")]
    Launch { node: String, op: String, msg: String },
    #[error("cuBLASLt: {what}: {msg}")]
    Blas { what: String, msg: String },
    /// An input given to `run` does not match the graph.
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
}

fn searched_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(the system loader's default paths only)".into();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl CudaError {
    pub fn driver(what: impl Into<String>, e: impl std::fmt::Display) -> CudaError {
        CudaError::Driver { what: what.into(), msg: e.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, CudaError>;
