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
//!
//! For an engine: `with_store` shares the weights between executors (`crate::weights`);
//! `Options::images` loads kernel modules from a plan file instead of NVRTC;
//! `Options::autotune`, `timing_cache` and `tactics` choose the products' and
//! convolutions' algorithms (`crate::tune`), reported by `tactics()`; the asynchronous
//! phases and device-memory copies are in `crate::io`. An executor is `Send`: it binds
//! its context on the calling thread before driver calls.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream};
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::{MovementOp, PadMode};
use kiln_ir::ops::nn::NnOp;
use kiln_ir::ops::quant::QuantOp;
use kiln_ir::ops::reduce::{ReduceKind, ReduceOp, SoftmaxKind};
use kiln_ir::ops::{Expr, ExprNode, FusedOp, Op};
use kiln_ir::tensor::Bytes;
use kiln_ir::{DType, Graph, Tensor};

use crate::blas::{Blas, BlasType, MatmulPlan, MatmulShape, Operands};
use crate::graph_capture::{CapturedGraph, Launch, LaunchFn};
use crate::kernels::{BinaryCode, CompareCode, Strides, UnaryCode};
use crate::launch::movement::Layout;
use crate::launch::{Buf, Kernels, Launcher, ModuleImage};
use crate::lower;
use crate::memory::{BufferKind, DeviceBuffer, DeviceMemory};
use crate::plan::{ExecutionPlan, Slot, SlotId, Step};
use crate::tactics::{Tactic, TimingCache, check_tactic_count, forced_choice};
use crate::tune::{ConvOperands, Tuner, conv_algo_name};
use crate::weights::WeightStore;
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
    /// Kernel modules from a plan file: loaded instead of compiled (no NVRTC at all); a
    /// module the images lack is an error.
    pub images: Option<Arc<Vec<ModuleImage>>>,
    /// With `images`: a module built for another architecture is JIT-compiled from its
    /// PTX (reported by `Executor::ptx_jit_modules`) instead of refused.
    pub allow_ptx_fallback: bool,
    /// Time every candidate algorithm of each product and convolution at build time and
    /// keep the fastest (else the heuristic's first).
    pub autotune: bool,
    /// Where auto-tuning looks first and records what it timed (used with `autotune`).
    pub timing_cache: Option<Arc<Mutex<TimingCache>>>,
    /// The candidate each launch uses (from a plan file: `Executor::tactics`' choices),
    /// `None` entries chosen as usual; one entry per launch.
    pub tactics: Option<Vec<Option<usize>>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            use_cuda_graph: true,
            check_each_launch: cfg!(debug_assertions),
            allow_tf32: false,
            max_blas_algos: 8,
            workspace_limit: None,
            images: None,
            allow_ptx_fallback: false,
            autotune: false,
            timing_cache: None,
            tactics: None,
        }
    }
}

/// What a step becomes on the GPU: zero or more kernels, decided on the host. Operands
/// are slots (the plan's, or temporaries in the workspace numbered after them); shapes
/// come from the slots.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// `kiln_unary_*` over `n` elements (`x` may be `y`: in place); `p` the parameters.
    Unary {
        code: UnaryCode,
        p: [f32; 2],
        dtype: DType,
        x: SlotId,
        y: SlotId,
        n: usize,
    },
    /// Broadcasting `kiln_binary_*` (`a` may be `y`: in place).
    Binary {
        code: BinaryCode,
        dtype: DType,
        a: SlotId,
        b: SlotId,
        y: SlotId,
    },
    /// Broadcasting comparison or logic into bool `y`; `dtype` is the inputs'.
    Compare {
        code: CompareCode,
        dtype: DType,
        a: SlotId,
        b: SlotId,
        y: SlotId,
    },
    /// `out = cond ? x : y`, broadcasting.
    Where {
        dtype: DType,
        cond: SlotId,
        x: SlotId,
        y: SlotId,
        out: SlotId,
    },
    Cast {
        from: DType,
        to: DType,
        x: SlotId,
        y: SlotId,
        n: usize,
    },
    /// The strided copy from `src` to `dst`.
    Copy {
        dtype: DType,
        src: SlotId,
        dst: SlotId,
        copy: CopySpec,
    },
    /// Every element of `y` set to `value`.
    Fill {
        dtype: DType,
        y: SlotId,
        value: f64,
    },
    Gather {
        dtype: DType,
        data: SlotId,
        axis: usize,
        indices: SlotId,
        y: SlotId,
    },
    Pad {
        dtype: DType,
        mode: PadMode,
        x: SlotId,
        pads: Vec<(i64, i64)>,
        value: f64,
        y: SlotId,
    },
    Reduce {
        kind: ReduceKind,
        dtype: DType,
        x: SlotId,
        axes: Vec<usize>,
        y: SlotId,
    },
    TopK {
        largest: bool,
        dtype: DType,
        x: SlotId,
        axis: usize,
        k: usize,
        values: SlotId,
        indices: SlotId,
    },
    ArgReduce {
        max: bool,
        last: bool,
        dtype: DType,
        x: SlotId,
        axis: usize,
        y: SlotId,
    },
    Softmax {
        log: bool,
        dtype: DType,
        x: SlotId,
        axis: usize,
        coerce_2d: bool,
        y: SlotId,
    },
    LayerNorm {
        dtype: DType,
        x: SlotId,
        axis: usize,
        scale: SlotId,
        bias: Option<SlotId>,
        eps: f32,
        y: SlotId,
        stats: Option<(SlotId, SlotId)>,
    },
    RmsNorm {
        dtype: DType,
        x: SlotId,
        axis: usize,
        scale: SlotId,
        eps: f32,
        y: SlotId,
    },
    /// A kernel of the conv/pool family (`lower/convpool.rs`).
    Nn(Box<lower::convpool::NnKernel>),
    /// A cuDNN convolution (its plan built in `Executor::new`); its cuDNN workspace
    /// starts at `ws_offset`, after the step's temporaries.
    Conv {
        dtype: DType,
        geom: crate::dnn::ConvGeometry,
        x: SlotId,
        w: SlotId,
        bias: Option<SlotId>,
        y: SlotId,
        ws_offset: usize,
    },
    /// A Cast with ONNX's `saturate` for FP8 targets (`Cast` saturates).
    CastSat {
        from: DType,
        to: DType,
        saturate: bool,
        x: SlotId,
        y: SlotId,
        n: usize,
    },
    /// Pow of a base (the output's dtype) and an exponent of another dtype, or of
    /// integers, broadcasting.
    PowAny {
        base: DType,
        exp: DType,
        a: SlotId,
        b: SlotId,
        y: SlotId,
    },
    /// IsNaN (`inf: None`) or IsInf (detecting +inf, -inf) into bool.
    Classify {
        dtype: DType,
        inf: Option<(bool, bool)>,
        x: SlotId,
        y: SlotId,
        n: usize,
    },
    /// Range into `y` (1-D, its length planned), start and delta read on the device.
    Range {
        dtype: DType,
        start: SlotId,
        delta: SlotId,
        y: SlotId,
    },
    /// EyeLike: `y` (2-D) one where column - row = k, else zero.
    Eye {
        dtype: DType,
        k: i64,
        y: SlotId,
    },
    /// Trilu; `k_input`: k is that (i64) input's value, read on the device.
    Trilu {
        dtype: DType,
        upper: bool,
        k: i64,
        k_input: Option<SlotId>,
        x: SlotId,
        y: SlotId,
    },
    ReverseSequence {
        dtype: DType,
        x: SlotId,
        lens: SlotId,
        batch_axis: usize,
        time_axis: usize,
        y: SlotId,
    },
    /// CumSum (`prod` false) or CumProd; `axis_input`: the axis is that input's value,
    /// read on the device.
    Cumulate {
        dtype: DType,
        prod: bool,
        exclusive: bool,
        reverse: bool,
        x: SlotId,
        axis: i64,
        axis_input: Option<SlotId>,
        y: SlotId,
    },
    /// Dropout with a training_mode input not known when the graph was built (and the
    /// ratio input, if any, read on the device too).
    Dropout {
        dtype: DType,
        x: SlotId,
        y: SlotId,
        mask: Option<SlotId>,
        ratio: Option<SlotId>,
        training: SlotId,
        seed: u64,
    },
    Hardmax {
        dtype: DType,
        x: SlotId,
        axis: usize,
        coerce_2d: bool,
        y: SlotId,
    },
    /// A direct launch of an index, loss or quantisation kernel (`launch/call.rs`).
    Call(crate::launch::call::Call),
    /// A cuBLASLt product.
    Matmul {
        shape: MatmulShape,
        a: SlotId,
        b: SlotId,
        c: Option<SlotId>,
        bias: Option<SlotId>,
        y: SlotId,
    },
    /// A kernel of the attention/recurrent/sampling/einsum family (`launch/family.rs`).
    Family(Box<crate::launch::family::FamilyCall>),
}

