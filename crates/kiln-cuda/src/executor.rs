//! Running a planned graph on a GPU.
//!
//! Building an [`Executor`] does everything that can fail before the first run: the
//! plan (shapes, slots, arena), the lowering of every step to kernels ([`lower_step`],
//! host only: an op without a kernel is `CudaError::UnsupportedNode` here, never at run
//! time), the device buffers, the weights upload, the cuBLASLt plans and the launch
//! list — captured once into a CUDA graph when `Options::use_cuda_graph`.
//!
//! `run` copies the inputs into their arena slots, replays the graph (or enqueues the
//! launches one by one, checking each in debug builds) and copies the outputs back.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};
use kiln_ir::ops::nn::NnOp;
use kiln_ir::ops::{ElementwiseOp, Expr, ExprNode, FusedOp, Op};
use kiln_ir::tensor::Bytes;
use kiln_ir::{DType, Graph, Tensor};

use crate::blas::{Blas, BlasType, MatmulPlan, MatmulShape, Operands};
use crate::graph_capture::{CapturedGraph, Launch, LaunchFn};
use crate::kernels::{self, BinaryCode, MAX_RANK, Strides, UnaryCode};
use crate::memory::{BufferKind, DeviceBuffer, DeviceMemory};
use crate::nvrtc::Compiler;
use crate::plan::{ExecutionPlan, SlotId, Step};
use crate::{CudaError, Device, Result};

#[derive(Clone, Debug)]
pub struct Options {
    /// Capture the launches once into a CUDA graph and replay it on every run.
    pub use_cuda_graph: bool,
    /// Synchronise and check for errors after every launch (when not replaying a
    /// graph), so that a failing kernel is reported with its node. Default: debug builds.
    pub check_each_launch: bool,
    /// FP32 products may use TF32 tensor cores (faster, about 1e-3 relative error).
    pub allow_tf32: bool,
    /// How many cuBLASLt algorithms to ask the heuristic for (kept for auto-tuning).
    pub max_blas_algos: usize,
    /// The most workspace cuBLASLt may use; `None` is its recommendation for the GPU.
    pub workspace_limit: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            use_cuda_graph: true,
            check_each_launch: cfg!(debug_assertions),
            allow_tf32: false,
            max_blas_algos: 8,
            workspace_limit: None,
        }
    }
}

/// What a step becomes on the GPU: zero or more kernels, decided on the host.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// `elementwise.cu`'s `kiln_unary_*`.
    Unary { code: UnaryCode, dtype: DType, x: SlotId, y: SlotId, n: usize },
    /// `elementwise.cu`'s broadcasting `kiln_binary_*` (`a` may be `y`: in place).
    Binary {
        code: BinaryCode,
        dtype: DType,
        a: SlotId,
        b: SlotId,
        y: SlotId,
        n: usize,
        rank: usize,
        strides: StridesEq,
    },
    /// A cuBLASLt product.
    Matmul { shape: MatmulShape, a: SlotId, b: SlotId, c: Option<SlotId>, bias: Option<SlotId>, y: SlotId },
}

/// [`Strides`] with equality, for tests of the lowering.
#[derive(Clone, Copy, Debug)]
pub struct StridesEq(pub Strides);

impl PartialEq for StridesEq {
    fn eq(&self, o: &StridesEq) -> bool {
        self.0.out_dims == o.0.out_dims && self.0.a == o.0.a && self.0.b == o.0.b
    }
}

/// A plan's steps as kernels, in order: `(step index, kernels)`. Host only, so that what
/// a graph needs can be checked without a GPU.
pub fn lower(plan: &ExecutionPlan, options: &Options) -> Result<Vec<(usize, Vec<Kernel>)>> {
    plan.steps.iter().enumerate().map(|(i, s)| Ok((i, lower_step(plan, s, options)?))).collect()
}

