//! Convolutions through cuDNN's legacy API, called through cudarc's `result`/`sys` layers.
//!
//! - [`ConvGeometry`]: a Conv or ConvTranspose resolved against its input and weight
//!   shapes, with kiln_ir's window arithmetic ([`Window::axis`](kiln_ir::ops::nn::Window::axis), [`ConvTranspose::axis`]),
//!   so output sizes agree with shape inference. Host only.
//! - [`Dnn`]: one cuDNN handle. [`Dnn::plan_conv`] builds the descriptors and asks the
//!   heuristic (`cudnnGetConvolution{Forward,BackwardData}Algorithm_v7`) for every
//!   algorithm with its workspace size, kept for auto-tuning; [`Dnn::run_conv`] runs the
//!   chosen one; [`Dnn::conv_forward`] does both with the first algorithm that fits the
//!   workspace given.
//!
//! Layout NCHW (and NCW, NCDHW: 1-D convolutions run as 2-D ones with a height of 1).
//! FP32 runs with `CUDNN_FMA_MATH` (true FP32: `CUDNN_DEFAULT_MATH` would let cuDNN pick
//! TF32 tensor cores on Ampere and later) unless TF32 is asked for; FP16 and BF16 use
//! tensor cores with FP32 accumulation (compute type FLOAT). Groups (depthwise
//! included) are cuDNN's group count; a bias is added afterwards with
//! `cudnnAddTensor`.
//!
//! cuDNN pads both ends of an axis alike. Kiln gives it each axis's begin pad on both
//! ends, which is exact whenever that yields the op's output size (the end pad then only
//! adds zeros no window reads, or windows cuDNN's floor drops anyway); other geometries
//! (SAME_UPPER with stride 2, say) are `Unsupported`, and [`ConvGeometry::prepad`] gives
//! the zero Pad to apply to the input first and the pad-free geometry that then remains.
//!
//! [`Dnn::conv_forward`] creates descriptors and queries the heuristic on every call;
//! an executor plans once ([`Dnn::plan_conv`], auto-tuning with [`ConvPlan::choose`])
//! and calls [`Dnn::run_conv`] per inference.
//! ConvTranspose is cuDNN's backward-data convolution, output_padding and output_shape
//! included under the same rule.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use cudarc::cudnn::result::{self, CudnnError};
use cudarc::cudnn::sys;
use cudarc::driver::{CudaContext, CudaStream};
use kiln_ir::DType;
use kiln_ir::ops::nn::{AxisGeometry, Conv, ConvTranspose};

use crate::libs::{self, Lib};
use crate::{Buf, CudaError, Result};

fn dnn_err(what: impl Into<String>) -> impl FnOnce(CudnnError) -> CudaError {
    let what = what.into();
    move |e| CudaError::Dnn { what, msg: e.to_string() }
}

/// Spatial axes cuDNN convolves (2-D and 3-D; 1-D runs as 2-D).
pub const MAX_SPATIAL: usize = 3;

/// A Conv or ConvTranspose resolved against its input and weight shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// ConvTranspose (cuDNN's backward data) rather than Conv.
    pub transposed: bool,
    pub batch: usize,
    /// Channels of the op's input X.
    pub in_channels: usize,
    /// Channels of the op's output Y.
    pub out_channels: usize,
    pub group: usize,
    /// One per spatial axis, as the *forward* convolution sees it: for ConvTranspose,
    /// `input` is the op's output size and `output` its input size (as
    /// [`ConvTranspose::axis`] returns them).
    pub axes: Vec<AxisGeometry>,
}

fn ir_err(op: &'static str) -> impl Fn(kiln_ir::IrError) -> CudaError {
    move |e| CudaError::invalid(op, e.to_string())
}

