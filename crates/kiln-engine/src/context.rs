//! An execution context (TensorRT's `IExecutionContext`): one profile, the current input
//! shapes, and on CUDA its own activation arena, stream and CUDA graph. `Send`, not
//! `Sync`: one thread drives it at a time; several contexts run concurrently.

use std::sync::Arc;

use kiln_cuda::{Executor, PhaseTimes};
use kiln_ir::{DType, Tensor};

use crate::builder::placeholder_inputs;
use crate::meta::TensorDesc;
use crate::prepare;
use crate::runtime::{Backend, CudaEngine, EngineInner};
use crate::{EngineError, Result};

/// Executors kept per context for shapes met before (a shape change inside a profile is
/// planned on the host once, then reused).
const SHAPE_CACHE: usize = 4;

pub struct ExecutionContext {
    engine: Arc<EngineInner>,
    profile: usize,
    shapes: Vec<Vec<usize>>,
    /// CUDA executors by input shapes, most recent last.
    executors: Vec<(Vec<Vec<usize>>, Executor)>,
}

/// Per-layer GPU time of one run (`kiln inspect --profile`).
#[derive(Clone, Debug)]
pub struct LayerTime {
    pub node: String,
    pub op: String,
    pub ms: f32,
}

impl ExecutionContext {
    pub(crate) fn new(engine: Arc<EngineInner>) -> Result<ExecutionContext> {
        let shapes = engine.meta.profiles[0].profile.opt_shapes();
        let mut ctx = ExecutionContext { engine, profile: 0, shapes, executors: Vec::new() };
        if matches!(ctx.engine.backend, Backend::Cuda(_)) {
            ctx.executor()?;
        }
        Ok(ctx)
    }

    pub fn inputs(&self) -> &[TensorDesc] {
        &self.engine.meta.inputs
    }

    pub fn outputs(&self) -> &[TensorDesc] {
        &self.engine.meta.outputs
    }

    pub fn profile(&self) -> usize {
        self.profile
    }

    /// Switches to profile `index`, at its optimal shapes.
    pub fn set_optimization_profile(&mut self, index: usize) -> Result<()> {
        let p = self.engine.meta.profiles.get(index).ok_or_else(|| {
            EngineError::Binding(format!("no profile {index}: the plan has {}", self.engine.meta.profiles.len()))
        })?;
        self.shapes = p.profile.opt_shapes();
        self.profile = index;
        Ok(())
    }

    /// Sets input `name`'s shape; it must lie inside the current profile.
    pub fn set_input_shape(&mut self, name: &str, dims: &[usize]) -> Result<()> {
        let index = self.input_index(name)?;
        let range = &self.engine.meta.profiles[self.profile].profile.inputs[index];
        if !range.contains(dims) {
            return Err(EngineError::Binding(format!(
                "input '{name}': shape {dims:?} is outside profile {} ({range})",
                self.profile
            )));
        }
        self.shapes[index] = dims.to_vec();
        Ok(())
    }

