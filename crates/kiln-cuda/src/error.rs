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
    /// The driver refused to launch a kernel (or to load its module or function).
    #[error("launching kernel '{kernel}': {msg}")]
    Launch { kernel: String, msg: String },
    /// A dtype, attribute or layout that Kiln's CUDA kernels do not cover (yet).
    #[error("{op}: not supported on CUDA: {what}")]
    Unsupported { op: String, what: String },
    /// Arguments that make no sense for the op (shapes that do not match, bad axes…).
    #[error("{op}: {msg}")]
    Invalid { op: String, msg: String },
    /// A device buffer smaller than the tensor the kernel would touch in it.
    #[error("{op}: {what} needs {need} bytes on the GPU, its buffer has {have}")]
    BufferTooSmall { op: String, what: String, need: usize, have: usize },
    /// An error while running one node of a graph.
    #[error("node '{node}' ({op}): {source}")]
    Node { node: String, op: String, source: Box<CudaError> },
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
    UnsupportedNode { node: String, op: String, reason: String },
    /// A launch (or the check after it) of a node's work failed.
    #[error("node '{node}' ({op}): {msg}")]
    NodeLaunch { node: String, op: String, msg: String },
    #[error("cuBLASLt: {what}: {msg}")]
    Blas { what: String, msg: String },
    /// cuDNN refused a call (the status names why).
    #[error("cuDNN: {what}: {msg}")]
    Dnn { what: String, msg: String },
    /// An input given to `run` does not match the graph.
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    /// What a plan file holds does not fit this GPU or this graph (kernel modules built
    /// for another architecture, tactics for other launches).
    #[error("plan mismatch: {0}")]
    PlanMismatch(String),
    /// An output asked for by index or copied somewhere it does not fit.
    #[error("output '{name}': {msg}")]
    Output { name: String, msg: String },
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

    pub fn launch(kernel: impl Into<String>, e: impl std::fmt::Display) -> CudaError {
        CudaError::Launch { kernel: kernel.into(), msg: e.to_string() }
    }

    pub fn unsupported(op: impl Into<String>, what: impl Into<String>) -> CudaError {
        CudaError::Unsupported { op: op.into(), what: what.into() }
    }

    pub fn invalid(op: impl Into<String>, msg: impl Into<String>) -> CudaError {
        CudaError::Invalid { op: op.into(), msg: msg.into() }
    }

    /// This error as raised while running node `node` (an op of type `op`).
    pub fn at_node(self, node: impl Into<String>, op: impl Into<String>) -> CudaError {
        CudaError::Node { node: node.into(), op: op.into(), source: Box::new(self) }
    }
}

pub type Result<T> = std::result::Result<T, CudaError>;