/// The per-op dispatch: which kernels run a step. Every op the CUDA backend supports
/// is matched here; anything else is `UnsupportedNode`, naming the node, op and reason.
pub fn lower_step(plan: &ExecutionPlan, step: &Step, options: &Options) -> Result<Vec<Kernel>> {
    let unsupported =
        |reason: String| CudaError::UnsupportedNode { node: step.node.clone(), op: step.op.name().to_string(), reason };
    if step.alias {
        return Ok(vec![]);
    }
    // A step whose outputs are all empty has nothing to compute.
    if !step.outputs.is_empty() && step.outputs.iter().all(|&o| plan.slot(o).bytes == 0) {
        return Ok(vec![]);
    }
    let input = |i: usize| -> Result<SlotId> {
        step.inputs.get(i).copied().flatten().ok_or_else(|| unsupported(format!("input {i} is missing")))
    };
    let float = |dtype: DType| -> Result<()> {
        match dtype {
            DType::F32 | DType::F16 => Ok(()),
            d => Err(unsupported(format!("dtype {d} (f32 and f16 only)"))),
        }
    };
    let single_output = || -> Result<SlotId> {
        match step.outputs.as_slice() {
            [y] => Ok(*y),
            _ => Err(unsupported(format!("{} outputs (one expected)", step.outputs.len()))),
        }
    };
    match &step.op {
        Op::Elementwise(ElementwiseOp::Unary(u)) => {
            let code = unary_code(u).ok_or_else(|| unsupported("no CUDA kernel for this activation yet".into()))?;
            let (x, y) = (input(0)?, single_output()?);
            let dtype = plan.slot(y).dtype;
            float(dtype)?;
            if plan.slot(x).dtype != dtype || plan.slot(x).shape != plan.slot(y).shape {
                return Err(unsupported("input and output differ in dtype or shape".into()));
            }
            Ok(vec![Kernel::Unary { code, dtype, x, y, n: plan.slot(y).len() }])
        }
        Op::Elementwise(ElementwiseOp::Binary(b)) => {
            let code = binary_code(b).ok_or_else(|| unsupported("no CUDA kernel for this binary op yet".into()))?;
            binary(plan, code, input(0)?, input(1)?, single_output()?).map_err(unsupported).map(|k| vec![k])
        }
        Op::Elementwise(ElementwiseOp::Variadic(v)) if step.inputs.len() == 2 => {
            let code = match v {
                VariadicOp::Sum => BinaryCode::Add,
                VariadicOp::Max => BinaryCode::Max,
                VariadicOp::Min => BinaryCode::Min,
                VariadicOp::Mean => return Err(unsupported("Mean has no CUDA kernel yet".into())),
            };
            binary(plan, code, input(0)?, input(1)?, single_output()?).map_err(unsupported).map(|k| vec![k])
        }
        Op::Nn(NnOp::MatMul) => {
            let (a, b, y) = (input(0)?, input(1)?, single_output()?);
            matmul(plan, a, b, y, options).map_err(unsupported).map(|k| vec![k])
        }
        Op::Nn(NnOp::Gemm(g)) => {
            let (a, b, y) = (input(0)?, input(1)?, single_output()?);
            let c = step.inputs.get(2).copied().flatten();
            gemm(plan, g, a, b, c, y, options).map_err(unsupported)
        }
        Op::Fused(FusedOp::Layer(l)) if matches!(*l.core, Op::Nn(NnOp::MatMul | NnOp::Gemm(_))) => {
            let y = single_output()?;
            let mut kernels = match &*l.core {
                Op::Nn(NnOp::Gemm(g)) if l.core_inputs >= 2 => {
                    let c = if l.core_inputs >= 3 { step.inputs.get(2).copied().flatten() } else { None };
                    gemm(plan, g, input(0)?, input(1)?, c, y, options).map_err(unsupported)?
                }
                _ if l.core_inputs == 2 => vec![matmul(plan, input(0)?, input(1)?, y, options).map_err(unsupported)?],
                _ => return Err(unsupported(format!("{} core inputs", l.core_inputs))),
            };
            let epi = Epilogue::of(&l.epilogue)
                .ok_or_else(|| unsupported(format!("epilogue {} has no CUDA kernel yet", l.epilogue.describe())))?;
            if let Some(i) = epi.add {
                let r = input(l.core_inputs + i - 1)?;
                let (sr, n) = (plan.slot(r), plan.slot(y).shape.last().copied().unwrap_or(1));
                let row = sr.dtype == plan.slot(y).dtype && sr.len() == n && (n == 1 || sr.shape.last() == Some(&n));
                match kernels.as_mut_slice() {
                    [Kernel::Matmul { shape, bias: bias @ None, .. }] if row => {
                        shape.bias = true;
                        *bias = Some(r);
                    }
                    _ => kernels.push(binary(plan, BinaryCode::Add, y, r, y).map_err(unsupported)?),
                }
            }
            if epi.relu {
                match kernels.as_mut_slice() {
                    [Kernel::Matmul { shape, .. }] => shape.relu = true,
                    _ => {
                        let (dtype, n) = (plan.slot(y).dtype, plan.slot(y).len());
                        kernels.push(Kernel::Unary { code: UnaryCode::Relu, dtype, x: y, y, n });
                    }
                }
            }
            Ok(kernels)
        }
        _ => Err(unsupported("no CUDA kernel for this op yet".into())),
    }
}