impl ConvGeometry {
    /// The geometry of Conv `c` on an input of shape `x` (`[N, C, spatial…]`) and
    /// weights of shape `w` (`[M, C/group, kernel…]`).
    pub fn conv(c: &Conv, x: &[usize], w: &[usize]) -> Result<ConvGeometry> {
        let op = "Conv";
        let n = check_ranks(op, x, w)?;
        c.window.check(n, op).map_err(ir_err(op))?;
        if c.group == 0 || !w[0].is_multiple_of(c.group) || x[1] != w[1] * c.group {
            return Err(CudaError::invalid(
                op,
                format!("X {x:?} and W {w:?} do not match group {} (X channels = W dim 1 × group)", c.group),
            ));
        }
        let kernel = c.window.kernel(Some(&w[2..])).unwrap_or(&w[2..]);
        if kernel != &w[2..] {
            return Err(CudaError::invalid(op, format!("kernel_shape {kernel:?} differs from W {w:?}")));
        }
        let axes = (0..n)
            .map(|i| c.window.axis(i, n, x[2 + i], w[2 + i], false, op).map_err(ir_err(op)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConvGeometry { transposed: false, batch: x[0], in_channels: x[1], out_channels: w[0], group: c.group, axes })
    }

    /// The geometry of ConvTranspose `c` on an input of shape `x` (`[N, C, spatial…]`)
    /// and weights of shape `w` (`[C, M/group, kernel…]`).
    pub fn conv_transpose(c: &ConvTranspose, x: &[usize], w: &[usize]) -> Result<ConvGeometry> {
        let op = "ConvTranspose";
        let n = check_ranks(op, x, w)?;
        c.window.check(n, op).map_err(ir_err(op))?;
        if c.group == 0 || x[1] != w[0] || !w[0].is_multiple_of(c.group) {
            return Err(CudaError::invalid(
                op,
                format!("X {x:?} and W {w:?} do not match group {} (X channels = W dim 0)", c.group),
            ));
        }
        let kernel = c.window.kernel(Some(&w[2..])).unwrap_or(&w[2..]);
        if kernel != &w[2..] {
            return Err(CudaError::invalid(op, format!("kernel_shape {kernel:?} differs from W {w:?}")));
        }
        let axes =
            (0..n).map(|i| c.axis(i, n, x[2 + i], w[2 + i], op).map_err(ir_err(op))).collect::<Result<Vec<_>>>()?;
        Ok(ConvGeometry {
            transposed: true,
            batch: x[0],
            in_channels: x[1],
            out_channels: w[1] * c.group,
            group: c.group,
            axes,
        })
    }

    fn op(&self) -> &'static str {
        if self.transposed { "ConvTranspose" } else { "Conv" }
    }

    /// The op's input X: `[N, C, spatial…]`.
    pub fn x_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.in_channels];
        s.extend(self.axes.iter().map(|a| if self.transposed { a.output } else { a.input }));
        s
    }

    /// The op's weights W: `[M, C/group, kernel…]` (Conv), `[C, M/group, kernel…]`
    /// (ConvTranspose).
    pub fn w_shape(&self) -> Vec<usize> {
        let g = self.group.max(1);
        let mut s = if self.transposed {
            vec![self.in_channels, self.out_channels / g]
        } else {
            vec![self.out_channels, self.in_channels / g]
        };
        s.extend(self.axes.iter().map(|a| a.kernel));
        s
    }

    /// The op's output Y: `[N, M, spatial…]`.
    pub fn y_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.out_channels];
        s.extend(self.axes.iter().map(|a| if self.transposed { a.input } else { a.output }));
        s
    }

    /// The pads cuDNN gets (one per axis, both ends alike): each axis's begin pad,
    /// checked to give exactly the op's output size. `Unsupported` where the end pad
    /// matters (see [`ConvGeometry::prepad`]).
    pub fn cudnn_pads(&self) -> Result<Vec<usize>> {
        let op = self.op();
        self.axes
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let p = a.pad_begin;
                let ok = (a.input + 2 * p)
                    .checked_sub(a.extent())
                    .is_some_and(|span| a.stride > 0 && span / a.stride + 1 == a.output);
                if ok {
                    Ok(p)
                } else {
                    Err(CudaError::unsupported(
                        op,
                        format!(
                            "axis {i}: pads ({}, {}) with stride {} are too asymmetric for cuDNN (pad the input first)",
                            a.pad_begin, a.pad_end, a.stride
                        ),
                    ))
                }
            })
            .collect()
    }

    /// For a Conv whose pads cuDNN cannot take: the `(begin, end)` zero padding to apply
    /// to each axis of X (N and C first, unpadded) and the geometry of the convolution of
    /// the padded input, which has no pads. `None` for ConvTranspose.
    pub fn prepad(&self) -> Option<(Vec<(usize, usize)>, ConvGeometry)> {
        if self.transposed {
            return None;
        }
        let mut pads = vec![(0, 0), (0, 0)];
        pads.extend(self.axes.iter().map(|a| (a.pad_begin, a.pad_end)));
        let mut g = self.clone();
        for a in &mut g.axes {
            a.input += a.pad_begin + a.pad_end;
            a.pad_begin = 0;
            a.pad_end = 0;
        }
        Some((pads, g))
    }
}

