//! The conv/pool family: Conv and ConvTranspose through cuDNN (an input padded first
//! where cuDNN's symmetric pads cannot express the op's; a transposed one computed
//! unpadded and cropped), kiln-opt's fused layers with a Conv core (the epilogue
//! evaluated in place afterwards), the pools (Max with Indices, Average, Lp, global),
//! MaxUnpool, Col2Im, BatchNormalization (inference and training), Instance/Group
//! normalisation, LRN, MeanVarianceNormalization (composed of reductions and binary
//! ops), DepthToSpace and SpaceToDepth (strided copies).

use kiln_ir::DType;
use kiln_ir::ops::FusedLayer;
use kiln_ir::ops::movement::{DepthToSpaceMode, PadMode};
use kiln_ir::ops::nn::{AxisGeometry, NnOp, PoolKind, unpool_size};
use kiln_ir::ops::quant::QuantOp;
use kiln_ir::ops::reduce::{BatchNorm, GroupAffine, ReduceKind, ReduceOp};

use super::{Cx, Lowered, contiguous, is_float, is_storage};
use crate::Result;
use crate::dnn::ConvGeometry;
use crate::executor::{CopySpec, Kernel};
use crate::kernels::{BinaryCode, UnaryCode};
use crate::launch::convpool::{Col2ImDesc, ConvIntDesc};
use crate::launch::pool::pool_geometry;
use crate::launch::{Buf, Launcher};
use crate::plan::SlotId;

/// `[N, C, spatial size]` of a rank ≥ 2 shape.
type Ncs = (usize, usize, usize);

/// QLinearConv's x_scale, (w_scale, its length), y_scale, y_zero_point.
pub type RequantSlots = (SlotId, (SlotId, usize), SlotId, Option<SlotId>);

