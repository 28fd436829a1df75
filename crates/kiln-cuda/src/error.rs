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