fn check_ranks(op: &'static str, x: &[usize], w: &[usize]) -> Result<usize> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(CudaError::invalid(op, format!("X {x:?} and W {w:?} must both have rank >= 3")));
    }
    let n = x.len() - 2;
    if n > MAX_SPATIAL {
        return Err(CudaError::unsupported(op, format!("{n} spatial axes (cuDNN takes 1 to {MAX_SPATIAL})")));
    }
    Ok(n)
}

/// Options of a convolution plan.
#[derive(Clone, Copy, Debug)]
pub struct ConvOptions {
    /// FP32 only: let cuDNN use TF32 tensor cores (about 10 mantissa bits).
    pub allow_tf32: bool,
    /// At most this many algorithms are kept.
    pub max_algos: usize,
}

impl Default for ConvOptions {
    fn default() -> ConvOptions {
        ConvOptions { allow_tf32: false, max_algos: 16 }
    }
}

/// A cuDNN algorithm: forward (Conv) or backward data (ConvTranspose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgoId {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
}

/// One algorithm the heuristic proposed.
#[derive(Clone, Copy, Debug)]
pub struct ConvAlgo {
    pub id: ConvAlgoId,
    pub workspace_bytes: usize,
    pub math: sys::cudnnMathType_t,
    pub deterministic: bool,
}

/// A cuDNN handle (one per executor; plans are run through it).
pub struct Dnn {
    handle: sys::cudnnHandle_t,
    ctx: Arc<CudaContext>,
    /// Serialises set-stream-then-call sequences on the handle.
    lock: Mutex<()>,
}

// SAFETY: the handle is only used under `lock` (or by `new`/`drop`, which own it).
unsafe impl Send for Dnn {}
unsafe impl Sync for Dnn {}

impl Drop for Dnn {
    fn drop(&mut self) {
        if !self.handle.is_null() && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: created in `new`, destroyed once here.
            let _ = unsafe { result::destroy_handle(self.handle) };
        }
    }
}

/// The cuDNN data type of `dtype`.
fn data_type(op: &str, dtype: DType) -> Result<sys::cudnnDataType_t> {
    match dtype {
        DType::F32 => Ok(sys::cudnnDataType_t::CUDNN_DATA_FLOAT),
        DType::F16 => Ok(sys::cudnnDataType_t::CUDNN_DATA_HALF),
        DType::BF16 => Ok(sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16),
        d => Err(CudaError::unsupported(op, format!("dtype {d} (cuDNN convolutions take f32, f16, bf16)"))),
    }
}

fn c_ints(op: &str, v: &[usize]) -> Result<Vec<c_int>> {
    v.iter()
        .map(|&d| c_int::try_from(d).map_err(|_| CudaError::unsupported(op, format!("size {d} beyond cuDNN's int"))))
        .collect()
}

/// Row-major strides of `dims`.
fn strides(dims: &[c_int]) -> Vec<c_int> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// A bound convolution: descriptors and the algorithms to choose from.
pub struct ConvPlan {
    geometry: ConvGeometry,
    dtype: DType,
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    bias: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    /// The math type FP32 runs with (FMA unless TF32 is allowed).
    f32_math: sys::cudnnMathType_t,
    algos: Vec<ConvAlgo>,
    chosen: usize,
}

// SAFETY: the descriptors are read by cuDNN only; `choose` (the one writer) needs `&mut`.
unsafe impl Send for ConvPlan {}
unsafe impl Sync for ConvPlan {}

impl std::fmt::Debug for ConvPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvPlan")
            .field("geometry", &self.geometry)
            .field("dtype", &self.dtype)
            .field("algos", &self.algos)
            .field("chosen", &self.chosen)
            .finish()
    }
}

