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

/// How a graph is built for the CUDA backend.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// Compute in FP16 where the graph computes in FP32 (`--fp16`).
    pub fp16: bool,
    /// The optimisation level to run again once inputs are bound (at least 1: folding
    /// what the bound shapes and values determine).
    pub opt_level: u8,
}

/// What the CUDA build made: the memory plan and the launch list.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub memory: kiln_cuda::MemoryReport,
    pub workspace_bytes: usize,
    pub launches: usize,
    pub cuda_graph: bool,
    pub precision: &'static str,
}

/// Runs `graph` on `inputs` with the backend. On CUDA the graph's symbolic input dims
/// (and shape tensors) are bound from the inputs first, then it is optimised again where
/// that changed something, planned, lowered and run once; the build is described.
pub fn run_with(
    backend: &Backend,
    graph: &Graph,
    inputs: &[Tensor],
    options: BuildOptions,
) -> Result<(Vec<Tensor>, Option<BuildInfo>), RunError> {
    match backend {
        Backend::Cpu => {
            if options.fp16 {
                return Err(RunError::Unsupported("--fp16 needs the CUDA backend".into()));
            }
            let out = kiln_cpu::run(graph, inputs).map_err(|e| {
                if matches!(
                    cpu_root(&e),
                    kiln_cpu::CpuError::UnsupportedDType { .. } | kiln_cpu::CpuError::Unsupported { .. }
                ) {
                    RunError::Unsupported(e.to_string())
                } else {
                    RunError::Failed(e.to_string())
                }
            })?;
            Ok((out, None))
        }
        Backend::Cuda(dev) => {
            let built = build_for_cuda(graph, inputs, options)?;
            if needs_segments(&built) {
                let prepare = |g: &Graph, ins: &[Tensor]| {
                    build_for_cuda(g, ins, options).map_err(|e| CudaError::Graph(e.to_string()))
                };
                let runner = kiln_cuda::dynamic::DynamicRunner::new(dev, kiln_cuda::Options::default(), &prepare);
                let out = runner.run(graph, inputs).map_err(cuda_run_error)?;
                return Ok((out, None));
            }
            let mut ex =
                kiln_cuda::Executor::new(dev, &built, kiln_cuda::Options::default()).map_err(cuda_build_error)?;
            let info = BuildInfo {
                memory: ex.plan().report,
                workspace_bytes: ex.memory().workspace.bytes(),
                launches: ex.launches().len(),
                cuda_graph: ex.uses_cuda_graph(),
                precision: if options.fp16 { "fp16" } else { "fp32" },
            };
            let out = ex.run(inputs).map_err(|e| RunError::Failed(e.to_string()))?;
            Ok((out, Some(info)))
        }
        Backend::CudaLowering => {
            let built = build_for_cuda(graph, inputs, options)?;
            if needs_segments(&built) {
                // Segments are planned as their inputs arrive: only on the GPU.
                return Ok((vec![], None));
            }
            let plan = kiln_cuda::ExecutionPlan::new(&built).map_err(cuda_build_error)?;
            kiln_cuda::executor::lower(&plan, &kiln_cuda::Options::default()).map_err(cuda_build_error)?;
            Ok((vec![], None))
        }
    }
}

fn needs_segments(built: &Graph) -> bool {
    kiln_engine::prepare::needs_segments(built)
}

/// An error while running in segments: unsupported where a segment (or a body) was refused.
fn cuda_run_error(e: CudaError) -> RunError {
    fn refused(e: &CudaError) -> bool {
        match e {
            CudaError::UnsupportedNode { .. } | CudaError::UnknownShape { .. } => true,
            CudaError::Node { source, .. } => refused(source),
            _ => false,
        }
    }
    if refused(&e) { RunError::Unsupported(e.to_string()) } else { RunError::Failed(e.to_string()) }
}

fn build_for_cuda(graph: &Graph, inputs: &[Tensor], options: BuildOptions) -> Result<Graph, RunError> {
    let precision = kiln_engine::PrecisionFlags { fp16: options.fp16, ..Default::default() };
    kiln_engine::prepare::build_for_cuda(graph, inputs, precision, options.opt_level).map_err(|e| match e {
        kiln_engine::EngineError::Cuda(e) => cuda_build_error(e),
        e @ kiln_engine::EngineError::Unsupported(_) => RunError::Unsupported(e.to_string()),
        e => RunError::Failed(e.to_string()),
    })
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
pub fn run_or_fail(
    backend: &Backend,
    graph: &Graph,
    inputs: &[Tensor],
    options: BuildOptions,
) -> anyhow::Result<(Vec<Tensor>, Option<BuildInfo>)> {
    run_with(backend, graph, inputs, options)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(format!("running on {}", backend.name()))
}
