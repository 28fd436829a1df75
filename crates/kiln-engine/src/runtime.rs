//! Loading plans: `Runtime::load(path)` maps the file, checks it and returns an
//! [`Engine`]; an engine makes [`ExecutionContext`]s that share its weights.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kiln_cuda::{ModuleImage, WeightStore};
use kiln_ir::Graph;

use crate::codec::{self, GraphRole};
use crate::context::ExecutionContext;
use crate::format::Container;
use crate::meta::{self, BackendKind, PlanMeta, TensorDesc};
use crate::{EngineError, Result};

/// How plans are loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// GPU ordinal for CUDA plans.
    pub device: usize,
    /// On a GPU of another architecture (or with other library versions), JIT the
    /// plan's PTX and choose algorithms again instead of refusing the plan.
    pub allow_ptx_fallback: bool,
    /// Contexts replay their launches as a CUDA graph (else launch one by one).
    pub use_cuda_graph: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { device: 0, allow_ptx_fallback: false, use_cuda_graph: true }
    }
}

/// Loads plans (TensorRT's `IRuntime`).
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    options: LoadOptions,
}

/// A loaded plan (TensorRT's `ICudaEngine`). Cheap to clone; `Send + Sync`: contexts
/// may be created and run from several threads.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub meta: PlanMeta,
    /// Optimised graph with dynamic dims (CPU plans; CUDA plans with shape ranges).
    pub source: Option<Graph>,
    /// Per profile, the graph bound to its optimal shapes (CUDA).
    pub built: Vec<Graph>,
    pub backend: Backend,
    pub warnings: Vec<String>,
    pub file_bytes: usize,
}

pub(crate) enum Backend {
    Cpu,
    Cuda(CudaEngine),
}

pub(crate) struct CudaEngine {
    pub device: Arc<kiln_cuda::Device>,
    pub store: Arc<WeightStore>,
    pub images: Arc<Vec<ModuleImage>>,
    pub allow_ptx_fallback: bool,
    pub use_cuda_graph: bool,
    /// Replay the algorithm choices recorded in the plan (not when libraries differ).
    pub replay_tactics: bool,
}

impl Runtime {
    pub fn new(options: LoadOptions) -> Runtime {
        Runtime { options }
    }

    /// Maps the plan at `path` and loads it.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Engine> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        if len == 0 {
            return Err(EngineError::NotAPlan(format!("{} (an empty file)", path.display())));
        }
        // SAFETY: the mapping is read-only; like every mmap-based loader, this assumes
        // the file is not truncated while the engine uses it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        self.load_bytes(Bytes::from_owner(map), &path.display().to_string())
    }

    /// Loads a plan from bytes (`what` names it in errors).
    pub fn load_bytes(&self, bytes: Bytes, what: &str) -> Result<Engine> {
        let file_bytes = bytes.len();
        let container = Container::parse(bytes, what)?;
        let meta = read_meta(&container, what)?;
        let weights = container.section("WEIGHTS")?;
        let graphs = codec::decode_graphs(&container.section("GRAPHS")?, &weights)?;
        let mut source = None;
        let mut built = Vec::new();
        for (role, g) in graphs {
            match role {
                GraphRole::Source => source = Some(g),
                GraphRole::Built(i) if i == built.len() => built.push(g),
                GraphRole::Built(i) => {
                    return Err(EngineError::Corrupt(format!("{what}: profile graph {i} out of order")));
                }
            }
        }
        check_graphs(&meta, &source, &built, what)?;
        let mut warnings = Vec::new();
        let backend = match meta.backend {
            BackendKind::Cpu => Backend::Cpu,
            BackendKind::Cuda => {
                let modules = codec::decode_modules(&container.section("KERNELS")?)?;
                Backend::Cuda(self.open_cuda(&meta, modules, &mut warnings)?)
            }
        };
        let inner = EngineInner { meta, source, built, backend, warnings, file_bytes };
        Ok(Engine { inner: Arc::new(inner) })
    }

    fn open_cuda(
        &self,
        meta: &PlanMeta,
        modules: Vec<codec::StoredModule>,
        warnings: &mut Vec<String>,
    ) -> Result<CudaEngine> {
        let target = meta.gpu.as_ref().ok_or_else(|| EngineError::Corrupt("a CUDA plan without its GPU".into()))?;
        let device = kiln_cuda::Device::open(self.options.device)?;
        let v = kiln_cuda::lib_versions()?;
        let fallback = self.options.allow_ptx_fallback;
        let mut differences = Vec::new();
        if device.compute_capability != target.compute_capability {
            differences.push(format!(
                "built for {} ({}), this GPU is {} ({})",
                target.name,
                target.arch(),
                device.name,
                device.arch()
            ));
        } else if device.name != target.name {
            warnings.push(format!(
                "plan tuned on {}, running on {} (same architecture {})",
                target.name,
                device.name,
                device.arch()
            ));
        }
        let libs = (v.cublaslt, v.cudnn) != (target.cublaslt, target.cudnn);
        if libs {
            differences.push(format!(
                "built with cuBLASLt {:?} and cuDNN {:?}, this machine has cuBLASLt {:?} and cuDNN {:?}",
                target.cublaslt, target.cudnn, v.cublaslt, v.cudnn
            ));
        }
        if !differences.is_empty() {
            if !fallback {
                return Err(EngineError::Mismatch(format!(
                    "{}; build the plan again on this machine, or load it with --allow-ptx-fallback",
                    differences.join("; ")
                )));
            }
            warnings.extend(differences.into_iter().map(|d| format!("{d}: JIT from PTX, algorithms chosen again")));
        }
        let images: Vec<ModuleImage> = modules
            .into_iter()
            .map(|m| ModuleImage { name: m.name, arch: m.arch, cubin: m.cubin, ptx: m.ptx })
            .collect();
        Ok(CudaEngine {
            device: Arc::new(device),
            store: Arc::new(WeightStore::default()),
            images: Arc::new(images),
            allow_ptx_fallback: fallback,
            use_cuda_graph: self.options.use_cuda_graph,
            replay_tactics: !libs,
        })
    }
}

