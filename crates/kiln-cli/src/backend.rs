//! `--backend cpu|cuda|auto`: which backend runs a graph, and running it there.
//!
//! - `cpu`: kiln-cpu, the reference.
//! - `cuda`: kiln-cuda on GPU 0; a machine without a GPU (or without the CUDA libraries)
//!   is an error that names what is missing.
//! - `auto`: CUDA when GPU 0 opens, else the CPU; the choice and its reason are reported.

use anyhow::Context;
use kiln_cuda::CudaError;
use kiln_ir::{Graph, Tensor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    #[default]
    Cpu,
    Cuda,
    Auto,
}

/// A chosen backend.
pub enum Backend {
    Cpu,
    Cuda(Box<kiln_cuda::Device>),
    /// CUDA planning and lowering only, on the host (no GPU): says which graphs the
    /// CUDA executor would accept; nothing is run.
    CudaLowering,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda(_) => "cuda",
            Backend::CudaLowering => "cuda (lowering only)",
        }
    }

    /// The backend `arg` asks for, with a line saying which and why.
    pub fn select(arg: BackendArg) -> anyhow::Result<(Backend, String)> {
        match arg {
            BackendArg::Cpu => Ok((Backend::Cpu, "cpu".into())),
            BackendArg::Cuda => {
                let dev =
                    kiln_cuda::Device::open(0).map_err(|e| anyhow::anyhow!("backend cuda is not available: {e}"))?;
                let why = format!("cuda (GPU 0: {}, {})", dev.name, dev.arch());
                Ok((Backend::Cuda(Box::new(dev)), why))
            }
            BackendArg::Auto => match kiln_cuda::Device::open(0) {
                Ok(dev) => {
                    let why = format!("auto: cuda (GPU 0: {}, {})", dev.name, dev.arch());
                    Ok((Backend::Cuda(Box::new(dev)), why))
                }
                Err(e) => Ok((Backend::Cpu, format!("auto: cpu (no CUDA GPU: {e})"))),
            },
        }
    }
}

/// Why running a graph failed: the backend cannot run it (an op, dtype or shape it does
/// not support, found before running) or something went wrong.
pub enum RunError {
    Unsupported(String),
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Unsupported(m) | RunError::Failed(m) => f.write_str(m),
        }
    }
}

/// Runs `graph` on `inputs` with the backend. On CUDA the graph's symbolic input dims are
/// bound from the inputs' shapes first, then it is planned, lowered and run once.
pub fn run(backend: &Backend, graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    match backend {
        Backend::Cpu => kiln_cpu::run(graph, inputs).map_err(|e| {
            if matches!(
                cpu_root(&e),
                kiln_cpu::CpuError::UnsupportedDType { .. } | kiln_cpu::CpuError::Unsupported { .. }
            ) {
                RunError::Unsupported(e.to_string())
            } else {
                RunError::Failed(e.to_string())
            }
        }),
        Backend::Cuda(dev) => {
            let build = cuda_build_error;
            let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
            let bound = kiln_cuda::plan::bind_input_shapes(graph, &shapes).map_err(build)?;
            let mut ex = kiln_cuda::Executor::new(dev, &bound, kiln_cuda::Options::default()).map_err(build)?;
            ex.run(inputs).map_err(|e| RunError::Failed(e.to_string()))
        }
        Backend::CudaLowering => {
            let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
            let bound = kiln_cuda::plan::bind_input_shapes(graph, &shapes).map_err(cuda_build_error)?;
            let plan = kiln_cuda::ExecutionPlan::new(&bound).map_err(cuda_build_error)?;
            kiln_cuda::executor::lower(&plan, &kiln_cuda::Options::default()).map_err(cuda_build_error)?;
            Ok(vec![])
        }
    }
}

/// A CUDA executor that refuses a graph when built: unsupported, else failed.
fn cuda_build_error(e: CudaError) -> RunError {
    match e {
        CudaError::UnsupportedNode { .. } | CudaError::UnknownShape { .. } => RunError::Unsupported(e.to_string()),
        e => RunError::Failed(e.to_string()),
    }
}

fn cpu_root(e: &kiln_cpu::CpuError) -> &kiln_cpu::CpuError {
    match e {
        kiln_cpu::CpuError::Node { source, .. } => cpu_root(source),
        e => e,
    }
}

/// [`run`] for the CLI: any error as an `anyhow` error.
pub fn run_or_fail(backend: &Backend, graph: &Graph, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
    run(backend, graph, inputs).map_err(|e| anyhow::anyhow!("{e}")).context(format!("running on {}", backend.name()))
}