impl Drop for ConvPlan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created in `plan_conv` (or is null) and is destroyed
        // once here.
        unsafe {
            for t in [self.x, self.y, self.bias] {
                if !t.is_null() {
                    let _ = result::destroy_tensor_descriptor(t);
                }
            }
            if !self.w.is_null() {
                let _ = result::destroy_filter_descriptor(self.w);
            }
            if !self.conv.is_null() {
                let _ = result::destroy_convolution_descriptor(self.conv);
            }
        }
    }
}

impl ConvPlan {
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The algorithms proposed, best first by the heuristic.
    pub fn algos(&self) -> &[ConvAlgo] {
        &self.algos
    }

    pub fn chosen(&self) -> usize {
        self.chosen
    }

    /// Workspace bytes the chosen algorithm needs.
    pub fn workspace_bytes(&self) -> usize {
        self.algos[self.chosen].workspace_bytes
    }

    /// Picks algorithm `i` of [`ConvPlan::algos`] (for auto-tuning).
    pub fn choose(&mut self, i: usize) -> Result<()> {
        let algo = *self.algos.get(i).ok_or_else(|| CudaError::Dnn {
            what: "choosing an algorithm".into(),
            msg: format!("no algorithm {i} of {}", self.algos.len()),
        })?;
        let math = if self.dtype == DType::F32 { self.f32_math } else { algo.math };
        // SAFETY: `conv` is live; the plan is borrowed mutably, so no call reads it now.
        unsafe { result::set_convolution_math_type(self.conv, math) }.map_err(dnn_err("setting the math type"))?;
        self.chosen = i;
        Ok(())
    }

    /// Picks the first algorithm (best by the heuristic) that needs at most
    /// `workspace_bytes` of workspace; returns its index.
    pub fn choose_fitting(&mut self, workspace_bytes: usize) -> Result<usize> {
        let i = self.algos.iter().position(|a| a.workspace_bytes <= workspace_bytes).ok_or_else(|| CudaError::Dnn {
            what: format!("{} {:?}", self.geometry.op(), self.geometry.x_shape()),
            msg: format!(
                "no algorithm fits in {workspace_bytes} bytes of workspace (the smallest needs {})",
                self.algos.iter().map(|a| a.workspace_bytes).min().unwrap_or(0)
            ),
        })?;
        self.choose(i)?;
        Ok(i)
    }
}

/// A 4-or-more-dimensional cuDNN tensor descriptor of a densely packed `dims`.
fn tensor_desc(dt: sys::cudnnDataType_t, dims: &[c_int]) -> Result<sys::cudnnTensorDescriptor_t> {
    let desc = result::create_tensor_descriptor().map_err(dnn_err("creating a tensor descriptor"))?;
    let st = strides(dims);
    // SAFETY: `desc` was just created; dims and strides hold `dims.len()` values.
    let set = unsafe { result::set_tensornd_descriptor(desc, dt, dims.len() as c_int, dims.as_ptr(), st.as_ptr()) };
    if let Err(e) = set {
        // SAFETY: created above, destroyed once.
        let _ = unsafe { result::destroy_tensor_descriptor(desc) };
        return Err(dnn_err(format!("describing a tensor of dims {dims:?}"))(e));
    }
    Ok(desc)
}

impl Dnn {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Arc<Dnn>> {
        libs::ensure(Lib::Cudnn)?;
        ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let handle = result::create_handle().map_err(dnn_err("creating a handle"))?;
        Ok(Arc::new(Dnn { handle, ctx: ctx.clone(), lock: Mutex::new(()) }))
    }

    /// cuDNN's version (e.g. 91000 for 9.10.0).
    pub fn version() -> Result<usize> {
        libs::ensure(Lib::Cudnn)?;
        Ok(result::get_version())
    }