/// The epilogues of a fused MatMul/Gemm the CUDA backend runs: `x`, `x + r`, `relu(x)`,
/// `relu(x + r)` (`x` the product, `r` the epilogue's input `add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Epilogue {
    add: Option<usize>,
    relu: bool,
}

impl Epilogue {
    fn of(e: &Expr) -> Option<Epilogue> {
        use ExprNode::{Binary, Input, Unary};
        let (body, relu) = match e.nodes.split_last()? {
            (Unary(UnaryOp::Relu, a), rest) if *a + 1 == e.nodes.len() - 1 => (rest, true),
            _ => (&e.nodes[..], false),
        };
        match body {
            [Input(0)] => Some(Epilogue { add: None, relu }),
            [Input(p), Input(q), Binary(BinaryOp::Add, 0, 1) | Binary(BinaryOp::Add, 1, 0)] => match (p, q) {
                (0, &j) | (&j, 0) if j >= 1 => Some(Epilogue { add: Some(j), relu }),
                _ => None,
            },
            _ => None,
        }
    }
}

fn unary_code(u: &UnaryOp) -> Option<UnaryCode> {
    Some(match u {
        UnaryOp::Relu => UnaryCode::Relu,
        UnaryOp::Sigmoid => UnaryCode::Sigmoid,
        UnaryOp::Tanh => UnaryCode::Tanh,
        UnaryOp::Exp => UnaryCode::Exp,
        UnaryOp::Log => UnaryCode::Log,
        UnaryOp::Sqrt => UnaryCode::Sqrt,
        UnaryOp::Neg => UnaryCode::Neg,
        UnaryOp::Abs => UnaryCode::Abs,
        UnaryOp::Erf => UnaryCode::Erf,
        UnaryOp::Gelu { tanh: false } => UnaryCode::Gelu,
        UnaryOp::Swish { alpha } if *alpha == 1.0 => UnaryCode::Silu,
        _ => return None,
    })
}

fn binary_code(b: &BinaryOp) -> Option<BinaryCode> {
    Some(match b {
        BinaryOp::Add => BinaryCode::Add,
        BinaryOp::Sub => BinaryCode::Sub,
        BinaryOp::Mul => BinaryCode::Mul,
        BinaryOp::Div => BinaryCode::Div,
        BinaryOp::Pow => BinaryCode::Pow,
        _ => return None,
    })
}

fn binary(
    plan: &ExecutionPlan,
    code: BinaryCode,
    a: SlotId,
    b: SlotId,
    y: SlotId,
) -> std::result::Result<Kernel, String> {
    let (sa, sb, sy) = (plan.slot(a), plan.slot(b), plan.slot(y));
    let dtype = sy.dtype;
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(format!("dtype {dtype} (f32 and f16 only)"));
    }
    if sa.dtype != dtype || sb.dtype != dtype {
        return Err(format!("mixed dtypes {} and {} into {dtype}", sa.dtype, sb.dtype));
    }
    if sy.shape.len() > MAX_RANK {
        return Err(format!("rank {} (at most {MAX_RANK})", sy.shape.len()));
    }
    let strides = Strides::broadcast(&sa.shape, &sb.shape, &sy.shape)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast to {:?}", sa.shape, sb.shape, sy.shape))?;
    Ok(Kernel::Binary { code, dtype, a, b, y, n: sy.len(), rank: sy.shape.len(), strides: StridesEq(strides) })
}