    pub fn input_shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.shapes[self.input_index(name)?])
    }

    fn input_index(&self, name: &str) -> Result<usize> {
        self.engine.meta.inputs.iter().position(|d| d.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.engine.meta.inputs.iter().map(|d| d.name.as_str()).collect();
            EngineError::Binding(format!("no input named '{name}'; the inputs are: {}", names.join(", ")))
        })
    }

    /// Runs on `inputs` (in the plan's input order) and blocks until the outputs are back.
    /// Their shapes become the context's (each must lie in the profile); their dtypes
    /// must be the plan's.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.accept(inputs)?;
        match &self.engine.backend {
            Backend::Cpu => {
                let graph = self.engine.source.as_ref().ok_or_else(|| EngineError::Corrupt("no graph".into()))?;
                Ok(kiln_cpu::run(graph, inputs)?)
            }
            Backend::Cuda(_) => Ok(self.executor()?.run(inputs)?),
        }
    }

    /// Named inputs (any order) → named outputs.
    pub fn run_named(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let mut ordered = Vec::with_capacity(self.inputs().len());
        for d in self.inputs() {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == d.name)
                .ok_or_else(|| EngineError::Binding(format!("input '{}' ({d}) is not given", d.name)))?;
            ordered.push(t.1.clone());
        }
        if let Some((extra, _)) = inputs.iter().find(|(n, _)| self.inputs().iter().all(|d| d.name != *n)) {
            return Err(EngineError::Binding(format!("no input named '{extra}'")));
        }
        let outs = self.run(&ordered)?;
        Ok(self.outputs().iter().map(|d| d.name.clone()).zip(outs).collect())
    }

    /// Checks `inputs` against the plan and takes their shapes.
    fn accept(&mut self, inputs: &[Tensor]) -> Result<()> {
        let engine = self.engine.clone();
        let descs = &engine.meta.inputs;
        if inputs.len() != descs.len() {
            return Err(EngineError::Binding(format!("the plan takes {} inputs, got {}", descs.len(), inputs.len())));
        }
        for (d, t) in descs.iter().zip(inputs) {
            if t.dtype().name() != d.dtype {
                return Err(EngineError::Binding(format!("input '{}' must be {}, got {}", d.name, d.dtype, t.dtype())));
            }
        }
        for (d, t) in descs.iter().zip(inputs) {
            self.set_input_shape(&d.name, t.shape())?;
        }
        Ok(())
    }

    /// Placeholder (zero) inputs of the current shapes: for benchmarks and profiling.
    pub fn zero_inputs(&self) -> Result<Vec<Tensor>> {
        self.engine
            .meta
            .inputs
            .iter()
            .zip(&self.shapes)
            .map(|(d, s)| {
                let dtype: DType = d.dtype.parse().map_err(|_| EngineError::Corrupt(format!("dtype '{}'", d.dtype)))?;
                Ok(Tensor::zeros(dtype, s.clone()))
            })
            .collect()
    }

    /// The executor for the current shapes: the plan's own at a profile's optimal
    /// shapes, else one bound on the host from the dynamic graph (kept for reuse).
    fn executor(&mut self) -> Result<&mut Executor> {
        let Backend::Cuda(cuda) = &self.engine.backend else {
            return Err(EngineError::Unsupported("a CPU plan has no GPU executor".into()));
        };
        if let Some(i) = self.executors.iter().position(|(s, _)| *s == self.shapes) {
            let hit = self.executors.remove(i);
            self.executors.push(hit);
        } else {
            let ex = self.new_executor(cuda)?;
            if self.executors.len() == SHAPE_CACHE {
                self.executors.remove(0);
            }
            self.executors.push((self.shapes.clone(), ex));
        }
        let last = self.executors.len() - 1;
        Ok(&mut self.executors[last].1)
    }

    fn new_executor(&self, cuda: &CudaEngine) -> Result<Executor> {
        let plan = &self.engine.meta.profiles[self.profile];
        let at_opt = self.shapes == plan.profile.opt_shapes();
        let mut options = kiln_cuda::Options {
            allow_tf32: self.engine.meta.flags.precision.tf32,
            workspace_limit: self.engine.meta.flags.workspace_limit,
            images: Some(cuda.images.clone()),
            allow_ptx_fallback: cuda.allow_ptx_fallback,
            use_cuda_graph: cuda.use_cuda_graph,
            ..kiln_cuda::Options::default()
        };
        if at_opt {
            if cuda.replay_tactics {
                options.tactics = Some(plan.tactic_choices.clone());
            }
            let graph = &self.engine.built[self.profile];
            return Ok(Executor::with_store(&cuda.device, graph, options, &cuda.store)?);
        }
        let source = self.engine.source.as_ref().ok_or_else(|| EngineError::Corrupt("no dynamic graph".into()))?;
        let inputs = placeholder_inputs(source, &self.shapes)?;
        let flags = &self.engine.meta.flags;
        let graph = prepare::build_for_cuda(source, &inputs, flags.precision, flags.opt_level)?;
        Ok(Executor::with_store(&cuda.device, &graph, options, &cuda.store)?)
    }

    /// Enqueues one inference on the context's stream without waiting: the inputs'
    /// copies (when given), the compute and the outputs' copies, with events between
    /// them. [`finish`](Self::finish) waits and returns the phases' times.
    pub fn begin(&mut self, inputs: Option<&[Tensor]>) -> Result<()> {
        if let Some(inputs) = inputs {
            self.accept(inputs)?;
        }
        Ok(self.executor()?.begin(inputs)?)
    }

    pub fn finish(&mut self) -> Result<PhaseTimes> {
        Ok(self.executor()?.finish()?)
    }

    /// Runs once launch by launch, timing each on the GPU (no CUDA graph).
    pub fn profile_layers(&mut self, inputs: &[Tensor]) -> Result<Vec<LayerTime>> {
        self.accept(inputs)?;
        let (_, times) = self.executor()?.run_timed(inputs)?;
        Ok(times.into_iter().map(|t| LayerTime { node: t.node, op: t.op, ms: t.ms }).collect())
    }

    /// Whether this context runs on a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self.engine.backend, Backend::Cuda(_))
    }
}

#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<ExecutionContext>();
}