    /// Builds the descriptors of `g` on `dtype` and asks for the algorithms, best first;
    /// the first is chosen.
    pub fn plan_conv(&self, g: &ConvGeometry, dtype: DType, opts: ConvOptions) -> Result<ConvPlan> {
        let op = g.op();
        let dt = data_type(op, dtype)?;
        if g.axes.is_empty() || g.axes.len() > MAX_SPATIAL {
            return Err(CudaError::unsupported(op, format!("{} spatial axes", g.axes.len())));
        }
        if g.group == 0 || !g.in_channels.is_multiple_of(g.group) || !g.out_channels.is_multiple_of(g.group) {
            return Err(CudaError::invalid(
                op,
                format!("channels {} → {} with group {}", g.in_channels, g.out_channels, g.group),
            ));
        }
        if g.x_shape().contains(&0) || g.y_shape().contains(&0) || g.w_shape().contains(&0) {
            return Err(CudaError::unsupported(op, "empty tensors"));
        }
        let pads = g.cudnn_pads()?;
        // 1-D runs as 2-D with a leading spatial axis of size 1.
        let lift = |v: Vec<usize>, one: usize| -> Vec<usize> {
            if g.axes.len() == 1 {
                let mut w = v;
                w.insert(w.len() - 1, one);
                w
            } else {
                v
            }
        };
        let x_dims = c_ints(op, &lift(g.x_shape(), 1))?;
        let y_dims = c_ints(op, &lift(g.y_shape(), 1))?;
        let w_dims = c_ints(op, &lift(g.w_shape(), 1))?;
        let spatial = |f: &dyn Fn(&AxisGeometry) -> usize, one: usize| -> Vec<usize> {
            let v: Vec<usize> = g.axes.iter().map(f).collect();
            if v.len() == 1 { vec![one, v[0]] } else { v }
        };
        let pads = c_ints(op, &if pads.len() == 1 { vec![0, pads[0]] } else { pads })?;
        let conv_strides = c_ints(op, &spatial(&|a| a.stride, 1))?;
        let dilations = c_ints(op, &spatial(&|a| a.dilation, 1))?;
        let mut bias_dims = vec![1 as c_int; y_dims.len()];
        bias_dims[1] = y_dims[1];
        let group = c_int::try_from(g.group).map_err(|_| CudaError::unsupported(op, "group beyond int"))?;

        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let mut plan = ConvPlan {
            geometry: g.clone(),
            dtype,
            x: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            bias: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            f32_math: if opts.allow_tf32 {
                sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
            } else {
                sys::cudnnMathType_t::CUDNN_FMA_MATH
            },
            algos: Vec::new(),
            chosen: 0,
        };
        plan.x = tensor_desc(dt, &x_dims)?;
        plan.y = tensor_desc(dt, &y_dims)?;
        plan.bias = tensor_desc(dt, &bias_dims)?;
        plan.w = result::create_filter_descriptor().map_err(dnn_err("creating a filter descriptor"))?;
        // SAFETY: `plan.w` was just created; `w_dims` holds its length in values.
        unsafe {
            result::set_filternd_descriptor(
                plan.w,
                dt,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                w_dims.len() as c_int,
                w_dims.as_ptr(),
            )
        }
        .map_err(dnn_err(format!("describing weights {w_dims:?}")))?;
        plan.conv = result::create_convolution_descriptor().map_err(dnn_err("creating a convolution descriptor"))?;
        // Accumulate in FP32 for every data type (FP16's "pseudo half" configuration).
        let compute = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let math = if dtype == DType::F32 { plan.f32_math } else { sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH };
        // SAFETY: `plan.conv` is live; pads, strides and dilations hold `pads.len()` values.
        unsafe {
            result::set_convolutionnd_descriptor(
                plan.conv,
                pads.len() as c_int,
                pads.as_ptr(),
                conv_strides.as_ptr(),
                dilations.as_ptr(),
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                compute,
            )
            .map_err(dnn_err(format!(
                "describing the convolution (pads {pads:?}, strides {conv_strides:?}, dilations {dilations:?})"
            )))?;
            result::set_convolution_group_count(plan.conv, group).map_err(dnn_err("setting the group count"))?;
            result::set_convolution_math_type(plan.conv, math).map_err(dnn_err("setting the math type"))?;
        }
        plan.algos = self.heuristics(&plan, opts.max_algos.max(1))?;
        if plan.algos.is_empty() {
            return Err(CudaError::Dnn {
                what: format!("{op} {:?} ({dtype})", g.x_shape()),
                msg: "cuDNN proposes no algorithm for this convolution".into(),
            });
        }
        plan.choose(0)?;
        Ok(plan)
    }