fn blas_type(dtype: DType) -> std::result::Result<BlasType, String> {
    match dtype {
        DType::F32 => Ok(BlasType::F32),
        DType::F16 => Ok(BlasType::F16),
        d => Err(format!("dtype {d} (f32 and f16 only)")),
    }
}

/// ONNX MatMul (numpy semantics): `[..., m, k] · [..., k, n]`, 1-D operands promoted,
/// batch dims broadcast when one side has them all and the other none.
fn matmul(
    plan: &ExecutionPlan,
    a: SlotId,
    b: SlotId,
    y: SlotId,
    options: &Options,
) -> std::result::Result<Kernel, String> {
    let (sa, sb, sy) = (plan.slot(a), plan.slot(b), plan.slot(y));
    if sa.dtype != sb.dtype || sa.dtype != sy.dtype {
        return Err(format!("mixed dtypes {} · {} → {}", sa.dtype, sb.dtype, sy.dtype));
    }
    let dtype = blas_type(sy.dtype)?;
    let mut ash = sa.shape.clone();
    let mut bsh = sb.shape.clone();
    if ash.is_empty() || bsh.is_empty() {
        return Err("scalar operand".into());
    }
    if ash.len() == 1 {
        ash.insert(0, 1);
    }
    if bsh.len() == 1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(format!("inner dims differ: {:?} · {:?}", sa.shape, sb.shape));
    }
    if k == 0 {
        return Err("empty inner dimension".into());
    }
    let a_batch: usize = ash[..ash.len() - 2].iter().product();
    let b_batch: usize = bsh[..bsh.len() - 2].iter().product();
    let batch = sy.len() / (m * n).max(1);
    let mut shape = MatmulShape::new(dtype, batch, m, n, k);
    shape.allow_tf32 = options.allow_tf32;
    match (a_batch == batch, b_batch == batch) {
        (true, true) => {}
        (true, false) if b_batch == 1 => {
            // One B for every batch of A: a single product with batch·m rows.
            shape.m = batch * m;
            shape.batch = 1;
            shape.stride_a = shape.m * k;
            shape.stride_c = shape.m * n;
        }
        (false, true) if a_batch == 1 => shape.stride_a = 0,
        _ => return Err(format!("batch broadcasting of {:?} · {:?} is not supported yet", sa.shape, sb.shape)),
    }
    Ok(Kernel::Matmul { shape, a, b, c: None, bias: None, y })
}

/// ONNX Gemm: `alpha · op(A) · op(B) + beta · C`, C broadcast to `[m, n]`.
fn gemm(
    plan: &ExecutionPlan,
    g: &kiln_ir::ops::nn::Gemm,
    a: SlotId,
    b: SlotId,
    c: Option<SlotId>,
    y: SlotId,
    options: &Options,
) -> std::result::Result<Vec<Kernel>, String> {
    let (sa, sb, sy) = (plan.slot(a), plan.slot(b), plan.slot(y));
    if sa.dtype != sb.dtype || sa.dtype != sy.dtype {
        return Err(format!("mixed dtypes {} · {} → {}", sa.dtype, sb.dtype, sy.dtype));
    }
    let dtype = blas_type(sy.dtype)?;
    if sa.shape.len() != 2 || sb.shape.len() != 2 || sy.shape.len() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    let (m, n) = (sy.shape[0], sy.shape[1]);
    let k = if g.trans_a { sa.shape[0] } else { sa.shape[1] };
    if k == 0 {
        return Err("empty inner dimension".into());
    }
    let mut shape = MatmulShape::new(dtype, 1, m, n, k);
    shape.trans_a = g.trans_a;
    shape.trans_b = g.trans_b;
    shape.alpha = g.alpha;
    shape.allow_tf32 = options.allow_tf32;
    let Some(c) = c.filter(|_| g.beta != 0.0) else {
        return Ok(vec![Kernel::Matmul { shape, a, b, c: None, bias: None, y }]);
    };
    let sc = plan.slot(c);
    if sc.dtype != sy.dtype {
        return Err(format!("C of dtype {} into {}", sc.dtype, sy.dtype));
    }
    // C broadcasts to [m, n] (checked by inference): as many elements means the same layout.
    if sc.len() == m * n {
        shape.beta = g.beta;
        return Ok(vec![Kernel::Matmul { shape, a, b, c: Some(c), bias: None, y }]);
    }
    if g.beta != 1.0 {
        return Err(format!("C of shape {:?} with beta {} is not supported yet", sc.shape, g.beta));
    }
    if sc.len() == n && (n == 1 || sc.shape.last() == Some(&n)) {
        // One value per output column: cuBLASLt's bias epilogue.
        shape.bias = true;
        return Ok(vec![Kernel::Matmul { shape, a, b, c: None, bias: Some(c), y }]);
    }
    // Any other broadcast: the product, then C added in place.
    Ok(vec![Kernel::Matmul { shape, a, b, c: None, bias: None, y }, binary(plan, BinaryCode::Add, y, c, y)?])
}