/// A kernel of `convpool.cu` or `pool.cu`, its operands slots.
#[derive(Clone, Debug, PartialEq)]
pub enum NnKernel {
    Pool {
        dtype: DType,
        kind: PoolKind,
        x: SlotId,
        axes: Vec<AxisGeometry>,
        y: SlotId,
        indices: Option<SlotId>,
    },
    GlobalPool {
        dtype: DType,
        kind: PoolKind,
        x: SlotId,
        y: SlotId,
    },
    ChannelAffine {
        dtype: DType,
        x: SlotId,
        y: SlotId,
        params: [SlotId; 4],
        ncs: Ncs,
        per_activation: bool,
        eps: f32,
    },
    ChannelMoments {
        dtype: DType,
        x: SlotId,
        ncs: Ncs,
        mean: SlotId,
        var: SlotId,
    },
    RunningStat {
        dtype: DType,
        old: SlotId,
        cur: SlotId,
        out: SlotId,
        n: usize,
        momentum: f32,
    },
    GroupNorm {
        dtype: DType,
        x: SlotId,
        y: SlotId,
        scale: SlotId,
        bias: SlotId,
        ncs: Ncs,
        groups: usize,
        per_channel: bool,
        eps: f32,
    },
    Lrn {
        dtype: DType,
        x: SlotId,
        y: SlotId,
        ncs: Ncs,
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    MaxUnpool {
        dtype: DType,
        x: SlotId,
        indices: SlotId,
        y: SlotId,
        n: usize,
        inner: Vec<usize>,
        outer: Vec<usize>,
    },
    Col2Im {
        dtype: DType,
        x: SlotId,
        y: SlotId,
        planes: usize,
        desc: Col2ImDesc,
    },
    /// ConvInteger (`rq` None) or QLinearConv (`rq`: x_scale, w_scale and its length,
    /// y_scale, y_zero_point).
    ConvInt {
        dtypes: (DType, DType, DType),
        x: SlotId,
        w: SlotId,
        xz: Option<SlotId>,
        wz: Option<(SlotId, usize)>,
        bias: Option<SlotId>,
        y: SlotId,
        rq: Option<RequantSlots>,
        desc: ConvIntDesc,
    },
}

impl NnKernel {
    /// Enqueues the kernel; `buf` and `shape` resolve slots.
    pub(crate) fn run<'a, 'b>(
        &self,
        l: &Launcher,
        buf: &dyn Fn(SlotId) -> Buf<'a>,
        shape: &dyn Fn(SlotId) -> &'b [usize],
    ) -> Result<()> {
        match self {
            NnKernel::Pool { dtype, kind, x, axes, y, indices } => {
                let ib = indices.map(buf);
                l.pool(*dtype, *kind, (&buf(*x), shape(*x)), axes, &buf(*y), ib.as_ref())
            }
            NnKernel::GlobalPool { dtype, kind, x, y } => l.global_pool(*dtype, *kind, (&buf(*x), shape(*x)), &buf(*y)),
            NnKernel::ChannelAffine { dtype, x, y, params, ncs, per_activation, eps } => {
                let p = params.map(buf);
                l.channel_affine(*dtype, &buf(*x), &buf(*y), [&p[0], &p[1], &p[2], &p[3]], *ncs, *per_activation, *eps)
            }
            NnKernel::ChannelMoments { dtype, x, ncs, mean, var } => {
                l.channel_moments(*dtype, &buf(*x), *ncs, &buf(*mean), &buf(*var))
            }
            NnKernel::RunningStat { dtype, old, cur, out, n, momentum } => {
                l.running_stat(*dtype, &buf(*old), &buf(*cur), &buf(*out), *n, *momentum)
            }
            NnKernel::GroupNorm { dtype, x, y, scale, bias, ncs, groups, per_channel, eps } => {
                l.group_norm(*dtype, &buf(*x), &buf(*y), &buf(*scale), &buf(*bias), *ncs, *groups, *per_channel, *eps)
            }
            NnKernel::Lrn { dtype, x, y, ncs, size, alpha, beta, bias } => {
                l.lrn(*dtype, &buf(*x), &buf(*y), *ncs, *size, *alpha, *beta, *bias)
            }
            NnKernel::MaxUnpool { dtype, x, indices, y, n, inner, outer } => {
                l.max_unpool(*dtype, &buf(*x), &buf(*indices), &buf(*y), *n, inner, outer)
            }
            NnKernel::Col2Im { dtype, x, y, planes, desc } => l.col2im(*dtype, &buf(*x), &buf(*y), *planes, desc),
            NnKernel::ConvInt { dtypes, x, w, xz, wz, bias, y, rq, desc } => {
                let (xzb, bb) = (xz.map(buf), bias.map(buf));
                let wzb = wz.map(|(s, n)| (buf(s), n));
                let rqb = rq.map(|(xs, (ws, n), ys, yz)| (buf(xs), (buf(ws), n), buf(ys), yz.map(buf)));
                l.conv_int(
                    *dtypes,
                    &buf(*x),
                    &buf(*w),
                    xzb.as_ref(),
                    wzb.as_ref().map(|(b, n)| (b, *n)),
                    bb.as_ref(),
                    &buf(*y),
                    rqb.as_ref().map(|(xs, (ws, n), ys, yz)| (xs, (ws, *n), ys, yz.as_ref())),
                    desc,
                )
            }
        }
    }
}

fn nn(k: NnKernel) -> Kernel {
    Kernel::Nn(Box::new(k))
}

fn ncs(shape: &[usize]) -> std::result::Result<Ncs, String> {
    match shape {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(format!("input of rank {} (N and C needed)", shape.len())),
    }
}

fn float_dtype(cx: &Cx, x: SlotId) -> std::result::Result<DType, String> {
    let d = cx.dtype(x);
    if is_float(d) { Ok(d) } else { Err(format!("dtype {d} (floats only)")) }
}

/// Slot `s` as f32 (a Cast into a temporary when it is not).
fn as_f32(cx: &mut Cx, s: SlotId, ks: &mut Vec<Kernel>) -> std::result::Result<SlotId, String> {
    let d = cx.dtype(s);
    if d == DType::F32 {
        return Ok(s);
    }
    if !is_float(d) {
        return Err(format!("a parameter of dtype {d}"));
    }
    let shape = cx.shape(s);
    let t = cx.temp(DType::F32, &shape);
    ks.push(Kernel::Cast { from: d, to: DType::F32, x: s, y: t, n: cx.len(s) });
    Ok(t)
}

/// Conv, ConvTranspose, pools, MaxUnpool, Col2Im.
pub(crate) fn lower_nn(cx: &mut Cx, op: &NnOp) -> Lowered {
    match op {
        NnOp::Conv(_) | NnOp::ConvTranspose(_) => {
            let (x, w, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            conv(cx, op, x, w, cx.opt_input(2), y)
        }
        NnOp::Pool(p) => {
            let x = cx.input(0)?;
            let y = cx.output(0)?;
            let indices = cx.step.outputs.get(1).copied();
            let dtype = cx.dtype(x);
            let int8 = matches!(dtype, DType::U8 | DType::I8) && matches!(p.kind, PoolKind::Max { .. });
            if !is_float(dtype) && !int8 {
                return Err(format!("dtype {dtype}"));
            }
            if indices.is_some_and(|i| cx.dtype(i) != DType::I64) {
                return Err("Indices of another dtype than int64".into());
            }
            let axes = pool_geometry(p, &cx.shape(x)).map_err(|e| e.to_string())?;
            if axes.len() > 3 {
                return Err(format!("{} spatial axes (1 to 3)", axes.len()));
            }
            Ok(vec![nn(NnKernel::Pool { dtype, kind: p.kind, x, axes, y, indices })])
        }
        NnOp::GlobalPool(kind) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let s = cx.shape(x);
            if s.len() < 3 || s[2..].contains(&0) {
                return Err(format!("input {s:?}"));
            }
            Ok(vec![nn(NnKernel::GlobalPool { dtype, kind: *kind, x, y })])
        }
        NnOp::MaxUnpool(w) => {
            let (x, idx, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let dtype = cx.dtype(x);
            if !is_storage(dtype) || cx.dtype(idx) != DType::I64 {
                return Err(format!("dtype {dtype} with indices {}", cx.dtype(idx)));
            }
            let xs = cx.shape(x);
            if xs.len() < 3 || cx.shape(idx) != xs {
                return Err(format!("X {xs:?} and I {:?}", cx.shape(idx)));
            }
            let d = xs.len() - 2;
            let kernel = w.kernel_shape.as_deref().ok_or("kernel_shape is required")?;
            if kernel.len() != d {
                return Err("kernel_shape of another rank".into());
            }
            let mut inner = xs[..2].to_vec();
            for i in 0..d {
                inner.push(unpool_size(w, i, d, xs[2 + i], kernel[i], "MaxUnpool").map_err(|e| e.to_string())?);
            }
            let outer = cx.shape(y);
            if outer.len() != inner.len() || outer.iter().zip(&inner).any(|(o, i)| o < i) {
                return Err(format!("output {outer:?} smaller than {inner:?}"));
            }
            let n = cx.len(x);
            Ok(vec![
                Kernel::Fill { dtype, y, value: 0.0 },
                nn(NnKernel::MaxUnpool { dtype, x, indices: idx, y, n, inner, outer }),
            ])
        }
        NnOp::Col2Im(w) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let image: Vec<usize> = cx.const_ints(1, "image_shape")?.iter().map(|&v| v.max(0) as usize).collect();
            let block: Vec<usize> = cx.const_ints(2, "block_shape")?.iter().map(|&v| v.max(0) as usize).collect();
            let xs = cx.shape(x);
            let n = image.len();
            let taps: usize = block.iter().product();
            if xs.len() != 3 || block.len() != n || n == 0 || n > 3 || taps == 0 || !xs[1].is_multiple_of(taps) {
                return Err(format!("input {xs:?}, image {image:?}, block {block:?}"));
            }
            w.check(n, "Col2Im").map_err(|e| e.to_string())?;
            let mut d = Col2ImDesc {
                image: [1; 3],
                blocks: [1; 3],
                kernel: [1; 3],
                stride: [1; 3],
                dilation: [1; 3],
                pad_begin: [0; 3],
            };
            let skip = 3 - n;
            let mut nblocks = 1;
            for i in 0..n {
                let g = w.axis(i, n, image[i], block[i], false, "Col2Im").map_err(|e| e.to_string())?;
                let j = skip + i;
                d.image[j] = image[i] as i64;
                d.blocks[j] = g.output as i64;
                d.kernel[j] = block[i] as i64;
                d.stride[j] = g.stride as i64;
                d.dilation[j] = g.dilation as i64;
                d.pad_begin[j] = g.pad_begin as i64;
                nblocks *= g.output;
            }
            if nblocks != xs[2] {
                return Err(format!("{nblocks} blocks expected, input has {}", xs[2]));
            }
            let planes = xs[0] * (xs[1] / taps);
            Ok(vec![nn(NnKernel::Col2Im { dtype, x, y, planes, desc: d })])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

/// A Conv or ConvTranspose of `x` by `w` (+ `bias`) into `y` through cuDNN.
fn conv(cx: &mut Cx, op: &NnOp, x: SlotId, w: SlotId, bias: Option<SlotId>, y: SlotId) -> Lowered {
    let dtype = cx.dtype(x);
    if !is_float(dtype) {
        return Err(format!("dtype {dtype} (floats only)"));
    }
    if cx.dtype(w) != dtype || cx.dtype(y) != dtype || bias.is_some_and(|b| cx.dtype(b) != dtype) {
        return Err("operands of mixed dtypes".into());
    }
    let (xs, ws) = (cx.shape(x), cx.shape(w));
    let geom = match op {
        NnOp::Conv(c) => ConvGeometry::conv(c, &xs, &ws),
        NnOp::ConvTranspose(c) => ConvGeometry::conv_transpose(c, &xs, &ws),
        _ => return Err("not a convolution".into()),
    }
    .map_err(|e| e.to_string())?;
    if geom.y_shape() != cx.shape(y) {
        return Err(format!("output {:?}, planned {:?}", geom.y_shape(), cx.shape(y)));
    }
    if let Some(b) = bias.filter(|&b| cx.len(b) != geom.out_channels) {
        return Err(format!("bias of {} values for {} channels", cx.len(b), geom.out_channels));
    }
    if geom.cudnn_pads().is_ok() {
        return Ok(vec![Kernel::Conv { dtype, geom, x, w, bias, y, ws_offset: cx.temp_bytes }]);
    }
    if let Some((pads, g)) = geom.prepad() {
        // Pad the input into a temporary, then an unpadded convolution.
        g.cudnn_pads().map_err(|e| e.to_string())?;
        let t = cx.temp(dtype, &g.x_shape());
        let pads = pads.iter().map(|&(a, b)| (a as i64, b as i64)).collect();
        let pad = Kernel::Pad { dtype, mode: PadMode::Constant, x, pads, value: 0.0, y: t };
        return Ok(vec![pad, Kernel::Conv { dtype, geom: g, x: t, w, bias, y, ws_offset: cx.temp_bytes }]);
    }
    // ConvTranspose: the unpadded result into a temporary, then the window of it.
    let mut g = geom.clone();
    for a in &mut g.axes {
        a.input += a.pad_begin + a.pad_end;
        a.pad_begin = 0;
        a.pad_end = 0;
    }
    g.cudnn_pads().map_err(|e| e.to_string())?;
    let full = g.y_shape();
    let t = cx.temp(dtype, &full);
    let out = cx.shape(y);
    let fs = contiguous(&full);
    let src_offset = geom.axes.iter().enumerate().map(|(i, a)| a.pad_begin as isize * fs[2 + i]).sum();
    let copy =
        CopySpec { dims: out.clone(), src_offset, src_strides: fs, dst_offset: 0, dst_strides: contiguous(&out) };
    Ok(vec![
        Kernel::Conv { dtype, geom: g, x, w, bias, y: t, ws_offset: cx.temp_bytes },
        Kernel::Copy { dtype, src: t, dst: y, copy },
    ])
}

/// A fused layer whose core is a Conv/ConvTranspose: the convolution into the output,
/// then the epilogue in place.
pub(crate) fn lower_layer(cx: &mut Cx, l: &FusedLayer) -> Lowered {
    let kiln_ir::Op::Nn(core @ (NnOp::Conv(_) | NnOp::ConvTranspose(_))) = &*l.core else {
        return Err("a fused layer of another core".into());
    };
    if !(2..=3).contains(&l.core_inputs) {
        return Err(format!("{} core inputs", l.core_inputs));
    }
    let y = cx.single_output()?;
    let (x, w) = (cx.input(0)?, cx.input(1)?);
    let bias = if l.core_inputs == 3 { cx.opt_input(2) } else { None };
    let mut ks = conv(cx, core, x, w, bias, y)?;
    let mut inputs = vec![y];
    for i in 1..l.epilogue.arity().max(1) {
        inputs.push(cx.input(l.core_inputs + i - 1)?);
    }
    if !matches!(l.epilogue.nodes.as_slice(), [kiln_ir::ops::ExprNode::Input(0)]) {
        ks.extend(
            super::fused::expr(cx, &l.epilogue, &inputs, y)
                .map_err(|r| format!("epilogue {}: {r}", l.epilogue.describe()))?,
        );
    }
    Ok(ks)
}

/// BatchNormalization, InstanceNormalization, GroupNormalization, LRN,
/// MeanVarianceNormalization.
pub(crate) fn lower_norm(cx: &mut Cx, op: &ReduceOp) -> Lowered {
    match op {
        ReduceOp::BatchNorm(b) => batch_norm(cx, b),
        ReduceOp::InstanceNorm(i) => {
            let (x, scale, bias, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let ncs = ncs(&cx.shape(x))?;
            if cx.len(scale) != ncs.1 || cx.len(bias) != ncs.1 {
                return Err("scale or bias not per channel".into());
            }
            let mut ks = Vec::new();
            let (scale, bias) = (as_f32(cx, scale, &mut ks)?, as_f32(cx, bias, &mut ks)?);
            let k =
                NnKernel::GroupNorm { dtype, x, y, scale, bias, ncs, groups: ncs.1, per_channel: true, eps: i.epsilon };
            ks.push(nn(k));
            Ok(ks)
        }
        ReduceOp::GroupNorm(g) => {
            let (x, scale, bias, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let ncs = ncs(&cx.shape(x))?;
            let groups = usize::try_from(g.num_groups).map_err(|_| "negative num_groups")?;
            if groups == 0 || !ncs.1.is_multiple_of(groups) {
                return Err(format!("{} channels in {groups} groups", ncs.1));
            }
            let per_channel = g.affine == GroupAffine::PerChannel;
            let plen = if per_channel { ncs.1 } else { groups };
            if cx.len(scale) != plen || cx.len(bias) != plen {
                return Err("scale or bias of another length".into());
            }
            let mut ks = Vec::new();
            let (scale, bias) = (as_f32(cx, scale, &mut ks)?, as_f32(cx, bias, &mut ks)?);
            ks.push(nn(NnKernel::GroupNorm { dtype, x, y, scale, bias, ncs, groups, per_channel, eps: g.epsilon }));
            Ok(ks)
        }
        ReduceOp::Lrn(l) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let s = cx.shape(x);
            if s.len() < 3 {
                return Err("input of rank < 3".into());
            }
            let size = usize::try_from(l.size).ok().filter(|&n| n > 0).ok_or("size must be positive")?;
            let ncs = ncs(&s)?;
            Ok(vec![nn(NnKernel::Lrn { dtype, x, y, ncs, size, alpha: l.alpha, beta: l.beta, bias: l.bias })])
        }
        ReduceOp::MeanVarianceNorm(m) => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let dtype = float_dtype(cx, x)?;
            let shape = cx.shape(x);
            let mut axes: Vec<usize> =
                m.axes.iter().map(|&a| super::axis(a, shape.len())).collect::<std::result::Result<_, _>>()?;
            axes.sort_unstable();
            axes.dedup();
            let kept: Vec<usize> =
                shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
            // mean, E[x²], std = sqrt(E[x²] - mean²) + 1e-9, y = (x - mean) / std.
            let mean = cx.temp(dtype, &kept);
            let sq = cx.temp(dtype, &shape);
            let m2 = cx.temp(dtype, &kept);
            let msq = cx.temp(dtype, &kept);
            let tiny = cx.temp(dtype, &[]);
            let kn = cx.len(mean);
            let bin = |code, a, b, y| Kernel::Binary { code, dtype, a, b, y };
            Ok(vec![
                Kernel::Reduce { kind: ReduceKind::Mean, dtype, x, axes: axes.clone(), y: mean },
                bin(BinaryCode::Mul, x, x, sq),
                Kernel::Reduce { kind: ReduceKind::Mean, dtype, x: sq, axes, y: m2 },
                bin(BinaryCode::Mul, mean, mean, msq),
                bin(BinaryCode::Sub, m2, msq, m2),
                Kernel::Unary { code: UnaryCode::Sqrt, p: [0.0; 2], dtype, x: m2, y: m2, n: kn },
                Kernel::Fill { dtype, y: tiny, value: 1e-9 },
                bin(BinaryCode::Add, m2, tiny, m2),
                bin(BinaryCode::Sub, x, mean, y),
                bin(BinaryCode::Div, y, m2, y),
            ])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

fn batch_norm(cx: &mut Cx, b: &BatchNorm) -> Lowered {
    let x = cx.input(0)?;
    let y = cx.output(0)?;
    let dtype = float_dtype(cx, x)?;
    let ncs = ncs(&cx.shape(x))?;
    let (n, c, s) = ncs;
    let ins: Vec<SlotId> = (1..5).map(|i| cx.input(i)).collect::<std::result::Result<_, _>>()?;
    let plen = cx.len(ins[0]);
    let per_activation = plen != c;
    if ins.iter().any(|&p| cx.len(p) != plen) || (plen != c && plen != c * s) {
        return Err("parameters of mixed or unexpected lengths".into());
    }
    let mut ks = Vec::new();
    let scale = as_f32(cx, ins[0], &mut ks)?;
    let bias = as_f32(cx, ins[1], &mut ks)?;
    if !b.training {
        if cx.step.outputs.len() > 1 {
            return Err("running statistics outputs in inference mode".into());
        }
        let mean = as_f32(cx, ins[2], &mut ks)?;
        let var = as_f32(cx, ins[3], &mut ks)?;
        ks.push(nn(NnKernel::ChannelAffine {
            dtype,
            x,
            y,
            params: [scale, bias, mean, var],
            ncs,
            per_activation,
            eps: b.epsilon,
        }));
        return Ok(ks);
    }
    if per_activation || n * s == 0 {
        return Err("training mode with per-activation parameters or empty channels".into());
    }
    let (bm, bv) = (cx.temp(DType::F32, &[c]), cx.temp(DType::F32, &[c]));
    ks.push(nn(NnKernel::ChannelMoments { dtype, x, ncs, mean: bm, var: bv }));
    ks.push(nn(NnKernel::ChannelAffine {
        dtype,
        x,
        y,
        params: [scale, bias, bm, bv],
        ncs,
        per_activation: false,
        eps: b.epsilon,
    }));
    let outs = cx.step.outputs.clone();
    for (k, &o) in outs.iter().enumerate().skip(1) {
        let od = cx.dtype(o);
        if !is_float(od) || cx.len(o) != c {
            return Err(format!("output {k} of dtype {od}"));
        }
        match k {
            1 | 2 => {
                let old = ins[k + 1];
                if cx.dtype(old) != od {
                    return Err("running statistics of another dtype".into());
                }
                let cur = if k == 1 { bm } else { bv };
                ks.push(nn(NnKernel::RunningStat { dtype: od, old, cur, out: o, n: c, momentum: b.momentum }));
            }
            3 | 4 => {
                let cur = if k == 3 { bm } else { bv };
                ks.push(Kernel::Cast { from: DType::F32, to: od, x: cur, y: o, n: c });
            }
            _ => return Err(format!("{} outputs", outs.len())),
        }
    }
    Ok(ks)
}

/// DepthToSpace and SpaceToDepth as 6-D strided copies.
pub(crate) fn space(cx: &mut Cx, blocksize: usize, mode: Option<DepthToSpaceMode>) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.single_output()?);
    let dtype = cx.dtype(x);
    if !is_storage(dtype) {
        return Err(format!("dtype {dtype}"));
    }
    let [n, c, h, w] = cx.shape(x)[..] else { return Err("input of rank other than 4".into()) };
    let b = blocksize;
    let (view, perm): ([usize; 6], [usize; 6]) = match mode {
        Some(DepthToSpaceMode::Dcr) if b > 0 && c % (b * b) == 0 => ([n, b, b, c / (b * b), h, w], [0, 3, 4, 1, 5, 2]),
        Some(DepthToSpaceMode::Crd) if b > 0 && c % (b * b) == 0 => ([n, c / (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]),
        None if b > 0 && h % b == 0 && w % b == 0 => ([n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4]),
        _ => return Err(format!("blocksize {b} for input {:?}", cx.shape(x))),
    };
    let vs = contiguous(&view);
    let dims: Vec<usize> = perm.iter().map(|&p| view[p]).collect();
    let copy = CopySpec {
        src_offset: 0,
        src_strides: perm.iter().map(|&p| vs[p]).collect(),
        dst_offset: 0,
        dst_strides: contiguous(&dims),
        dims,
    };
    Ok(vec![Kernel::Copy { dtype, src: x, dst: y, copy }])
}

/// ConvInteger and QLinearConv: a direct integer convolution.
pub(crate) fn lower_quant(cx: &mut Cx, op: &QuantOp) -> Lowered {
    let (g, q) = match op {
        QuantOp::ConvInteger(g) => (g, false),
        QuantOp::QLinearConv(g) => (g, true),
        _ => return Err("no CUDA kernel for this op yet".into()),
    };
    let (xi, wi) = if q { (0, 3) } else { (0, 1) };
    let (x, w, y) = (cx.input(xi)?, cx.input(wi)?, cx.single_output()?);
    let (xd, wd, yd) = (cx.dtype(x), cx.dtype(w), cx.dtype(y));
    let int8 = |d: DType| matches!(d, DType::U8 | DType::I8);
    if !int8(xd) || !int8(wd) || (q && !int8(yd)) || (!q && yd != DType::I32) {
        return Err(format!("dtypes {xd} · {wd} → {yd}"));
    }
    let (xs, ws) = (cx.shape(x), cx.shape(w));
    if xs.len() < 3 || xs.len() > 5 || ws.len() != xs.len() {
        return Err(format!("X {xs:?} and W {ws:?}"));
    }
    let (c, m) = (xs[1], ws[0]);
    if g.group == 0 || ws[1] * g.group != c || !m.is_multiple_of(g.group) {
        return Err(format!("X {xs:?} and W {ws:?} for group {}", g.group));
    }
    let p = g.plan(&xs[2..], &ws[2..], "ConvInteger").map_err(|e| e.to_string())?;
    let mut ys = vec![xs[0], m];
    ys.extend(&p.out);
    if ys != cx.shape(y) {
        return Err(format!("output {:?}, planned {:?}", ys, cx.shape(y)));
    }
    let n = xs.len() - 2;
    let skip = 3 - n;
    let mut d = ConvIntDesc {
        batch: xs[0] as i64,
        c: c as i64,
        m: m as i64,
        group: g.group as i64,
        input: [1; 3],
        output: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        dilation: [1; 3],
        pad_begin: [0; 3],
    };
    for i in 0..n {
        let j = skip + i;
        d.input[j] = xs[2 + i] as i64;
        d.output[j] = p.out[i] as i64;
        d.kernel[j] = p.kernel[i] as i64;
        d.stride[j] = p.strides[i] as i64;
        d.dilation[j] = p.dilations[i] as i64;
        d.pad_begin[j] = p.pad_begin[i] as i64;
    }
    let zp = |cx: &Cx, i: usize, dt: DType, len: usize| -> std::result::Result<Option<(SlotId, usize)>, String> {
        match cx.opt_input(i) {
            None => Ok(None),
            Some(s) if cx.dtype(s) == dt && (cx.len(s) == 1 || cx.len(s) == len) => Ok(Some((s, cx.len(s)))),
            Some(s) => Err(format!("zero point {} of {} values", cx.dtype(s), cx.len(s))),
        }
    };
    let xz = zp(cx, 2, xd, 1)?.map(|(s, _)| s);
    let wz = zp(cx, if q { 5 } else { 3 }, wd, m)?;
    let (bias, rq) = if q {
        let f = |cx: &Cx, i: usize| -> std::result::Result<SlotId, String> {
            let s = cx.input(i)?;
            if cx.dtype(s) != DType::F32 {
                return Err(format!("scale of dtype {}", cx.dtype(s)));
            }
            Ok(s)
        };
        let (xsc, wsc, ysc) = (f(cx, 1)?, f(cx, 4)?, f(cx, 6)?);
        if cx.len(xsc) != 1 || cx.len(ysc) != 1 || (cx.len(wsc) != 1 && cx.len(wsc) != m) {
            return Err("scales of unexpected lengths".into());
        }
        let yz = zp(cx, 7, yd, 1)?.map(|(s, _)| s);
        let bias = cx.opt_input(8);
        if bias.is_some_and(|b| cx.dtype(b) != DType::I32 || cx.len(b) != m) {
            return Err("bias other than int32 per output channel".into());
        }
        (bias, Some((xsc, (wsc, cx.len(wsc)), ysc, yz)))
    } else {
        (None, None)
    };
    Ok(vec![nn(NnKernel::ConvInt { dtypes: (xd, wd, yd), x, w, xz, wz, bias, y, rq, desc: d })])
}