    fn heuristics(&self, plan: &ConvPlan, max_algos: usize) -> Result<Vec<ConvAlgo>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        const REQUESTED: usize = 16;
        let mut count: c_int = 0;
        let tensor_ops = |m: sys::cudnnMathType_t| {
            matches!(
                m,
                sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
                    | sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
            )
        };
        let f32_no_tf32 = plan.dtype == DType::F32 && plan.f32_math == sys::cudnnMathType_t::CUDNN_FMA_MATH;
        let keep = |status: sys::cudnnStatus_t, math: sys::cudnnMathType_t| {
            status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && !(f32_no_tf32 && tensor_ops(math))
        };
        let deterministic = |d: sys::cudnnDeterminism_t| d == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
        let mut algos: Vec<ConvAlgo> = if plan.geometry.transposed {
            // SAFETY: an all-zero perf result is a valid value of this plain C struct.
            let mut perf: Vec<sys::cudnnConvolutionBwdDataAlgoPerf_t> = vec![unsafe { std::mem::zeroed() }; REQUESTED];
            // SAFETY: handle and descriptors are live; `perf` holds REQUESTED entries.
            unsafe {
                result::get_convolution_backward_data_algorithm(
                    self.handle,
                    plan.w,
                    plan.x,
                    plan.conv,
                    plan.y,
                    REQUESTED as c_int,
                    &mut count,
                    perf.as_mut_ptr(),
                )
            }
            .map_err(dnn_err("asking for backward-data algorithms"))?;
            perf.into_iter()
                .take(count.max(0) as usize)
                .filter(|p| keep(p.status, p.mathType))
                .map(|p| ConvAlgo {
                    id: ConvAlgoId::BackwardData(p.algo),
                    workspace_bytes: p.memory,
                    math: p.mathType,
                    deterministic: deterministic(p.determinism),
                })
                .collect()
        } else {
            // SAFETY: as above.
            let mut perf: Vec<sys::cudnnConvolutionFwdAlgoPerf_t> = vec![unsafe { std::mem::zeroed() }; REQUESTED];
            // SAFETY: handle and descriptors are live; `perf` holds REQUESTED entries.
            unsafe {
                result::get_convolution_forward_algorithm(
                    self.handle,
                    plan.x,
                    plan.w,
                    plan.conv,
                    plan.y,
                    REQUESTED as c_int,
                    &mut count,
                    perf.as_mut_ptr(),
                )
            }
            .map_err(dnn_err("asking for forward algorithms"))?;
            perf.into_iter()
                .take(count.max(0) as usize)
                .filter(|p| keep(p.status, p.mathType))
                .map(|p| ConvAlgo {
                    id: ConvAlgoId::Forward(p.algo),
                    workspace_bytes: p.memory,
                    math: p.mathType,
                    deterministic: deterministic(p.determinism),
                })
                .collect()
        };
        // The heuristic may list an algorithm once per math type: keep the first.
        let mut seen = Vec::new();
        algos.retain(|a| {
            let new = !seen.contains(&a.id);
            seen.push(a.id);
            new
        });
        algos.truncate(max_algos);
        Ok(algos)
    }

    /// Enqueues `plan`'s convolution with its chosen algorithm on `stream`: `y = conv(x,
    /// w) (+ bias)`, with `bias` of `out_channels` elements. Every buffer is checked
    /// against the plan's shapes and `workspace` against the algorithm's need.
    #[allow(clippy::too_many_arguments)]
    pub fn run_conv(
        &self,
        stream: &CudaStream,
        plan: &ConvPlan,
        x: Buf,
        w: Buf,
        bias: Option<Buf>,
        y: Buf,
        workspace: Buf,
    ) -> Result<()> {
        let g = &plan.geometry;
        let op = g.op();
        let size = plan.dtype.size();
        let check = |what: &str, buf: &Buf, n: usize| -> Result<()> {
            let need = n * size;
            if need > buf.bytes() {
                return Err(CudaError::BufferTooSmall { op: op.into(), what: what.into(), need, have: buf.bytes() });
            }
            Ok(())
        };
        let elems = |s: Vec<usize>| s.iter().product::<usize>();
        check("input", &x, elems(g.x_shape()))?;
        check("weights", &w, elems(g.w_shape()))?;
        check("output", &y, elems(g.y_shape()))?;
        if let Some(b) = &bias {
            check("bias", b, g.out_channels)?;
        }
        let algo = plan.algos[plan.chosen];
        if workspace.bytes() < algo.workspace_bytes {
            return Err(CudaError::BufferTooSmall {
                op: op.into(),
                what: "workspace".into(),
                need: algo.workspace_bytes,
                have: workspace.bytes(),
            });
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let (one, zero) = (1f32, 0f32);
        let alpha = &one as *const f32 as *const c_void;
        let beta = &zero as *const f32 as *const c_void;
        let ws = if algo.workspace_bytes == 0 { std::ptr::null_mut() } else { workspace.addr() as *mut c_void };
        // SAFETY: handle and descriptors are live; every buffer holds the bytes its
        // descriptor covers (checked above) and outlives the launch (the `Buf`s borrow
        // their memory); alpha and beta are floats, as cuDNN reads them for these types.
        unsafe {
            result::set_stream(self.handle, stream.cu_stream() as sys::cudaStream_t)
                .map_err(dnn_err("setting the stream"))?;
            match algo.id {
                ConvAlgoId::Forward(a) => result::convolution_forward(
                    self.handle,
                    alpha,
                    plan.x,
                    x.addr() as *const c_void,
                    plan.w,
                    w.addr() as *const c_void,
                    plan.conv,
                    a,
                    ws,
                    workspace.bytes(),
                    beta,
                    plan.y,
                    y.addr() as *mut c_void,
                )
                .map_err(dnn_err(format!("cudnnConvolutionForward ({a:?})")))?,
                ConvAlgoId::BackwardData(a) => result::convolution_backward_data(
                    self.handle,
                    alpha,
                    plan.w,
                    w.addr() as *const c_void,
                    plan.x,
                    x.addr() as *const c_void,
                    plan.conv,
                    a,
                    ws,
                    workspace.bytes(),
                    beta,
                    plan.y,
                    y.addr() as *mut c_void,
                )
                .map_err(dnn_err(format!("cudnnConvolutionBackwardData ({a:?})")))?,
            }
            if let Some(b) = bias {
                sys::cudnnAddTensor(
                    self.handle,
                    alpha,
                    plan.bias,
                    b.addr() as *const c_void,
                    alpha,
                    plan.y,
                    y.addr() as *mut c_void,
                )
                .result()
                .map_err(dnn_err("adding the bias"))?;
            }
        }
        Ok(())
    }

    /// Plans and runs one convolution (Conv, or ConvTranspose for a transposed
    /// geometry) with the first algorithm that fits in `workspace`, without TF32.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_forward(
        &self,
        stream: &CudaStream,
        x: Buf,
        w: Buf,
        bias: Option<Buf>,
        y: Buf,
        geometry: &ConvGeometry,
        dtype: DType,
        workspace: Buf,
    ) -> Result<()> {
        let mut plan = self.plan_conv(geometry, dtype, ConvOptions::default())?;
        plan.choose_fitting(workspace.bytes())?;
        self.run_conv(stream, &plan, x, w, bias, y, workspace)?;
        // The descriptors must outlive the enqueued work only until cuDNN returns.
        drop(plan);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::ops::nn::{AutoPad, Window};

    fn conv(strides: &[usize], dilations: &[usize], pads: &[usize], group: usize) -> Conv {
        Conv {
            window: Window {
                kernel_shape: None,
                strides: Some(strides.to_vec()),
                dilations: Some(dilations.to_vec()),
                pads: Some(pads.to_vec()),
                auto_pad: AutoPad::NotSet,
            },
            group,
        }
    }

    #[test]
    fn resnet_3x3_keeps_the_size() {
        let g =
            ConvGeometry::conv(&conv(&[1, 1], &[1, 1], &[1, 1, 1, 1], 1), &[1, 64, 56, 56], &[64, 64, 3, 3]).unwrap();
        assert_eq!(g.y_shape(), vec![1, 64, 56, 56]);
        assert_eq!(g.w_shape(), vec![64, 64, 3, 3]);
        assert_eq!(g.x_shape(), vec![1, 64, 56, 56]);
        assert_eq!(g.cudnn_pads().unwrap(), vec![1, 1]);
    }

    #[test]
    fn strided_dilated_grouped() {
        let g = ConvGeometry::conv(&conv(&[2, 2], &[2, 2], &[2, 2, 2, 2], 4), &[2, 8, 15, 15], &[12, 2, 3, 3]).unwrap();
        // extent 5: (15 + 4 - 5) / 2 + 1 = 8
        assert_eq!(g.y_shape(), vec![2, 12, 8, 8]);
        assert_eq!(g.group, 4);
        assert_eq!(g.w_shape(), vec![12, 2, 3, 3]);
        // Depthwise.
        let g = ConvGeometry::conv(&conv(&[1, 1], &[1, 1], &[1, 1, 1, 1], 32), &[1, 32, 7, 7], &[32, 1, 3, 3]).unwrap();
        assert_eq!(g.y_shape(), vec![1, 32, 7, 7]);
        // Channels that do not match the group.
        assert!(ConvGeometry::conv(&conv(&[1, 1], &[1, 1], &[0; 4], 3), &[1, 8, 7, 7], &[6, 2, 3, 3]).is_err());
    }

    #[test]
    fn asymmetric_pads() {
        // SAME_UPPER, stride 2, kernel 3 on 56: pads (0, 1), 28 outputs; cuDNN with a
        // symmetric 0 gives 27: not supported, pre-padding is.
        let mut c = conv(&[2, 2], &[1, 1], &[0; 4], 1);
        c.window.pads = None;
        c.window.auto_pad = AutoPad::SameUpper;
        let g = ConvGeometry::conv(&c, &[1, 3, 56, 56], &[8, 3, 3, 3]).unwrap();
        assert_eq!(g.y_shape(), vec![1, 8, 28, 28]);
        assert!(matches!(g.cudnn_pads(), Err(CudaError::Unsupported { .. })));
        let (pads, p) = g.prepad().unwrap();
        assert_eq!(pads, vec![(0, 0), (0, 0), (0, 1), (0, 1)]);
        assert_eq!(p.x_shape(), vec![1, 3, 57, 57]);
        assert_eq!(p.y_shape(), vec![1, 8, 28, 28]);
        assert_eq!(p.cudnn_pads().unwrap(), vec![0, 0]);
        // pads (1, 0) with stride 2 on 8, kernel 3: the IR gives (8+1-3)/2+1 = 4 outputs,
        // cuDNN with 1 on both ends (8+2-3)/2+1 = 4 too: fine.
        let g = ConvGeometry::conv(&conv(&[2], &[1], &[1, 0], 1), &[1, 1, 8], &[1, 1, 3]).unwrap();
        assert_eq!(g.y_shape(), vec![1, 1, 4]);
        assert_eq!(g.cudnn_pads().unwrap(), vec![1]);
    }

    #[test]
    fn conv_transpose_geometry() {
        let ct = ConvTranspose {
            window: Window { strides: Some(vec![2, 2]), pads: Some(vec![1, 1, 1, 1]), ..Window::default() },
            group: 1,
            output_padding: Some(vec![1, 1]),
            output_shape: None,
        };
        let g = ConvGeometry::conv_transpose(&ct, &[1, 16, 7, 7], &[16, 8, 3, 3]).unwrap();
        // 2·6 + 1 + 3 - 2 = 14
        assert_eq!(g.y_shape(), vec![1, 8, 14, 14]);
        assert_eq!(g.x_shape(), vec![1, 16, 7, 7]);
        assert_eq!(g.w_shape(), vec![16, 8, 3, 3]);
        // Forward view: (14 + 2 - 3) / 2 + 1 = 7.
        assert_eq!(g.cudnn_pads().unwrap(), vec![1, 1]);
        assert!(g.prepad().is_none());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let c = conv(&[1], &[1], &[0, 0], 1);
        assert!(ConvGeometry::conv(&c, &[1, 4], &[4, 4]).is_err());
        assert!(ConvGeometry::conv(&c, &[1, 4, 2], &[4, 4, 3]).is_err());
        let c4 = conv(&[1; 4], &[1; 4], &[0; 8], 1);
        assert!(matches!(
            ConvGeometry::conv(&c4, &[1, 1, 2, 2, 2, 2], &[1, 1, 1, 1, 1, 1]),
            Err(CudaError::Unsupported { .. })
        ));
    }
}