/// How long one launch took (`Executor::run_timed`).
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTime {
    pub node: String,
    pub op: String,
    pub ms: f32,
}

/// A graph compiled for one GPU.
pub struct Executor {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    plan: ExecutionPlan,
    memory: DeviceMemory,
    launches: Vec<Launch>,
    graph: Option<CapturedGraph>,
    options: Options,
    // Kept alive for the launches that use them.
    _blas: Option<Arc<Blas>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("steps", &self.plan.steps.len())
            .field("launches", &self.launches.len())
            .field("memory", &self.memory)
            .field("cuda_graph", &self.graph)
            .finish()
    }
}

/// Kernel modules, compiled (or read from the cache) on first use.
struct Modules<'d> {
    dev: &'d Device,
    compiler: Option<Compiler>,
    loaded: HashMap<&'static str, Arc<CudaModule>>,
}

impl Modules<'_> {
    fn function(&mut self, source: kernels::Source, name: &str) -> Result<CudaFunction> {
        if !self.loaded.contains_key(source.name) {
            if self.compiler.is_none() {
                self.compiler = Some(Compiler::new(&self.dev.arch())?);
            }
            let compiler = self.compiler.as_ref().expect("just made");
            let compiled = compiler.compile(source.name, source.code)?;
            let module = self
                .dev
                .ctx
                .load_module(Ptx::from_binary(compiled.cubin))
                .map_err(|e| CudaError::driver(format!("loading kernel module {}", source.name), e))?;
            self.loaded.insert(source.name, module);
        }
        self.loaded[source.name].load_function(name).map_err(|e| CudaError::driver(format!("loading kernel {name}"), e))
    }
}

fn grid(n: usize) -> LaunchConfig {
    const BLOCK: usize = 256;
    let blocks = n.div_ceil(BLOCK).clamp(1, 1 << 20) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK as u32, 1, 1), shared_mem_bytes: 0 }
}

fn suffix(dtype: DType) -> &'static str {
    if dtype == DType::F16 { "f16" } else { "f32" }
}

impl Executor {
    /// Plans `graph` (all shapes known), lowers every step, allocates and uploads.
    pub fn new(dev: &Device, graph: &Graph, options: Options) -> Result<Executor> {
        let plan = ExecutionPlan::new(graph)?;
        let lowered = lower(&plan, &options)?;
        let ctx = dev.ctx.clone();
        // The legacy default stream cannot be captured: the executor has its own.
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("creating a stream", e))?;
        let arena = DeviceBuffer::alloc(&ctx, plan.report.arena_bytes, "the activation arena")?;
        let weights = DeviceBuffer::alloc(&ctx, plan.report.weight_bytes, "the weights")?;
        for w in &plan.weights {
            let Op::Constant(t) = &graph.nodes[w.node].op else {
                return Err(CudaError::Graph(format!("weight '{}' is not a constant", plan.slot(w.slot).name)));
            };
            weights.upload(&stream, w.offset, t.bytes())?;
        }
        let mut memory = DeviceMemory { arena, weights, workspace: DeviceBuffer::alloc(&ctx, 0, "the workspace")? };
        let ptr = |memory: &DeviceMemory, s: SlotId| memory.ptr(plan.slot(s).view);

