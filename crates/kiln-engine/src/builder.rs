//! The Builder (TensorRT's name): ONNX model → optimised graph → per optimisation
//! profile, a graph bound to its optimal shapes and built on the backend (kernels
//! compiled, algorithms chosen, memory planned) → a plan file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_cuda::{ModuleImage, TimingCache};
use kiln_ir::{Dim, Graph, Tensor};

use crate::codec::{self, GraphRole, StoredModule, WeightsWriter};
use crate::format::{self, Section};
use crate::meta::{
    self, BackendKind, BuildFlags, GpuTarget, MemorySizes, PlanMeta, PrecisionFlags, ProfilePlan, TensorDesc,
};
use crate::prepare::{self, Layout};
use crate::profile::{Profile, ShapeRange};
use crate::{EngineError, Result, layers};

/// What to build (TensorRT's BuilderConfig plus the network's shapes).
#[derive(Clone, Debug)]
pub struct BuilderConfig {
    pub backend: BackendKind,
    pub precision: PrecisionFlags,
    pub opt_level: u8,
    /// `--shapes`: fixed shapes per input.
    pub shapes: Vec<(String, Vec<usize>)>,
    /// `--min-shapes/--opt-shapes/--max-shapes`, one triple per optimisation profile.
    pub profiles: Vec<ProfileShapes>,
    /// The most workspace one layer may use (cuBLASLt, cuDNN), bytes.
    pub workspace_limit: Option<usize>,
    /// Time candidate algorithms on the GPU and keep the fastest.
    pub autotune: bool,
    /// Where timings are kept between builds (read, then written back).
    pub timing_cache: Option<PathBuf>,
    /// GPU ordinal (CUDA).
    pub device: usize,
}