fn read_meta(container: &Container, what: &str) -> Result<PlanMeta> {
    let meta: PlanMeta = serde_json::from_slice(&container.section("META")?)
        .map_err(|e| EngineError::Corrupt(format!("{what}: the metadata does not decode: {e}")))?;
    let ours = meta::kiln_version();
    if meta.kiln_version != ours {
        return Err(EngineError::Mismatch(format!(
            "{what} was built by Kiln {}, this is Kiln {ours}: build the plan again",
            meta.kiln_version
        )));
    }
    Ok(meta)
}

/// The graphs a plan needs are there and agree with its metadata.
fn check_graphs(meta: &PlanMeta, source: &Option<Graph>, built: &[Graph], what: &str) -> Result<()> {
    let corrupt = |m: String| Err(EngineError::Corrupt(format!("{what}: {m}")));
    if meta.profiles.is_empty() {
        return corrupt("no optimisation profile".into());
    }
    for p in &meta.profiles {
        p.profile.check()?;
        if p.profile.inputs.len() != meta.inputs.len() {
            return corrupt("a profile does not cover every input".into());
        }
    }
    let needs_source = meta.backend == BackendKind::Cpu || meta.profiles.iter().any(|p| !p.profile.is_fixed());
    if needs_source && source.is_none() {
        return corrupt("the graph with dynamic shapes is missing".into());
    }
    if meta.backend == BackendKind::Cuda && built.len() != meta.profiles.len() {
        return corrupt(format!("{} profiles but {} built graphs", meta.profiles.len(), built.len()));
    }
    for g in source.iter().chain(built) {
        if g.inputs.len() != meta.inputs.len() || g.outputs.len() != meta.outputs.len() {
            return corrupt("a graph's inputs or outputs differ from the metadata".into());
        }
    }
    Ok(())
}

impl Engine {
    pub fn meta(&self) -> &PlanMeta {
        &self.inner.meta
    }

    pub fn inputs(&self) -> &[TensorDesc] {
        &self.inner.meta.inputs
    }

    pub fn outputs(&self) -> &[TensorDesc] {
        &self.inner.meta.outputs
    }

    /// The graph contexts run (profile 0's built graph on CUDA, else the dynamic one):
    /// its inputs' names, dtypes and dims are the plan's.
    pub fn graph(&self) -> &Graph {
        match (&self.inner.source, self.inner.built.first()) {
            (_, Some(built)) => built,
            (Some(source), None) => source,
            (None, None) => unreachable!("a loaded plan has a graph (checked at load)"),
        }
    }

    pub fn num_profiles(&self) -> usize {
        self.inner.meta.profiles.len()
    }

    /// What loading decided on the user's behalf (another GPU model, PTX JIT).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    pub fn file_bytes(&self) -> usize {
        self.inner.file_bytes
    }

    /// Device bytes of weights uploaded so far (shared by every context).
    pub fn device_weight_bytes(&self) -> usize {
        match &self.inner.backend {
            Backend::Cuda(c) => c.store.device_bytes(),
            Backend::Cpu => 0,
        }
    }

    /// A new execution context on profile 0 at its optimal shapes. Contexts share the
    /// engine's weights; each has its own activation memory and stream.
    pub fn create_context(&self) -> Result<ExecutionContext> {
        ExecutionContext::new(self.inner.clone())
    }
}

#[allow(dead_code)]
fn assert_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
}