        // cuBLASLt plans first: the workspace is the most any chosen algorithm needs.
        let needs_blas = lowered.iter().flat_map(|(_, ks)| ks).any(|k| matches!(k, Kernel::Matmul { .. }));
        let blas = if needs_blas { Some(Blas::new(&ctx)?) } else { None };
        let limit = options.workspace_limit.unwrap_or_else(|| Blas::default_workspace_limit(dev.compute_capability));
        let mut matmuls: Vec<Option<Arc<MatmulPlan>>> = Vec::new();
        for (i, kernels) in &lowered {
            for k in kernels {
                matmuls.push(match (k, &blas) {
                    (Kernel::Matmul { shape, a, b, c, bias, y }, Some(blas)) => {
                        let ops = Operands {
                            a: ptr(&memory, *a)?,
                            b: ptr(&memory, *b)?,
                            c: c.map(|c| ptr(&memory, c)).transpose()?,
                            d: ptr(&memory, *y)?,
                            bias: bias.map(|c| ptr(&memory, c)).transpose()?,
                        };
                        let step = &plan.steps[*i];
                        let p = MatmulPlan::new(blas, shape, ops, limit, options.max_blas_algos).map_err(|e| {
                            CudaError::NodeLaunch {
                                node: step.node.clone(),
                                op: step.op.name().into(),
                                msg: e.to_string(),
                            }
                        })?;
                        Some(Arc::new(p))
                    }
                    _ => None,
                });
            }
        }
        let workspace = matmuls.iter().flatten().map(|m| m.workspace_bytes()).max().unwrap_or(0);
        memory.workspace = DeviceBuffer::alloc(&ctx, workspace, "the workspace")?;