impl Default for BuilderConfig {
    fn default() -> BuilderConfig {
        BuilderConfig {
            backend: BackendKind::Cuda,
            precision: PrecisionFlags::default(),
            opt_level: 3,
            shapes: vec![],
            profiles: vec![],
            workspace_limit: None,
            autotune: true,
            timing_cache: None,
            device: 0,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProfileShapes {
    pub min: Vec<(String, Vec<usize>)>,
    pub opt: Vec<(String, Vec<usize>)>,
    pub max: Vec<(String, Vec<usize>)>,
}

/// A built plan: the file's bytes and what a person wants to know about it.
pub struct BuiltPlan {
    pub bytes: Vec<u8>,
    pub meta: PlanMeta,
    /// Things the build decided on the user's behalf (e.g. dynamic dims set to 1).
    pub warnings: Vec<String>,
    pub optimizer: kiln_opt::Report,
}

pub struct Builder {
    config: BuilderConfig,
    stage: Box<dyn Fn(&str) + Send + Sync>,
}

impl Builder {
    pub fn new(config: BuilderConfig) -> Builder {
        Builder { config, stage: Box::new(|_| {}) }
    }

    /// Calls `f` with the name of each stage as it starts (for progress output).
    pub fn on_stage(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Builder {
        self.stage = Box::new(f);
        self
    }

    /// Builds the ONNX model at `path`.
    pub fn build_onnx(&self, path: &std::path::Path) -> Result<BuiltPlan> {
        (self.stage)("importing");
        let model = kiln_onnx::load(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.build_graph(&model.graph, &name)
    }

    /// Builds `graph` (as imported: the builder optimises it).
    pub fn build_graph(&self, graph: &Graph, model: &str) -> Result<BuiltPlan> {
        let c = &self.config;
        if c.backend == BackendKind::Cpu && (c.precision.fp16 || c.precision.bf16 || c.precision.tf32) {
            return Err(EngineError::Unsupported(format!(
                "{} on the CPU backend (it computes in the model's own precision)",
                c.precision.name()
            )));
        }
        (self.stage)("optimising");
        let (source, optimizer) = prepare::optimize(graph, c.opt_level, Layout::Nchw)
            .map_err(|e| EngineError::Build(format!("optimising: {e}")))?;
        let mut warnings = Vec::new();
        let profiles = resolve_profiles(&source, c, &mut warnings)?;
        let (inputs, outputs) = io_descs(&source)?;
        let mut stored: Vec<(GraphRole, Graph)> = Vec::new();
        let mut plans = Vec::new();
        let mut modules: Vec<ModuleImage> = Vec::new();
        let gpu = match c.backend {
            BackendKind::Cpu => {
                for p in &profiles {
                    plans.push(cpu_profile(&source, p)?);
                }
                None
            }
            BackendKind::Cuda => {
                let cuda = CudaBuild::open(c)?;
                for (i, p) in profiles.iter().enumerate() {
                    (self.stage)(&format!("building profile {i} on {}", cuda.device.name));
                    let (plan, built, images) = cuda.profile(&source, p)?;
                    stored.push((GraphRole::Built(i), built));
                    plans.push(plan);
                    merge_images(&mut modules, images);
                }
                cuda.save_timing_cache(c)?;
                Some(cuda.target)
            }
        };
        // The source graph: what a CPU plan runs, and what a CUDA context binds again
        // for shapes other than a profile's optimal ones.
        if c.backend == BackendKind::Cpu || profiles.iter().any(|p| !p.is_fixed()) {
            stored.insert(0, (GraphRole::Source, source.clone()));
        }
        (self.stage)("writing the plan");
        let meta = PlanMeta {
            kiln_version: meta::kiln_version(),
            backend: c.backend,
            gpu,
            flags: BuildFlags {
                precision: c.precision,
                opt_level: c.opt_level,
                workspace_limit: c.workspace_limit,
                autotuned: c.autotune && c.backend == BackendKind::Cuda,
            },
            model: model.to_string(),
            inputs,
            outputs,
            profiles: plans,
            kernel_modules: modules.iter().map(|m| m.name.clone()).collect(),
        };
        let bytes = write_plan(&meta, &stored, &modules)?;
        Ok(BuiltPlan { bytes, meta, warnings, optimizer })
    }
}

/// The plan file for `meta`, `graphs` and kernel `modules`.
fn write_plan(meta: &PlanMeta, graphs: &[(GraphRole, Graph)], modules: &[ModuleImage]) -> Result<Vec<u8>> {
    let mut weights = WeightsWriter::default();
    let refs: Vec<(GraphRole, &Graph)> = graphs.iter().map(|(r, g)| (*r, g)).collect();
    let graph_bytes = codec::encode_graphs(&refs, &mut weights)?;
    let stored: Vec<StoredModule> = modules
        .iter()
        .map(|m| StoredModule {
            name: m.name.clone(),
            arch: m.arch.clone(),
            cubin: m.cubin.clone(),
            ptx: m.ptx.clone(),
        })
        .collect();
    let meta_bytes = serde_json::to_vec(meta).map_err(|e| EngineError::Build(format!("encoding the metadata: {e}")))?;
    Ok(format::write(&[
        Section { tag: "META".into(), bytes: meta_bytes },
        Section { tag: "GRAPHS".into(), bytes: graph_bytes },
        Section { tag: "KERNELS".into(), bytes: codec::encode_modules(&stored)? },
        Section { tag: "WEIGHTS".into(), bytes: weights.into_bytes() },
    ]))
}

fn merge_images(all: &mut Vec<ModuleImage>, more: Vec<ModuleImage>) {
    for m in more {
        if !all.iter().any(|a| a.name == m.name) {
            all.push(m);
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
}

/// The graph's inputs and outputs as callers see them.
pub fn io_descs(graph: &Graph) -> Result<(Vec<TensorDesc>, Vec<TensorDesc>)> {
    let desc = |o| -> Result<TensorDesc> {
        let outlet = graph.outlet(o).map_err(|e| EngineError::Build(e.to_string()))?;
        let dims = outlet.fact.shape.as_ref().map(|s| s.0.iter().map(Dim::known).collect()).unwrap_or_default();
        let dtype = outlet.fact.dtype.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
        Ok(TensorDesc { name: outlet.name.clone(), dtype, dims })
    };
    let inputs = graph.inputs.iter().map(|&o| desc(o)).collect::<Result<_>>()?;
    let outputs = graph.outputs.iter().map(|&o| desc(o)).collect::<Result<_>>()?;
    Ok((inputs, outputs))
}

/// The optimisation profiles the flags ask for, each covering every input in order.
/// Dynamic dims that no flag sets become 1 (with a warning), as trtexec does.
fn resolve_profiles(graph: &Graph, c: &BuilderConfig, warnings: &mut Vec<String>) -> Result<Vec<Profile>> {
    let (inputs, _) = io_descs(graph)?;
    let names: Vec<&str> = inputs.iter().map(|d| d.name.as_str()).collect();
    let lists = c.shapes.iter().chain(c.profiles.iter().flat_map(|p| p.min.iter().chain(&p.opt).chain(&p.max)));
    for (name, _) in lists {
        if !names.contains(&name.as_str()) {
            return Err(EngineError::Binding(format!("no input named '{name}'; the inputs are: {}", names.join(", "))));
        }
    }
    let pick = |list: &[(String, Vec<usize>)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone());
    let default_dims = |d: &TensorDesc, warnings: &mut Vec<String>| {
        let dims: Vec<usize> = d.dims.iter().map(|x| x.unwrap_or(1)).collect();
        if d.dims.iter().any(Option::is_none) {
            warnings.push(format!("input '{}' has dynamic dims {d}: built for {dims:?} (give --shapes)", d.name));
        }
        dims
    };
    let specs = if c.profiles.is_empty() { vec![ProfileShapes::default()] } else { c.profiles.clone() };
    let mut profiles = Vec::new();
    for spec in specs {
        let mut ranges = Vec::new();
        for d in &inputs {
            let range = match (pick(&spec.opt, &d.name), pick(&c.shapes, &d.name)) {
                (Some(opt), _) => ShapeRange {
                    input: d.name.clone(),
                    min: pick(&spec.min, &d.name).unwrap_or_else(|| opt.clone()),
                    max: pick(&spec.max, &d.name).unwrap_or_else(|| opt.clone()),
                    opt,
                },
                (None, Some(fixed)) => ShapeRange::fixed(&d.name, fixed),
                (None, None) => ShapeRange::fixed(&d.name, default_dims(d, warnings)),
            };
            check_against_model(d, &range)?;
            ranges.push(range);
        }
        let profile = Profile { inputs: ranges };
        profile.check()?;
        profiles.push(profile);
    }
    Ok(profiles)
}

/// A range must keep the model's rank and its fixed dims.
fn check_against_model(d: &TensorDesc, r: &ShapeRange) -> Result<()> {
    for dims in [&r.min, &r.opt, &r.max] {
        let fits = dims.len() == d.dims.len() && d.dims.iter().zip(dims).all(|(m, x)| m.is_none_or(|m| m == *x));
        if !fits {
            return Err(EngineError::Binding(format!("input '{}' is {d}; the shape {dims:?} does not fit it", d.name)));
        }
    }
    Ok(())
}

/// Zero tensors of `shapes` for the graph's inputs (what binding needs: their shapes).
pub fn placeholder_inputs(graph: &Graph, shapes: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    graph
        .inputs
        .iter()
        .zip(shapes)
        .map(|(&o, dims)| {
            let outlet = graph.outlet(o).map_err(|e| EngineError::Build(e.to_string()))?;
            let dtype = outlet
                .fact
                .dtype
                .ok_or_else(|| EngineError::Unsupported(format!("input '{}' has no declared dtype", outlet.name)))?;
            Ok(Tensor::zeros(dtype, dims.clone()))
        })
        .collect()
}

/// A CPU profile: nothing to compile; the layer table at the optimal shapes.
fn cpu_profile(source: &Graph, profile: &Profile) -> Result<ProfilePlan> {
    let bound = kiln_cuda::bind::bind_input_shapes(source, &profile.opt_shapes())
        .map_err(|e| EngineError::Binding(format!("binding the optimal shapes: {e}")))?;
    Ok(ProfilePlan {
        profile: profile.clone(),
        memory: MemorySizes {
            weight_bytes: source
                .nodes
                .iter()
                .filter_map(|n| match &n.op {
                    kiln_ir::Op::Constant(t) => Some(t.bytes().len()),
                    _ => None,
                })
                .sum(),
            ..MemorySizes::default()
        },
        launches: 0,
        layers: layers::cpu_layers(&bound),
        tactic_choices: vec![],
    })
}

/// What a CUDA build holds on to: the GPU, the weights store and the timing cache.
struct CudaBuild {
    device: kiln_cuda::Device,
    target: GpuTarget,
    options: kiln_cuda::Options,
    cache: Option<Arc<Mutex<TimingCache>>>,
    precision: PrecisionFlags,
    opt_level: u8,
}

impl CudaBuild {
    fn open(c: &BuilderConfig) -> Result<CudaBuild> {
        let device = kiln_cuda::Device::open(c.device)?;
        let v = kiln_cuda::lib_versions()?;
        let target = GpuTarget {
            name: device.name.clone(),
            compute_capability: device.compute_capability,
            driver: v.driver,
            nvrtc: v.nvrtc,
            cublaslt: v.cublaslt,
            cudnn: v.cudnn,
        };
        // A missing file is an empty cache (written after the build).
        let cache = match &c.timing_cache {
            Some(path) => Some(Arc::new(Mutex::new(TimingCache::load(path)?))),
            None => None,
        };
        let options = kiln_cuda::Options {
            allow_tf32: c.precision.tf32,
            workspace_limit: c.workspace_limit,
            autotune: c.autotune,
            timing_cache: cache.clone(),
            use_cuda_graph: false,
            ..kiln_cuda::Options::default()
        };
        Ok(CudaBuild { device, target, options, cache, precision: c.precision, opt_level: c.opt_level })
    }

    /// Builds `profile`: the graph bound to its optimal shapes, tuned; its minimum and
    /// maximum shapes built too, to check they build and to collect their kernels.
    fn profile(&self, source: &Graph, profile: &Profile) -> Result<(ProfilePlan, Graph, Vec<ModuleImage>)> {
        refuse_shape_tensors(source)?;
        let built = self.bind(source, &profile.opt_shapes())?;
        let ex = kiln_cuda::Executor::new(&self.device, &built, self.options.clone())?;
        let tactics = ex.tactics();
        let mut images = ex.module_images()?;
        let names: Vec<(String, String)> = tactics.iter().map(|t| (t.node.clone(), t.name.clone())).collect();
        let plan = ProfilePlan {
            profile: profile.clone(),
            memory: MemorySizes {
                arena_bytes: ex.plan().report.arena_bytes,
                unshared_activation_bytes: ex.plan().report.unshared_activation_bytes,
                weight_bytes: ex.plan().report.weight_bytes,
                workspace_bytes: ex.memory().workspace.bytes(),
            },
            launches: ex.launches().len(),
            layers: layers::cuda_layers(ex.plan(), &names),
            tactic_choices: tactics.iter().map(|t| t.choice).collect(),
        };
        drop(ex);
        for shapes in [
            profile.inputs.iter().map(|r| r.min.clone()).collect::<Vec<_>>(),
            profile.inputs.iter().map(|r| r.max.clone()).collect(),
        ] {
            if shapes != profile.opt_shapes() {
                let g = self.bind(source, &shapes)?;
                let options = kiln_cuda::Options { autotune: false, ..self.options.clone() };
                let ex = kiln_cuda::Executor::new(&self.device, &g, options)?;
                merge_images(&mut images, ex.module_images()?);
            }
        }
        Ok((plan, built, images))
    }

    fn bind(&self, source: &Graph, shapes: &[Vec<usize>]) -> Result<Graph> {
        let inputs = placeholder_inputs(source, shapes)?;
        let built = prepare::build_for_cuda(source, &inputs, self.precision, self.opt_level)?;
        if prepare::needs_segments(&built) {
            return Err(EngineError::Unsupported(
                "plan files for graphs whose shapes depend on data (NonZero, NonMaxSuppression, ...) or with \
                 control flow (If, Loop, Scan); `kiln run --backend cuda` runs them"
                    .into(),
            ));
        }
        Ok(built)
    }

    fn save_timing_cache(&self, c: &BuilderConfig) -> Result<()> {
        if let (Some(path), Some(cache)) = (&c.timing_cache, &self.cache) {
            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.save(path)?;
        }
        Ok(())
    }
}

/// Inputs whose values decide shapes (TensorRT's shape tensors) would need their values
/// at build time.
fn refuse_shape_tensors(graph: &Graph) -> Result<()> {
    let flags = kiln_cuda::bind::shape_tensor_inputs(graph);
    for (&o, &is) in graph.inputs.iter().zip(&flags) {
        if is {
            return Err(EngineError::Unsupported(format!(
                "input '{}' is a shape tensor (its value decides shapes); plans take shapes, not values, for now",
                graph.outlet_name(o)
            )));
        }
    }
    Ok(())
}