/// A strided copy (see `Launcher::copy_strided`), in elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopySpec {
    pub dims: Vec<usize>,
    pub src_offset: isize,
    pub src_strides: Vec<isize>,
    pub dst_offset: isize,
    pub dst_strides: Vec<isize>,
}

/// `(step index, kernels)` for every step, in order.
pub type Lowering = Vec<(usize, Vec<Kernel>)>;

/// A plan's steps as kernels, in order: `(step index, kernels)`. Host only, so that what
/// a graph needs can be checked without a GPU.
pub fn lower(plan: &ExecutionPlan, options: &Options) -> Result<Lowering> {
    lower_with_temps(plan, options).map(|(k, _)| k)
}

/// [`lower`], with the temporaries the kernels use (slots numbered after the plan's, in
/// the workspace; each step's start at offset 0, as steps run one after another).
pub fn lower_with_temps(plan: &ExecutionPlan, options: &Options) -> Result<(Lowering, Vec<Slot>)> {
    let mut temps = Vec::new();
    let mut out = Vec::with_capacity(plan.steps.len());
    for (i, s) in plan.steps.iter().enumerate() {
        out.push((i, lower_step_with(plan, s, options, &mut temps)?));
    }
    Ok((out, temps))
}

/// The per-op dispatch: which kernels run a step. Every op the CUDA backend supports
/// is matched here; anything else is `UnsupportedNode`, naming the node, op and reason.
pub fn lower_step(plan: &ExecutionPlan, step: &Step, options: &Options) -> Result<Vec<Kernel>> {
    lower_step_with(plan, step, options, &mut Vec::new())
}

fn lower_step_with(plan: &ExecutionPlan, step: &Step, options: &Options, temps: &mut Vec<Slot>) -> Result<Vec<Kernel>> {
    let unsupported = |reason: String| lower::unsupported(step, reason);
    if step.alias {
        return Ok(vec![]);
    }
    // A step whose outputs are all empty has nothing to compute.
    if !step.outputs.is_empty() && step.outputs.iter().all(|&o| plan.slot(o).bytes == 0) {
        return Ok(vec![]);
    }
    let mut cx = lower::Cx { plan, step, temps, temp_bytes: 0 };
    let r = match &step.op {
        Op::Nn(
            nn @ (NnOp::Conv(_)
            | NnOp::ConvTranspose(_)
            | NnOp::Pool(_)
            | NnOp::GlobalPool(_)
            | NnOp::MaxUnpool(_)
            | NnOp::Col2Im(_)),
        ) => lower::convpool::lower_nn(&mut cx, nn),
        Op::Fused(FusedOp::Layer(l)) if matches!(*l.core, Op::Nn(NnOp::Conv(_) | NnOp::ConvTranspose(_))) => {
            lower::convpool::lower_layer(&mut cx, l)
        }
        Op::Reduce(
            r @ (ReduceOp::BatchNorm(_)
            | ReduceOp::InstanceNorm(_)
            | ReduceOp::GroupNorm(_)
            | ReduceOp::Lrn(_)
            | ReduceOp::MeanVarianceNorm(_)),
        ) => lower::convpool::lower_norm(&mut cx, r),
        Op::Movement(MovementOp::DepthToSpace { blocksize, mode }) => {
            lower::convpool::space(&mut cx, *blocksize, Some(*mode))
        }
        Op::Movement(MovementOp::SpaceToDepth { blocksize }) => lower::convpool::space(&mut cx, *blocksize, None),
        Op::Quant(q @ (QuantOp::ConvInteger(_) | QuantOp::QLinearConv(_))) => lower::convpool::lower_quant(&mut cx, q),
        Op::Movement(
            m @ (MovementOp::Trilu { .. }
            | MovementOp::EyeLike { .. }
            | MovementOp::ReverseSequence { .. }
            | MovementOp::CumSum { .. }
            | MovementOp::CumProd { .. }
            | MovementOp::Range),
        ) => lower::misc::lower_movement(&mut cx, m),
        Op::Reduce(ReduceOp::Softmax(s)) if s.kind == SoftmaxKind::Hardmax => lower::misc::hardmax(&mut cx, s),
        Op::Elementwise(e) => lower::elementwise::lower(&mut cx, e),
        Op::Movement(m) if lower::index::handles(m) => lower::index::lower(&mut cx, m),
        Op::Movement(m) => lower::movement::lower(&mut cx, m),
        Op::Reduce(kiln_ir::ops::reduce::ReduceOp::Loss(l)) => lower::loss::lower(&mut cx, l),
        Op::Quant(q) => lower::quant::lower(&mut cx, q),
        Op::Reduce(r) => lower::reduce::lower(&mut cx, r),
        Op::Fused(FusedOp::Elementwise(e)) => (|| {
            let y = cx.single_output()?;
            let inputs: Vec<SlotId> =
                (0..step.inputs.len()).map(|i| cx.input(i)).collect::<std::result::Result<_, String>>()?;
            lower::fused::expr(&mut cx, e, &inputs, y)
        })(),
        Op::Fused(FusedOp::ConcatInPlace { axis }) => {
            cx.single_output().and_then(|y| lower::movement::concat(&cx, *axis, y))
        }
        Op::Fused(FusedOp::SliceView { axis, windows }) => {
            cx.input(0).and_then(|x| lower::movement::split(&cx, x, *axis, windows))
        }
        Op::Attention(a) => lower::attention::lower(&mut cx, a),
        Op::Recurrent(r) => lower::recurrent::lower(&mut cx, r),
        Op::Vision(v) => lower::sample::lower(&mut cx, v),
        Op::Nn(NnOp::Einsum(e)) => lower::einsum::lower(&mut cx, e),
        Op::Nn(_) | Op::Fused(FusedOp::Layer(_)) => return lower_blas(&mut cx, options),
        _ => Err("no CUDA kernel for this op yet".into()),
    };
    r.map_err(unsupported)
}