        let mut modules = Modules { dev, compiler: None, loaded: HashMap::new() };
        let mut launches = Vec::new();
        let mut matmuls = matmuls.into_iter();
        for (i, kernels) in lowered {
            let step = &plan.steps[i];
            for k in kernels {
                let mm = matmuls.next().flatten();
                let run: LaunchFn = match k {
                    Kernel::Unary { code, dtype, x, y, n } => {
                        let f = modules.function(kernels::ELEMENTWISE, &format!("kiln_unary_{}", suffix(dtype)))?;
                        let (op, x, y, n64) = (code as i32, ptr(&memory, x)?, ptr(&memory, y)?, n as i64);
                        Box::new(move |s: &CudaStream| {
                            let mut l = s.launch_builder(&f);
                            l.arg(&op).arg(&x).arg(&y).arg(&n64);
                            // SAFETY: the argument list matches `kiln_unary_*`; x and y hold n elements.
                            unsafe { l.launch(grid(n)) }.map(|_| ()).map_err(|e| CudaError::driver("launch", e))
                        })
                    }
                    Kernel::Binary { code, dtype, a, b, y, n, rank, strides } => {
                        let f = modules.function(kernels::ELEMENTWISE, &format!("kiln_binary_{}", suffix(dtype)))?;
                        let (op, a, b, y) = (code as i32, ptr(&memory, a)?, ptr(&memory, b)?, ptr(&memory, y)?);
                        let (n64, rank, strides) = (n as i64, rank as i32, strides.0);
                        Box::new(move |s: &CudaStream| {
                            let mut l = s.launch_builder(&f);
                            l.arg(&op).arg(&a).arg(&b).arg(&y).arg(&n64).arg(&rank).arg(&strides);
                            // SAFETY: the argument list matches `kiln_binary_*`; the strides
                            // keep every index inside a and b, y holds n elements.
                            unsafe { l.launch(grid(n)) }.map(|_| ()).map_err(|e| CudaError::driver("launch", e))
                        })
                    }
                    Kernel::Matmul { .. } => {
                        let mm = mm.ok_or_else(|| CudaError::Graph("a product without a cuBLASLt plan".into()))?;
                        let (ws, ws_bytes) = (memory.workspace.ptr(), memory.workspace.bytes());
                        // SAFETY: the plan's operands and the workspace live as long as the
                        // executor, which owns this closure.
                        Box::new(move |s: &CudaStream| unsafe { mm.run(s, ws, ws_bytes) })
                    }
                };
                launches.push(Launch { node: step.node.clone(), op: step.op.name().to_string(), run });
            }
        }
        let graph = if options.use_cuda_graph { Some(CapturedGraph::capture(&stream, &launches)?) } else { None };
        Ok(Executor { ctx, stream, plan, memory, launches, graph, options, _blas: blas })
    }

    pub fn plan(&self) -> &ExecutionPlan {
        &self.plan
    }

    pub fn memory(&self) -> &DeviceMemory {
        &self.memory
    }

    /// The launches, in order (one step may have several, an alias step none).
    pub fn launches(&self) -> &[Launch] {
        &self.launches
    }

    pub fn uses_cuda_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Runs the graph on `inputs` (in the graph's input order; dtypes and shapes must
    /// be exactly those planned) and returns its outputs.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.copy_inputs(inputs)?;
        match &self.graph {
            Some(g) => g.replay()?,
            None => {
                for l in &self.launches {
                    l.enqueue(&self.stream)?;
                    if self.options.check_each_launch {
                        self.stream.synchronize().map_err(|e| l.error(e.to_string()))?;
                    }
                }
            }
        }
        self.stream.synchronize().map_err(|e| CudaError::driver("running the graph", e))?;
        self.copy_outputs()
    }

    /// Like `run` without a CUDA graph, timing every launch with CUDA events: the
    /// outputs and each launch's time, in order.
    pub fn run_timed(&mut self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Vec<LaunchTime>)> {
        self.copy_inputs(inputs)?;
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = || self.ctx.new_event(flags).map_err(|e| CudaError::driver("creating an event", e));
        let mut marks = vec![event()?];
        marks[0].record(&self.stream).map_err(|e| CudaError::driver("recording an event", e))?;
        for l in &self.launches {
            l.enqueue(&self.stream)?;
            let e = event()?;
            e.record(&self.stream).map_err(|e| CudaError::driver("recording an event", e))?;
            marks.push(e);
        }
        self.stream.synchronize().map_err(|e| CudaError::driver("running the graph", e))?;
        let mut times = Vec::with_capacity(self.launches.len());
        for (l, w) in self.launches.iter().zip(marks.windows(2)) {
            let ms = w[0].elapsed_ms(&w[1]).map_err(|e| CudaError::driver("reading an event", e))?;
            times.push(LaunchTime { node: l.node.clone(), op: l.op.clone(), ms });
        }
        Ok((self.copy_outputs()?, times))
    }

    fn copy_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(CudaError::Graph(format!(
                "the graph takes {} inputs, got {}",
                self.plan.inputs.len(),
                inputs.len()
            )));
        }
        for (&id, t) in self.plan.inputs.iter().zip(inputs) {
            let slot = self.plan.slot(id);
            if t.dtype() != slot.dtype || t.shape() != slot.shape.as_slice() {
                return Err(CudaError::Input {
                    name: slot.name.clone(),
                    msg: format!("expected {}{:?}, got {}{:?}", slot.dtype, slot.shape, t.dtype(), t.shape()),
                });
            }
            self.memory.buffer(slot.view.buffer).upload(&self.stream, slot.view.offset, t.bytes())?;
        }
        Ok(())
    }

    fn copy_outputs(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for &id in &self.plan.outputs {
            let slot = self.plan.slot(id);
            let mut host = AlignedBytes::new(slot.bytes);
            self.memory.buffer(slot.view.buffer).download(&self.stream, slot.view.offset, host.as_mut())?;
            let t = Tensor::from_bytes(slot.dtype, slot.shape.clone(), Bytes::from_owner(host))
                .map_err(|e| CudaError::Graph(e.to_string()))?;
            out.push(t);
        }
        Ok(out)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Nothing may still be reading the buffers when they are freed.
        let _ = self.stream.synchronize();
    }
}

/// Host bytes aligned for any element type (so output tensors view without copying).
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn new(len: usize) -> AlignedBytes {
        AlignedBytes { words: vec![0; len.div_ceil(8)], len }
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; any byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

/// Which buffer a slot is in, for reports.
pub fn buffer_name(kind: BufferKind) -> &'static str {
    match kind {
        BufferKind::Arena => "arena",
        BufferKind::Weights => "weights",
        BufferKind::Workspace => "workspace",
    }
}