/// MatMul, Gemm and fused layers with those cores.
fn lower_blas(cx: &mut lower::Cx, options: &Options) -> Result<Vec<Kernel>> {
    let (plan, step) = (cx.plan, cx.step);
    let unsupported = |reason: String| lower::unsupported(step, reason);
    let input = |i: usize| -> Result<SlotId> {
        step.inputs.get(i).copied().flatten().ok_or_else(|| unsupported(format!("input {i} is missing")))
    };
    let single_output = || -> Result<SlotId> {
        match step.outputs.as_slice() {
            [y] => Ok(*y),
            _ => Err(unsupported(format!("{} outputs (one expected)", step.outputs.len()))),
        }
    };
    match &step.op {
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
            let Some(epi) = Epilogue::of(&l.epilogue) else {
                // Any other epilogue: evaluated after the product, in place on y.
                let mut inputs = vec![y];
                for i in 1..l.epilogue.arity().max(1) {
                    inputs.push(input(l.core_inputs + i - 1)?);
                }
                kernels.extend(
                    lower::fused::expr(cx, &l.epilogue, &inputs, y)
                        .map_err(|r| unsupported(format!("epilogue {}: {r}", l.epilogue.describe())))?,
                );
                return Ok(kernels);
            };
            if let Some(i) = epi.add {
                let r = input(l.core_inputs + i - 1)?;
                let (sr, n) = (plan.slot(r), plan.slot(y).shape.last().copied().unwrap_or(1));
                let row = sr.dtype == plan.slot(y).dtype && sr.len() == n && (n == 1 || sr.shape.last() == Some(&n));
                match kernels.as_mut_slice() {
                    [Kernel::Matmul { shape, bias: bias @ None, .. }] if row => {
                        shape.bias = true;
                        *bias = Some(r);
                    }
                    _ => kernels.push(
                        lower::elementwise::binary_code_kernel(cx, BinaryCode::Add, y, r, y).map_err(unsupported)?,
                    ),
                }
            }
            if epi.relu {
                match kernels.as_mut_slice() {
                    [Kernel::Matmul { shape, .. }] => shape.relu = true,
                    _ => {
                        let (dtype, n) = (plan.slot(y).dtype, plan.slot(y).len());
                        kernels.push(Kernel::Unary { code: UnaryCode::Relu, p: [0.0; 2], dtype, x: y, y, n });
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

fn blas_type(dtype: DType) -> std::result::Result<BlasType, String> {
    match dtype {
        DType::F32 => Ok(BlasType::F32),
        DType::F16 => Ok(BlasType::F16),
        DType::BF16 => Ok(BlasType::BF16),
        d => Err(format!("dtype {d} (f32, f16 and bf16 only)")),
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
        // C broadcast into Y first, then Y = alpha·A·B + beta·Y (cuBLASLt allows C = D).
        let copy = lower::movement::expand_spec(&sc.shape, &sy.shape)?;
        shape.beta = g.beta;
        return Ok(vec![
            Kernel::Copy { dtype: sy.dtype, src: c, dst: y, copy },
            Kernel::Matmul { shape, a, b, c: Some(y), bias: None, y },
        ]);
    }
    if sc.len() == n && (n == 1 || sc.shape.last() == Some(&n)) {
        // One value per output column: cuBLASLt's bias epilogue.
        shape.bias = true;
        return Ok(vec![Kernel::Matmul { shape, a, b, c: None, bias: Some(c), y }]);
    }
    // Any other broadcast: the product, then C added in place.
    let (dtype, ys) = (sy.dtype, sy.shape.clone());
    Strides::broadcast(&ys, &sc.shape, &ys).ok_or_else(|| format!("C of shape {:?} into {ys:?}", sc.shape))?;
    let add = Kernel::Binary { code: BinaryCode::Add, dtype, a: y, b: c, y };
    Ok(vec![Kernel::Matmul { shape, a, b, c: None, bias: None, y }, add])
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
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) plan: ExecutionPlan,
    pub(crate) memory: DeviceMemory,
    pub(crate) launches: Vec<Launch>,
    pub(crate) graph: Option<CapturedGraph>,
    pub(crate) options: Options,
    // Kept alive for the launches that use them.
    _blas: Option<Arc<Blas>>,
    pub(crate) kernels: Option<Arc<Kernels>>,
    pub(crate) tactics: Vec<Tactic>,
    pub(crate) store: Arc<WeightStore>,
    /// Staging buffers and events of the asynchronous phases (`io.rs`).
    pub(crate) io: crate::io::IoState,
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

/// Per launch (flat index): the candidate chosen and its measured time.
type Tuned = Vec<(Option<usize>, Option<f32>)>;

impl Executor {
    /// Plans `graph` (all shapes known), lowers every step, allocates and uploads (with
    /// weights of its own: see [`Executor::with_store`] to share them).
    pub fn new(dev: &Device, graph: &Graph, options: Options) -> Result<Executor> {
        Executor::with_store(dev, graph, options, &WeightStore::new())
    }

    /// [`Executor::new`], its constants placed through `store`: executors built through
    /// one store share one device copy of equal constants (see `crate::weights`).
    pub fn with_store(dev: &Device, graph: &Graph, options: Options, store: &Arc<WeightStore>) -> Result<Executor> {
        let mut plan = ExecutionPlan::new(graph)?;
        let (lowered, temps) = lower_with_temps(&plan, &options)?;
        let temp_bytes = temps.iter().map(|t| t.view.offset + t.bytes).max().unwrap_or(0);
        plan.slots.extend(temps);
        let launch_count = lowered.iter().map(|(_, ks)| ks.len()).sum();
        check_forced_kernels(&plan, &lowered, &options)?;
        let ctx = dev.ctx.clone();
        // The legacy default stream cannot be captured: the executor has its own.
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("creating a stream", e))?;
        let mut memory = place_memory(&ctx, &stream, &plan, graph, store)?;

        // Products and convolutions first: the workspace is the most any chosen
        // algorithm needs.
        let limit = options.workspace_limit.unwrap_or_else(|| Blas::default_workspace_limit(dev.compute_capability));
        let mut tuned: Tuned = vec![(None, None); launch_count];
        let (blas, matmuls, dnn, convs, conv_ws) = {
            let mut tuner = Tuner::new(dev, &stream, &options, limit)?;
            let (blas, matmuls) = plan_matmuls(&plan, &lowered, &memory, &mut tuner, &mut tuned)?;
            let (dnn, convs, conv_ws) = plan_convs(&plan, &lowered, &memory, &mut tuner, &mut tuned)?;
            (blas, matmuls, dnn, convs, conv_ws)
        };
        let workspace =
            matmuls.iter().flatten().map(|m| m.workspace_bytes()).max().unwrap_or(0).max(temp_bytes).max(conv_ws);
        memory.workspace = DeviceBuffer::alloc(&ctx, workspace, "the workspace")?;

        // The launchers enqueue on the executor's stream, through its own device handle.
        let exec_dev = Arc::new(Device {
            ctx: ctx.clone(),
            stream: stream.clone(),
            name: dev.name.clone(),
            compute_capability: dev.compute_capability,
            total_memory: dev.total_memory,
            driver_version: dev.driver_version,
        });
        let kernels = load_kernels(&exec_dev, &lowered, &options)?;
        let parts = LaunchParts { plan: &plan, memory: &memory, dnn: dnn.as_ref(), kernels: kernels.as_ref() };
        let (launches, tactics) = parts.build(&exec_dev, lowered, matmuls, convs, &tuned)?;
        let graph = if options.use_cuda_graph { Some(CapturedGraph::capture(&stream, &launches)?) } else { None };
        Ok(Executor {
            ctx,
            stream,
            plan,
            memory,
            launches,
            graph,
            options,
            _blas: blas,
            kernels,
            tactics,
            store: store.clone(),
            io: crate::io::IoState::default(),
        })
    }

    pub fn plan(&self) -> &ExecutionPlan {
        &self.plan
    }

    pub fn memory(&self) -> &DeviceMemory {
        &self.memory
    }

    /// The store holding this executor's constants.
    pub fn weight_store(&self) -> &Arc<WeightStore> {
        &self.store
    }

    /// The launches, in order (one step may have several, an alias step none).
    pub fn launches(&self) -> &[Launch] {
        &self.launches
    }

    pub fn uses_cuda_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// What every launch runs, in launch order (see [`Tactic`]); the `choice`s are what
    /// `Options::tactics` takes to reproduce this executor.
    pub fn tactics(&self) -> Vec<Tactic> {
        self.tactics.clone()
    }

    /// The images (cubin and PTX) of exactly the kernel modules this executor loaded,
    /// sorted by name: what a plan file stores for `Options::images`.
    pub fn module_images(&self) -> Result<Vec<ModuleImage>> {
        Ok(self.kernels.as_ref().map(|k| k.images()).unwrap_or_default())
    }

    /// How many kernel modules went through NVRTC (its disk cache included) for this
    /// executor: 0 when they came from `Options::images`.
    pub fn compiled_modules(&self) -> usize {
        self.kernels.as_ref().map_or(0, |k| k.compiled_modules())
    }

    /// The modules loaded from PTX through the driver's JIT (images built for another
    /// architecture, with `Options::allow_ptx_fallback`).
    pub fn ptx_jit_modules(&self) -> Vec<String> {
        self.kernels.as_ref().map(|k| k.ptx_jit_modules()).unwrap_or_default()
    }

    /// Runs the graph on `inputs` (in the graph's input order; dtypes and shapes must
    /// be exactly those planned) and returns its outputs.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.copy_inputs(inputs)?;
        self.enqueue_launches(self.options.check_each_launch)?;
        self.stream.synchronize().map_err(|e| CudaError::driver("running the graph", e))?;
        self.copy_outputs()
    }

    /// Enqueues one inference: the CUDA graph's replay, or every launch in order (when
    /// `check`, synchronising after each to name a failing node).
    pub(crate) fn enqueue_launches(&self, check: bool) -> Result<()> {
        // The executor may have moved to another thread since it was built.
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        match &self.graph {
            Some(g) => g.replay(),
            None => {
                for l in &self.launches {
                    l.enqueue(&self.stream)?;
                    if check {
                        self.stream.synchronize().map_err(|e| l.error(e.to_string()))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Like `run` without a CUDA graph, timing every launch with CUDA events: the
    /// outputs and each launch's time, in order.
    pub fn run_timed(&mut self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Vec<LaunchTime>)> {
        self.copy_inputs(inputs)?;
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
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

    /// Checks `inputs` against the plan: their count, each one's dtype and shape, and the
    /// values of inputs bound as shape tensors.
    pub(crate) fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(CudaError::Graph(format!(
                "the graph takes {} inputs, got {}",
                self.plan.inputs.len(),
                inputs.len()
            )));
        }
        for ((&id, t), bound) in self.plan.inputs.iter().zip(inputs).zip(&self.plan.bound_inputs) {
            let slot = self.plan.slot(id);
            if t.dtype() != slot.dtype || t.shape() != slot.shape.as_slice() {
                return Err(CudaError::Input {
                    name: slot.name.clone(),
                    msg: format!("expected {}{:?}, got {}{:?}", slot.dtype, slot.shape, t.dtype(), t.shape()),
                });
            }
            if let Some(b) = bound
                && b.bytes() != t.bytes()
            {
                return Err(CudaError::Input {
                    name: slot.name.clone(),
                    msg: format!(
                        "is a shape tensor bound to {:?} when the executor was built; got {:?} (build again for it)",
                        b.to_f64_vec().unwrap_or_default(),
                        t.to_f64_vec().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    fn copy_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        self.check_inputs(inputs)?;
        for (&id, t) in self.plan.inputs.iter().zip(inputs) {
            let slot = self.plan.slot(id);
            self.memory.buffer(slot.view.buffer).upload(&self.stream, slot.view.offset, t.bytes())?;
        }
        Ok(())
    }

    fn copy_outputs(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for &id in &self.plan.outputs {
            let slot = self.plan.slot(id);
            let mut host = AlignedBytes::new(slot.bytes);
            let addr = self.memory.ptr(slot.view)?;
            download(&self.ctx, &self.stream, addr, host.as_mut(), &slot.name)?;
            out.push(host_tensor(slot, host)?);
        }
        Ok(out)
    }
}

/// Copies `out.len()` bytes at device address `addr` into `out` and waits (`what` names
/// the value in errors).
fn download(ctx: &CudaContext, stream: &CudaStream, addr: u64, out: &mut [u8], what: &str) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
    // SAFETY: `addr` is a slot of the executor's buffers holding `out.len()` bytes (the
    // slot's size); we wait for the copy before `out` can be used or dropped.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(out, addr, stream.cu_stream()) }
        .and_then(|()| stream.synchronize())
        .map_err(|e| CudaError::driver(format!("copying output '{what}' to the host"), e))
}

/// An output slot's bytes as a tensor.
pub(crate) fn host_tensor(slot: &Slot, host: AlignedBytes) -> Result<Tensor> {
    Tensor::from_bytes(slot.dtype, slot.shape.clone(), Bytes::from_owner(host))
        .map_err(|e| CudaError::Graph(e.to_string()))
}

/// Checks `Options::tactics` against the launches: one entry per launch, and no choice
/// forced on a launch without candidates (one of Kiln's kernels). The products' and
/// convolutions' choices are checked against their candidates when planned.
fn check_forced_kernels(plan: &ExecutionPlan, lowered: &Lowering, options: &Options) -> Result<()> {
    let Some(tactics) = options.tactics.as_deref() else { return Ok(()) };
    let kernels = lowered.iter().flat_map(|(i, ks)| ks.iter().map(move |k| (*i, k)));
    check_tactic_count(Some(tactics), kernels.clone().count())?;
    for (li, (i, k)) in kernels.enumerate() {
        if !matches!(k, Kernel::Matmul { .. } | Kernel::Conv { .. }) {
            forced_choice(Some(tactics), li, &plan.steps[i].node, 0)?;
        }
    }
    Ok(())
}

/// The executor's buffers, its constants placed through `store`.
fn place_memory(
    ctx: &Arc<CudaContext>,
    stream: &CudaStream,
    plan: &ExecutionPlan,
    graph: &Graph,
    store: &WeightStore,
) -> Result<DeviceMemory> {
    let placed = store.place(ctx, stream, plan, graph)?;
    Ok(DeviceMemory {
        arena: DeviceBuffer::alloc(ctx, plan.report.arena_bytes, "the activation arena")?,
        weights: placed.pack,
        workspace: DeviceBuffer::alloc(ctx, 0, "the workspace")?,
        weight_places: placed.places,
        large_weights: placed.large,
    })
}

fn node_error(step: &Step) -> impl Fn(CudaError) -> CudaError + '_ {
    move |e| match e {
        // Already names the node and what to do.
        e @ CudaError::PlanMismatch(_) => e,
        e => CudaError::NodeLaunch { node: step.node.clone(), op: step.op.name().into(), msg: e.to_string() },
    }
}

type MatmulPlans = (Option<Arc<Blas>>, Vec<Option<Arc<MatmulPlan>>>);

/// A cuBLASLt plan per launch that is a product (`None` for the others), each's
/// algorithm chosen by `tuner`.
fn plan_matmuls(
    plan: &ExecutionPlan,
    lowered: &Lowering,
    memory: &DeviceMemory,
    tuner: &mut Tuner,
    tuned: &mut Tuned,
) -> Result<MatmulPlans> {
    let needs_blas = lowered.iter().flat_map(|(_, ks)| ks).any(|k| matches!(k, Kernel::Matmul { .. }));
    let Some(blas) = (if needs_blas { Some(Blas::new(&tuner.ctx())?) } else { None }) else {
        return Ok((None, lowered.iter().flat_map(|(_, ks)| ks).map(|_| None).collect()));
    };
    let ptr = |s: SlotId| memory.ptr(plan.slot(s).view);
    let mut matmuls = Vec::new();
    for (li, (i, k)) in lowered.iter().flat_map(|(i, ks)| ks.iter().map(move |k| (i, k))).enumerate() {
        let Kernel::Matmul { shape, a, b, c, bias, y } = k else {
            matmuls.push(None);
            continue;
        };
        let ops = Operands {
            a: ptr(*a)?,
            b: ptr(*b)?,
            c: c.map(ptr).transpose()?,
            d: ptr(*y)?,
            bias: bias.map(ptr).transpose()?,
        };
        let step = &plan.steps[*i];
        let mut p =
            MatmulPlan::new(&blas, shape, ops, tuner.limit(), tuner.max_blas_algos()).map_err(node_error(step))?;
        let (choice, time) = tuner.matmul(&mut p, li, &step.node).map_err(node_error(step))?;
        tuned[li] = (Some(choice), time);
        matmuls.push(Some(Arc::new(p)));
    }
    Ok((Some(blas), matmuls))
}

type ConvPlans = (Option<Arc<crate::dnn::Dnn>>, Vec<Option<Arc<crate::dnn::ConvPlan>>>, usize);

/// A cuDNN plan per launch that is a convolution (`None` for the others), each's
/// algorithm chosen by `tuner`, and the workspace they need (each convolution's follows
/// its step's temporaries).
fn plan_convs(
    plan: &ExecutionPlan,
    lowered: &Lowering,
    memory: &DeviceMemory,
    tuner: &mut Tuner,
    tuned: &mut Tuned,
) -> Result<ConvPlans> {
    let needs_dnn = lowered.iter().flat_map(|(_, ks)| ks).any(|k| matches!(k, Kernel::Conv { .. }));
    let Some(dnn) = (if needs_dnn { Some(crate::dnn::Dnn::new(&tuner.ctx())?) } else { None }) else {
        return Ok((None, lowered.iter().flat_map(|(_, ks)| ks).map(|_| None).collect(), 0));
    };
    let (mut convs, mut conv_ws) = (Vec::new(), 0usize);
    for (li, (i, k)) in lowered.iter().flat_map(|(i, ks)| ks.iter().map(move |k| (i, k))).enumerate() {
        let Kernel::Conv { dtype, geom, x, w, bias, y, ws_offset } = k else {
            convs.push(None);
            continue;
        };
        let step = &plan.steps[*i];
        let opts = crate::dnn::ConvOptions { allow_tf32: tuner.allow_tf32(), ..Default::default() };
        let mut p = dnn.plan_conv(geom, *dtype, opts).map_err(node_error(step))?;
        let ops = if tuner.autotunes() { conv_operands(plan, memory, *x, *w, *bias, *y)? } else { None };
        let (choice, time) = tuner.conv(&dnn, &mut p, ops.as_ref(), li, &step.node).map_err(node_error(step))?;
        tuned[li] = (Some(choice), time);
        conv_ws = conv_ws.max(ws_offset + p.workspace_bytes());
        convs.push(Some(Arc::new(p)));
    }
    Ok((Some(dnn), convs, conv_ws))
}

/// A convolution's operands for timing it, `None` when one is a temporary in the
/// workspace (a pre-padded input), which is not allocated while algorithms are chosen.
fn conv_operands(
    plan: &ExecutionPlan,
    memory: &DeviceMemory,
    x: SlotId,
    w: SlotId,
    bias: Option<SlotId>,
    y: SlotId,
) -> Result<Option<ConvOperands>> {
    let ids = [Some(x), Some(w), bias, Some(y)];
    if ids.iter().flatten().any(|&s| plan.slot(s).view.buffer == BufferKind::Workspace) {
        return Ok(None);
    }
    let place = |s: SlotId| memory.ptr(plan.slot(s).view).map(|a| (a, plan.slot(s).bytes));
    Ok(Some(ConvOperands { x: place(x)?, w: place(w)?, bias: bias.map(place).transpose()?, y: place(y)? }))
}

/// The kernel modules the launches use, compiled (or taken from `Options::images`) and
/// loaded now: nothing of the sort may happen during a capture. (A kernel without a
/// known module: every module.) `None` when only libraries are launched.
fn load_kernels(dev: &Device, lowered: &Lowering, options: &Options) -> Result<Option<Arc<Kernels>>> {
    let kinds: Vec<&Kernel> = lowered.iter().flat_map(|(_, ks)| ks).collect();
    if !kinds.iter().any(|k| !matches!(k, Kernel::Matmul { .. } | Kernel::Conv { .. })) {
        return Ok(None);
    }
    let k = match &options.images {
        Some(images) => Kernels::with_images(dev, images.clone(), options.allow_ptx_fallback),
        None => Kernels::new(dev)?,
    };
    match kinds.iter().map(|k| kernel_source(k)).collect::<Option<Vec<_>>>() {
        Some(sources) => {
            for src in sources.into_iter().flatten() {
                k.module(src)?;
            }
        }
        None => k.load_all()?,
    }
    Ok(Some(Arc::new(k)))
}

/// What the launches are made from.
struct LaunchParts<'a> {
    plan: &'a ExecutionPlan,
    memory: &'a DeviceMemory,
    dnn: Option<&'a Arc<crate::dnn::Dnn>>,
    kernels: Option<&'a Arc<Kernels>>,
}

impl LaunchParts<'_> {
    /// Every kernel as a launch, with its tactic.
    fn build(
        &self,
        dev: &Arc<Device>,
        lowered: Lowering,
        matmuls: Vec<Option<Arc<MatmulPlan>>>,
        convs: Vec<Option<Arc<crate::dnn::ConvPlan>>>,
        tuned: &Tuned,
    ) -> Result<(Vec<Launch>, Vec<Tactic>)> {
        // Every slot's address, bytes and shape, shared by the launches.
        let bufs: Arc<Vec<Resolved>> = Arc::new(
            self.plan
                .slots
                .iter()
                .map(|s| {
                    let addr = self.memory.ptr(s.view)?;
                    Ok(Resolved { addr, bytes: s.bytes, dtype: s.dtype, shape: s.shape.clone() })
                })
                .collect::<Result<_>>()?,
        );
        let (mut launches, mut tactics) = (Vec::new(), Vec::new());
        let (mut matmuls, mut convs) = (matmuls.into_iter(), convs.into_iter());
        for (i, step_kernels) in lowered {
            let step = &self.plan.steps[i];
            for k in step_kernels {
                let (mm, cv) = (matmuls.next().flatten(), convs.next().flatten());
                let (choice, time_ms) = tuned.get(launches.len()).copied().unwrap_or((None, None));
                let name = tactic_name(&k, mm.as_deref(), cv.as_deref());
                let run = self.launch_fn(dev, k, mm, cv, &bufs)?;
                let (node, op) = (step.node.clone(), step.op.name().to_string());
                tactics.push(Tactic {
                    launch: launches.len(),
                    node: node.clone(),
                    op: op.clone(),
                    name,
                    choice,
                    time_ms,
                });
                launches.push(Launch { node, op, run });
            }
        }
        Ok((launches, tactics))
    }

    fn launch_fn(
        &self,
        dev: &Arc<Device>,
        k: Kernel,
        mm: Option<Arc<MatmulPlan>>,
        cv: Option<Arc<crate::dnn::ConvPlan>>,
        bufs: &Arc<Vec<Resolved>>,
    ) -> Result<LaunchFn> {
        let memory = self.memory;
        Ok(match k {
            Kernel::Conv { x, w, bias, y, ws_offset, .. } => {
                let cv = cv.ok_or_else(|| CudaError::Graph("a convolution without a cuDNN plan".into()))?;
                let dnn = self.dnn.cloned().ok_or_else(|| CudaError::Graph("cuDNN not loaded".into()))?;
                let bufs = bufs.clone();
                let ws = memory.workspace.ptr() + ws_offset as u64;
                let ws_bytes = memory.workspace.bytes().saturating_sub(ws_offset);
                Box::new(move |s: &CudaStream| {
                    // SAFETY: every slot and the workspace live as long as the
                    // executor, which owns this closure.
                    let b = |id: SlotId| unsafe { Buf::from_raw(bufs[id].addr, bufs[id].bytes) };
                    let wsb = unsafe { Buf::from_raw(ws, ws_bytes) };
                    dnn.run_conv(s, &cv, b(x), b(w), bias.map(b), b(y), wsb)
                })
            }
            Kernel::Matmul { .. } => {
                let mm = mm.ok_or_else(|| CudaError::Graph("a product without a cuBLASLt plan".into()))?;
                let (ws, ws_bytes) = (memory.workspace.ptr(), memory.workspace.bytes());
                // SAFETY: the plan's operands and the workspace live as long as the
                // executor, which owns this closure.
                Box::new(move |s: &CudaStream| unsafe { mm.run(s, ws, ws_bytes) })
            }
            k => {
                let (dev, bufs) = (dev.clone(), bufs.clone());
                let kernels = self.kernels.cloned().ok_or_else(|| CudaError::Graph("kernels not loaded".into()))?;
                Box::new(move |_: &CudaStream| run_kernel(&Launcher::new(&dev, &kernels), &k, &bufs))
            }
        })
    }
}

/// A launch's readable tactic name.
fn tactic_name(k: &Kernel, mm: Option<&MatmulPlan>, cv: Option<&crate::dnn::ConvPlan>) -> String {
    match (k, mm, cv) {
        (Kernel::Matmul { .. }, Some(m), _) => format!("cublasLt algo {} (of {})", m.chosen(), m.algos().len()),
        (Kernel::Conv { .. }, _, Some(c)) => {
            let algo = c.algos().get(c.chosen()).map_or("?".to_string(), |a| conv_algo_name(a.id));
            format!("cudnn {algo} ({} of {})", c.chosen(), c.algos().len())
        }
        (Kernel::Call(c), ..) => format!("kiln {} / {}.cu", c.function, c.module),
        (Kernel::Family(f), ..) => format!("kiln {} / {}.cu", f.name, f.src),
        (k, ..) => {
            let module = match kernel_source(k) {
                Some(Some(src)) => format!("{}.cu", src.name),
                _ => "kernels".to_string(),
            };
            format!("kiln {} / {module}", variant_path(&format!("{k:?}")))
        }
    }
}

/// The enum variants that start a `Debug` string: `Nn(Pool { .. })` → `Nn Pool`.
fn variant_path(debug: &str) -> String {
    let head = debug.split([' ', '{', ',', ')']).next().unwrap_or(debug);
    let mut parts: Vec<&str> = head.split('(').filter(|p| !p.is_empty()).collect();
    parts.dedup();
    parts.join(" ")
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Nothing may still be reading the buffers when they are freed.
        let _ = self.stream.synchronize();
    }
}

/// Host bytes aligned for any element type (so output tensors view without copying).
pub(crate) struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    pub(crate) fn new(len: usize) -> AlignedBytes {
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

/// A slot as the launches see it.
struct Resolved {
    addr: u64,
    bytes: usize,
    dtype: DType,
    shape: Vec<usize>,
}

/// The kernel source a kernel's launcher uses: `Some(None)` for none (cuBLASLt), `None`
/// where not known here.
fn kernel_source(k: &Kernel) -> Option<Option<crate::kernels::Source>> {
    use crate::kernels::{ELEMENTWISE, MISC, MOVEMENT, NORM, REDUCE, TOPK};
    Some(Some(match k {
        Kernel::Unary { .. }
        | Kernel::Binary { .. }
        | Kernel::Compare { .. }
        | Kernel::Where { .. }
        | Kernel::Cast { .. }
        | Kernel::CastSat { .. }
        | Kernel::PowAny { .. }
        | Kernel::Classify { .. }
        | Kernel::Range { .. }
        | Kernel::Eye { .. }
        | Kernel::Dropout { .. } => ELEMENTWISE,
        Kernel::Copy { .. } | Kernel::Fill { .. } | Kernel::Gather { .. } | Kernel::Pad { .. } => MOVEMENT,
        Kernel::Reduce { .. } | Kernel::ArgReduce { .. } | Kernel::Softmax { .. } => REDUCE,
        Kernel::LayerNorm { .. } | Kernel::RmsNorm { .. } => NORM,
        Kernel::TopK { .. } => TOPK,
        Kernel::Trilu { .. } | Kernel::ReverseSequence { .. } | Kernel::Cumulate { .. } | Kernel::Hardmax { .. } => {
            MISC
        }
        Kernel::Nn(nn) => match **nn {
            crate::lower::convpool::NnKernel::Pool { .. } | crate::lower::convpool::NnKernel::GlobalPool { .. } => {
                crate::kernels::POOL
            }
            _ => crate::kernels::CONVPOOL,
        },
        Kernel::Call(c) => return named_source(c.module),
        Kernel::Family(f) => return named_source(f.src),
        // Libraries' launches: no module of Kiln's.
        Kernel::Matmul { .. } | Kernel::Conv { .. } => return Some(None),
        #[allow(unreachable_patterns)]
        _ => return None,
    }))
}

/// The module named `name` (`None`: unknown, so every module is loaded).
fn named_source(name: &str) -> Option<Option<crate::kernels::Source>> {
    crate::kernels::ALL.iter().find(|s| s.name == name).map(|s| Some(*s))
}

/// Enqueues one (non-cuBLASLt) kernel through the launchers.
fn run_kernel(l: &Launcher, k: &Kernel, s: &[Resolved]) -> Result<()> {
    // SAFETY: every address is a slot of the executor's arena, weights or workspace,
    // which live as long as the executor that owns the launches.
    let buf = |id: SlotId| unsafe { Buf::from_raw(s[id].addr, s[id].bytes) };
    let sh = |id: SlotId| s[id].shape.as_slice();
    match k {
        Kernel::Unary { code, p, dtype, x, y, n } => l.unary(*code, *p, *dtype, &buf(*x), &buf(*y), *n),
        Kernel::Binary { code, dtype, a, b, y } => {
            l.binary(*code, *dtype, (&buf(*a), sh(*a)), (&buf(*b), sh(*b)), &buf(*y), sh(*y))
        }
        Kernel::Compare { code, dtype, a, b, y } => {
            l.compare(*code, *dtype, (&buf(*a), sh(*a)), (&buf(*b), sh(*b)), &buf(*y), sh(*y))
        }
        Kernel::Where { dtype, cond, x, y, out } => {
            l.where_(*dtype, (&buf(*cond), sh(*cond)), (&buf(*x), sh(*x)), (&buf(*y), sh(*y)), &buf(*out), sh(*out))
        }
        Kernel::Cast { from, to, x, y, n } => l.cast(*from, *to, &buf(*x), &buf(*y), *n),
        Kernel::Copy { dtype, src, dst, copy } => {
            let sl = Layout { offset: copy.src_offset, strides: copy.src_strides.clone() };
            let dl = Layout { offset: copy.dst_offset, strides: copy.dst_strides.clone() };
            l.copy_strided(*dtype, &buf(*src), &sl, &buf(*dst), &dl, &copy.dims)
        }
        Kernel::Fill { dtype, y, value } => {
            // A constant Pad of an empty 1-D tensor: every element is the constant (as
            // 1-D, so that a scalar has an axis to pad).
            let n = sh(*y).iter().product::<usize>();
            l.pad(*dtype, PadMode::Constant, (&buf(*y), &[0]), &[(0, n as i64)], *value, &buf(*y))
        }
        Kernel::Gather { dtype, data, axis, indices, y } => l.gather(
            *dtype,
            (&buf(*data), sh(*data)),
            *axis,
            s[*indices].dtype,
            (&buf(*indices), sh(*indices)),
            &buf(*y),
            None,
        ),
        Kernel::Pad { dtype, mode, x, pads, value, y } => {
            l.pad(*dtype, *mode, (&buf(*x), sh(*x)), pads, *value, &buf(*y))
        }
        Kernel::Reduce { kind, dtype, x, axes, y } => l.reduce(*kind, *dtype, (&buf(*x), sh(*x)), axes, &buf(*y)),
        Kernel::TopK { largest, dtype, x, axis, k, values, indices } => {
            l.topk(*largest, *dtype, &buf(*x), sh(*x), *axis, *k, &buf(*values), &buf(*indices))
        }
        Kernel::ArgReduce { max, last, dtype, x, axis, y } => {
            l.arg_reduce(*max, *last, *dtype, (&buf(*x), sh(*x)), *axis, &buf(*y))
        }
        Kernel::Softmax { log, dtype, x, axis, coerce_2d, y } => {
            l.softmax(*log, *dtype, (&buf(*x), sh(*x)), *axis, *coerce_2d, &buf(*y))
        }
        Kernel::LayerNorm { dtype, x, axis, scale, bias, eps, y, stats } => {
            let (bb, sb) = (bias.map(buf), stats.map(|(m, r)| (buf(m), buf(r))));
            l.layer_norm(
                *dtype,
                (&buf(*x), sh(*x)),
                *axis,
                (&buf(*scale), sh(*scale)),
                bb.as_ref().zip(*bias).map(|(b, id)| (b, sh(id))),
                *eps,
                &buf(*y),
                sb.as_ref().map(|(m, r)| (m, r)),
            )
        }
        Kernel::RmsNorm { dtype, x, axis, scale, eps, y } => {
            l.rms_norm(*dtype, (&buf(*x), sh(*x)), *axis, (&buf(*scale), sh(*scale)), *eps, &buf(*y))
        }
        Kernel::Nn(k) => k.run(l, &buf, &sh),
        Kernel::Family(call) => l.family(call, &buf),
        Kernel::CastSat { from, to, saturate, x, y, n } => l.cast_sat(*from, *to, *saturate, &buf(*x), &buf(*y), *n),
        Kernel::PowAny { base, exp, a, b, y } => {
            l.pow_any(*base, *exp, (&buf(*a), sh(*a)), (&buf(*b), sh(*b)), &buf(*y), sh(*y))
        }
        Kernel::Classify { dtype, inf, x, y, n } => l.classify(*dtype, *inf, &buf(*x), &buf(*y), *n),
        Kernel::Range { dtype, start, delta, y } => {
            l.range(*dtype, &buf(*start), &buf(*delta), &buf(*y), sh(*y).iter().product())
        }
        Kernel::Eye { dtype, k, y } => {
            let (rows, cols) = match sh(*y) {
                [r, c] => (*r, *c),
                s => return Err(CudaError::invalid("EyeLike", format!("output shape {s:?} (2-D expected)"))),
            };
            l.eye(*dtype, *k, &buf(*y), rows, cols)
        }
        Kernel::Trilu { dtype, upper, k, k_input, x, y } => {
            let kb = k_input.map(buf);
            l.trilu(*dtype, *upper, *k, kb.as_ref(), (&buf(*x), sh(*x)), &buf(*y))
        }
        Kernel::ReverseSequence { dtype, x, lens, batch_axis, time_axis, y } => {
            l.reverse_sequence(*dtype, (&buf(*x), sh(*x)), &buf(*lens), *batch_axis, *time_axis, &buf(*y))
        }
        Kernel::Cumulate { dtype, prod, exclusive, reverse, x, axis, axis_input, y } => {
            let ab = axis_input.map(|a| (buf(a), s[a].dtype));
            let ab = ab.as_ref().map(|(b, t)| (b, *t));
            l.cumulate(*dtype, *prod, *exclusive, *reverse, (&buf(*x), sh(*x)), *axis, ab, &buf(*y))
        }
        Kernel::Dropout { dtype, x, y, mask, ratio, training, seed } => {
            let n = sh(*y).iter().product();
            let (mb, rb) = (mask.map(|m| (buf(m), s[m].dtype)), ratio.map(|r| (buf(r), s[r].dtype)));
            l.dropout(
                *dtype,
                &buf(*x),
                &buf(*y),
                mb.as_ref().map(|(b, t)| (b, *t)),
                n,
                rb.as_ref().map(|(b, t)| (b, *t)),
                Some(&buf(*training)),
                *seed,
            )
        }
        Kernel::Hardmax { dtype, x, axis, coerce_2d, y } => {
            l.hardmax(*dtype, (&buf(*x), sh(*x)), *axis, *coerce_2d, &buf(*y))
        }
        Kernel::Call(c) => l.call(c, &buf),
        Kernel::Matmul { .. } => Err(CudaError::Graph("a product outside cuBLASLt".into())),
        Kernel::Conv { .. } => Err(CudaError::Graph("a convolution outside cuDNN".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tactic_names_of_kiln_kernels_say_what_and_where() {
        assert_eq!(variant_path("Nn(Pool { dtype: F32 })"), "Nn Pool");
        assert_eq!(variant_path("Unary { code: Relu }"), "Unary");
        assert_eq!(variant_path("Call(Call { module: \"index\" })"), "Call");
        let k = Kernel::Unary { code: UnaryCode::Relu, p: [0.0; 2], dtype: DType::F32, x: 0, y: 1, n: 4 };
        assert_eq!(tactic_name(&k, None, None), "kiln Unary / elementwise.cu");
        let fill = Kernel::Fill { dtype: DType::F32, y: 0, value: 0.0 };
        assert_eq!(tactic_name(&fill, None, None), "kiln Fill / movement.cu");
    }
}
