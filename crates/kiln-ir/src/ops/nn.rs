//! Neural-network compute ops: matrix products (MatMul, Gemm, Einsum), convolutions
//! (Conv, ConvTranspose, Col2Im) and pooling (Max/Average/Lp, their global forms, MaxUnpool).
//!
//! The sliding-window arithmetic (output sizes, auto_pad, ceil_mode) lives here, in
//! [`Window`], so that shape inference and the kernels cannot disagree.

use super::{OpFamily, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NnOp {
    MatMul,
    Gemm(Gemm),
    Einsum(Einsum),
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    Pool(Pool),
    GlobalPool(PoolKind),
    MaxUnpool(Window),
    Col2Im(Window),
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// How the padding of a sliding window is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AutoPad {
    /// Explicit `pads` (zero when absent).
    #[default]
    NotSet,
    /// Output size `ceil(in / stride)`; the odd pad goes at the end.
    SameUpper,
    /// Output size `ceil(in / stride)`; the odd pad goes at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

/// Sliding-window attributes shared by the convolutions and pools. `None` means
/// the ONNX default (ones for strides and dilations, zeros for pads; the kernel
/// shape of a convolution comes from its weights).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    /// `[begin_0, begin_1, …, end_0, end_1, …]`.
    pub pads: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
}

/// The resolved geometry of one spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AxisGeometry {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
}

impl AxisGeometry {
    /// Span of the dilated kernel.
    pub fn extent(&self) -> usize {
        self.dilation * (self.kernel.max(1) - 1) + 1
    }
}

impl Window {
    /// The kernel shape: the attribute, else `fallback` (a convolution's weight dims).
    pub fn kernel<'a>(&'a self, fallback: Option<&'a [usize]>) -> Option<&'a [usize]> {
        self.kernel_shape.as_deref().or(fallback)
    }

    fn nth(v: &Option<Vec<usize>>, i: usize, default: usize) -> usize {
        v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(default)
    }

    /// Checks the lengths of the attributes against `n` spatial axes.
    pub fn check(&self, n: usize, op: &str) -> Result<()> {
        let check = |name: &str, v: &Option<Vec<usize>>, len: usize| match v {
            Some(v) if v.len() != len => {
                Err(IrError::invalid(op, format!("{name} has {} values, expected {len} for {n} spatial axes", v.len())))
            }
            _ => Ok(()),
        };
        check("kernel_shape", &self.kernel_shape, n)?;
        check("strides", &self.strides, n)?;
        check("dilations", &self.dilations, n)?;
        check("pads", &self.pads, 2 * n)?;
        let zero = |v: &Option<Vec<usize>>| v.as_ref().is_some_and(|v| v.contains(&0));
        if zero(&self.strides) || zero(&self.dilations) {
            return Err(IrError::invalid(op, "strides and dilations must be positive"));
        }
        Ok(())
    }

    /// Geometry of spatial axis `i` of `n` for a forward window (Conv, pools):
    /// `input` size, `kernel` size, and pooling's `ceil_mode`.
    pub fn axis(
        &self,
        i: usize,
        n: usize,
        input: usize,
        kernel: usize,
        ceil_mode: bool,
        op: &str,
    ) -> Result<AxisGeometry> {
        let stride = Self::nth(&self.strides, i, 1);
        let dilation = Self::nth(&self.dilations, i, 1);
        let mut g = AxisGeometry { input, output: 0, kernel, stride, dilation, pad_begin: 0, pad_end: 0 };
        let extent = g.extent();
        match self.auto_pad {
            AutoPad::NotSet => {
                g.pad_begin = Self::nth(&self.pads, i, 0);
                g.pad_end = Self::nth(&self.pads, i + n, 0);
                let padded = input + g.pad_begin + g.pad_end;
                if padded < extent {
                    return Err(IrError::invalid(
                        op,
                        format!("axis {i}: padded input size {padded} is smaller than the kernel extent {extent}"),
                    ));
                }
                let span = padded - extent;
                g.output = if ceil_mode {
                    // Like ORT and PyTorch: the last window must start inside the input
                    // or its begin padding.
                    let out = span.div_ceil(stride) + 1;
                    if (out - 1) * stride >= input + g.pad_begin { out - 1 } else { out }
                } else {
                    span / stride + 1
                };
            }
            AutoPad::Valid => {
                if input < extent {
                    return Err(IrError::invalid(
                        op,
                        format!("axis {i}: input size {input} is smaller than the kernel extent {extent}"),
                    ));
                }
                let span = input - extent;
                g.output = if ceil_mode { span.div_ceil(stride) + 1 } else { span / stride + 1 };
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                g.output = input.div_ceil(stride);
                let total = ((g.output.max(1) - 1) * stride + extent).saturating_sub(input);
                let small = total / 2;
                (g.pad_begin, g.pad_end) =
                    if self.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
            }
        }
        Ok(g)
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvTranspose {
    pub window: Window,
    pub group: usize,
    pub output_padding: Option<Vec<usize>>,
    /// Spatial output shape (the trailing dims when the attribute gives N and C too).
    pub output_shape: Option<Vec<usize>>,
}

impl ConvTranspose {
    pub fn output_padding(&self, i: usize) -> usize {
        self.output_padding.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(0)
    }

    /// The requested output size of spatial axis `i` of `n`, if any.
    pub fn output_size(&self, i: usize, n: usize) -> Option<usize> {
        let s = self.output_shape.as_ref()?;
        s.get(i + s.len().checked_sub(n)?).copied()
    }

    /// Geometry of spatial axis `i` of `n` for ConvTranspose. The returned geometry
    /// describes the *forward* convolution that the transposed one is the adjoint of:
    /// its `input` is the ConvTranspose output, its `output` the ConvTranspose input.
    pub fn axis(&self, i: usize, n: usize, input: usize, kernel: usize, op: &str) -> Result<AxisGeometry> {
        let w = &self.window;
        let (output_padding, output_shape) = (self.output_padding(i), self.output_size(i, n));
        let stride = Window::nth(&w.strides, i, 1);
        let dilation = Window::nth(&w.dilations, i, 1);
        let mut g = AxisGeometry { input: 0, output: input, kernel, stride, dilation, pad_begin: 0, pad_end: 0 };
        let full = stride * input.saturating_sub(1) + output_padding + g.extent();
        let target = match (output_shape, w.auto_pad) {
            (Some(s), _) => Some(s),
            (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(input * stride),
            _ => None,
        };
        match target {
            Some(out) => {
                // A requested size beyond the full one (negative total padding) adds
                // zeros at the end, as ORT does; the begin pad never goes negative.
                let total = full as i64 - out as i64;
                let small = total.div_euclid(2);
                // The spec: SAME_UPPER puts the odd pad at the end, otherwise at the start.
                let begin = if w.auto_pad == AutoPad::SameUpper { small } else { total - small };
                g.pad_begin = begin.max(0) as usize;
                g.pad_end = (total - begin).max(0) as usize;
                g.input = out;
            }
            None => {
                if w.auto_pad == AutoPad::NotSet {
                    g.pad_begin = Window::nth(&w.pads, i, 0);
                    g.pad_end = Window::nth(&w.pads, i + n, 0);
                }
                g.input = full.checked_sub(g.pad_begin + g.pad_end).ok_or_else(|| {
                    IrError::invalid(op, format!("axis {i}: pads are larger than the full transposed size {full}"))
                })?;
            }
        }
        Ok(g)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PoolKind {
    /// `storage_order` 1 makes the Indices output column-major.
    Max {
        column_major_indices: bool,
    },
    Average {
        count_include_pad: bool,
    },
    Lp {
        p: f32,
    },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil_mode: bool,
}

/// One operand's subscripts in an einsum equation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Subscript {
    Letter(u8),
    Ellipsis,
}

/// A parsed einsum equation (output always explicit: implicit mode is resolved at parse).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Einsum {
    pub equation: String,
    pub inputs: Vec<Vec<Subscript>>,
    pub output: Vec<Subscript>,
}

impl Einsum {
    pub fn parse(equation: &str) -> Result<Einsum> {
        let err = |msg: String| IrError::invalid("Einsum", format!("equation '{equation}': {msg}"));
        let compact: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match compact.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (compact.as_str(), None),
        };
        let term = |s: &str| -> Result<Vec<Subscript>> {
            let mut out = Vec::new();
            let mut rest = s;
            while let Some(c) = rest.chars().next() {
                if let Some(r) = rest.strip_prefix("...") {
                    if out.contains(&Subscript::Ellipsis) {
                        return Err(err(format!("term '{s}' has two ellipses")));
                    }
                    out.push(Subscript::Ellipsis);
                    rest = r;
                } else if c.is_ascii_alphabetic() {
                    out.push(Subscript::Letter(c as u8));
                    rest = &rest[1..];
                } else {
                    return Err(err(format!("unexpected character '{c}'")));
                }
            }
            Ok(out)
        };
        let inputs = lhs.split(',').map(term).collect::<Result<Vec<_>>>()?;
        let output = match rhs {
            Some(r) => {
                let out = term(r)?;
                for (k, s) in out.iter().enumerate() {
                    if out[..k].contains(s) {
                        return Err(err("an output subscript is repeated".into()));
                    }
                    let known = inputs.iter().any(|t| t.contains(s));
                    if !known && *s != Subscript::Ellipsis {
                        return Err(err("an output subscript is in no input".into()));
                    }
                }
                out
            }
            None => {
                // Implicit mode: ellipsis dims first, then the letters that appear once, sorted.
                let mut out = Vec::new();
                if inputs.iter().any(|t| t.contains(&Subscript::Ellipsis)) {
                    out.push(Subscript::Ellipsis);
                }
                let mut letters: Vec<u8> = inputs
                    .iter()
                    .flatten()
                    .filter_map(|s| match s {
                        Subscript::Letter(c) => Some(*c),
                        Subscript::Ellipsis => None,
                    })
                    .collect();
                letters.sort_unstable();
                let once: Vec<u8> =
                    letters.iter().copied().filter(|c| letters.iter().filter(|d| *d == c).count() == 1).collect();
                out.extend(once.into_iter().map(Subscript::Letter));
                out
            }
        };
        Ok(Einsum { equation: equation.to_string(), inputs, output })
    }

    /// Each operand's dims as labels: letters as their byte, the ellipsis dims as
    /// labels 0.. (right-aligned, as numpy broadcasts them). Also the ellipsis rank.
    pub fn labels(&self, ranks: &[usize]) -> Result<(Vec<Vec<u16>>, usize)> {
        let err = |msg: String| IrError::invalid("Einsum", format!("equation '{}': {msg}", self.equation));
        if ranks.len() != self.inputs.len() {
            return Err(err(format!("{} terms but {} inputs", self.inputs.len(), ranks.len())));
        }
        let mut ell_rank = 0;
        for (t, &r) in self.inputs.iter().zip(ranks) {
            let letters = t.iter().filter(|s| **s != Subscript::Ellipsis).count();
            let has_ell = t.contains(&Subscript::Ellipsis);
            if r < letters || (!has_ell && r != letters) {
                return Err(err(format!("a term has {letters} subscripts for an input of rank {r}")));
            }
            if has_ell {
                ell_rank = ell_rank.max(r - letters);
            }
        }
        let expand = |t: &[Subscript], r: usize| -> Vec<u16> {
            let letters = t.iter().filter(|s| **s != Subscript::Ellipsis).count();
            let n_ell = r.saturating_sub(letters);
            t.iter()
                .flat_map(|s| match s {
                    Subscript::Letter(c) => vec![1000 + *c as u16],
                    Subscript::Ellipsis => ((ell_rank - n_ell)..ell_rank).map(|k| k as u16).collect(),
                })
                .collect()
        };
        let mut all: Vec<Vec<u16>> = self.inputs.iter().zip(ranks).map(|(t, &r)| expand(t, r)).collect();
        all.push(expand(&self.output, ell_rank + self.output.iter().filter(|s| **s != Subscript::Ellipsis).count()));
        Ok((all, ell_rank))
    }
}

impl OpFamily for NnOp {
    fn name(&self) -> &'static str {
        match self {
            NnOp::MatMul => "MatMul",
            NnOp::Gemm(_) => "Gemm",
            NnOp::Einsum(_) => "Einsum",
            NnOp::Conv(_) => "Conv",
            NnOp::ConvTranspose(_) => "ConvTranspose",
            NnOp::Pool(p) => match p.kind {
                PoolKind::Max { .. } => "MaxPool",
                PoolKind::Average { .. } => "AveragePool",
                PoolKind::Lp { .. } => "LpPool",
            },
            NnOp::GlobalPool(k) => match k {
                PoolKind::Max { .. } => "GlobalMaxPool",
                PoolKind::Average { .. } => "GlobalAveragePool",
                PoolKind::Lp { .. } => "GlobalLpPool",
            },
            NnOp::MaxUnpool(_) => "MaxUnpool",
            NnOp::Col2Im(_) => "Col2Im",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let x = required(inputs, 0, name)?;
        let dtype = x.dtype;
        let shape = match self {
            NnOp::MatMul => matmul_shape(x, required(inputs, 1, name)?)?,
            NnOp::Gemm(g) => gemm_shape(g, x, required(inputs, 1, name)?)?,
            NnOp::Einsum(e) => einsum_shape(e, inputs)?,
            NnOp::Conv(c) => conv_shape(c, x, required(inputs, 1, name)?)?,
            NnOp::ConvTranspose(c) => conv_transpose_shape(c, x, required(inputs, 1, name)?)?,
            NnOp::Pool(p) => pool_shape(p, x, name)?,
            NnOp::GlobalPool(_) => x.shape.as_ref().map(|s| global_shape(s, name)).transpose()?,
            NnOp::MaxUnpool(w) => unpool_shape(w, x, optional(inputs, 2), name)?,
            NnOp::Col2Im(_) => col2im_shape(x, required(inputs, 1, name)?, required(inputs, 2, name)?)?,
        };
        let mut out = vec![Fact { dtype, shape: shape.clone(), value: None }];
        if n_outputs > 1 && matches!(self, NnOp::Pool(Pool { kind: PoolKind::Max { .. }, .. })) {
            out.push(Fact { dtype: Some(DType::I64), shape, value: None });
        }
        Ok(out)
    }
}

fn rank_err(op: &str, what: &str, rank: usize) -> IrError {
    IrError::invalid(op, format!("{what} has rank {rank}"))
}

fn dims_match(a: &Dim, b: &Dim, op: &str, what: &str) -> Result<()> {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) if x != y => Err(IrError::invalid(op, format!("{what}: {x} vs {y}"))),
        _ => Ok(()),
    }
}

fn matmul_shape(a: &Fact, b: &Fact) -> Result<Option<Shape>> {
    let (Some(sa), Some(sb)) = (&a.shape, &b.shape) else { return Ok(None) };
    if sa.rank() == 0 || sb.rank() == 0 {
        return Err(IrError::invalid("MatMul", "operands must have rank >= 1"));
    }
    // 1-D operands are promoted to matrices, and the promoted dim removed after.
    let pa = if sa.rank() == 1 { Shape(vec![Dim::Known(1), sa.0[0].clone()]) } else { sa.clone() };
    let pb = if sb.rank() == 1 { Shape(vec![sb.0[0].clone(), Dim::Known(1)]) } else { sb.clone() };
    let (ra, rb) = (pa.rank(), pb.rank());
    dims_match(&pa.0[ra - 1], &pb.0[rb - 2], "MatMul", "inner dimensions differ")?;
    let batch = Shape::broadcast(&[&Shape(pa.0[..ra - 2].to_vec()), &Shape(pb.0[..rb - 2].to_vec())])
        .ok_or_else(|| IrError::invalid("MatMul", format!("batch dims of {sa} and {sb} do not broadcast")))?;
    let mut out = batch.0;
    if sa.rank() > 1 {
        out.push(pa.0[ra - 2].clone());
    }
    if sb.rank() > 1 {
        out.push(pb.0[rb - 1].clone());
    }
    Ok(Some(Shape(out)))
}

fn gemm_shape(g: &Gemm, a: &Fact, b: &Fact) -> Result<Option<Shape>> {
    let (Some(sa), Some(sb)) = (&a.shape, &b.shape) else { return Ok(None) };
    if sa.rank() != 2 || sb.rank() != 2 {
        return Err(IrError::invalid("Gemm", format!("A and B must be matrices, got {sa} and {sb}")));
    }
    let (m, ka) = if g.trans_a { (&sa.0[1], &sa.0[0]) } else { (&sa.0[0], &sa.0[1]) };
    let (kb, n) = if g.trans_b { (&sb.0[1], &sb.0[0]) } else { (&sb.0[0], &sb.0[1]) };
    dims_match(ka, kb, "Gemm", "inner dimensions differ")?;
    Ok(Some(Shape(vec![m.clone(), n.clone()])))
}

fn einsum_shape(e: &Einsum, inputs: &[Option<&Fact>]) -> Result<Option<Shape>> {
    let mut shapes = Vec::new();
    for i in 0..inputs.len() {
        match &required(inputs, i, "Einsum")?.shape {
            Some(s) => shapes.push(s),
            None => return Ok(None),
        }
    }
    let ranks: Vec<usize> = shapes.iter().map(|s| s.rank()).collect();
    let (labels, _) = e.labels(&ranks)?;
    let (out_labels, in_labels) = labels.split_last().ok_or_else(|| IrError::invalid("Einsum", "no output"))?;
    let dim_of = |l: u16| -> Result<Dim> {
        let mut d = Dim::Known(1);
        for (ls, s) in in_labels.iter().zip(&shapes) {
            for (x, dim) in ls.iter().zip(&s.0) {
                if *x == l {
                    d = d.broadcast(dim).ok_or_else(|| {
                        IrError::invalid("Einsum", format!("equation '{}': sizes of a subscript differ", e.equation))
                    })?;
                }
            }
        }
        Ok(d)
    };
    Ok(Some(Shape(out_labels.iter().map(|&l| dim_of(l)).collect::<Result<_>>()?)))
}

/// Spatial output dims of a forward window; unknown where the input dim is.
fn window_dims(w: &Window, spatial: &[Dim], kernel: Option<&[usize]>, ceil_mode: bool, op: &str) -> Result<Vec<Dim>> {
    let n = spatial.len();
    w.check(n, op)?;
    let Some(kernel) = kernel else { return Ok(vec![Dim::Unknown; n]) };
    if kernel.len() != n {
        return Err(IrError::invalid(op, format!("kernel has {} dims for {n} spatial axes", kernel.len())));
    }
    spatial
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(s) => Ok(Dim::Known(w.axis(i, n, *s, kernel[i], ceil_mode, op)?.output)),
            _ => Ok(Dim::Unknown),
        })
        .collect()
}

fn conv_shape(c: &Conv, x: &Fact, w: &Fact) -> Result<Option<Shape>> {
    let (Some(sx), Some(sw)) = (&x.shape, &w.shape) else { return Ok(None) };
    if sx.rank() < 3 || sw.rank() != sx.rank() {
        return Err(IrError::invalid("Conv", format!("X {sx} and W {sw} must both have rank >= 3")));
    }
    if c.group == 0 {
        return Err(IrError::invalid("Conv", "group must be positive"));
    }
    if let (Dim::Known(ch), Dim::Known(wc)) = (&sx.0[1], &sw.0[1])
        && *ch != wc * c.group
    {
        return Err(IrError::invalid("Conv", format!("X has {ch} channels, W expects {wc} x group {}", c.group)));
    }
    let wk: Option<Vec<usize>> = Shape(sw.0[2..].to_vec()).as_known();
    let spatial = window_dims(&c.window, &sx.0[2..], c.window.kernel(wk.as_deref()), false, "Conv")?;
    let mut out = vec![sx.0[0].clone(), sw.0[0].clone()];
    out.extend(spatial);
    Ok(Some(Shape(out)))
}

fn conv_transpose_shape(c: &ConvTranspose, x: &Fact, w: &Fact) -> Result<Option<Shape>> {
    let op = "ConvTranspose";
    let (Some(sx), Some(sw)) = (&x.shape, &w.shape) else { return Ok(None) };
    if sx.rank() < 3 || sw.rank() != sx.rank() {
        return Err(IrError::invalid(op, format!("X {sx} and W {sw} must both have rank >= 3")));
    }
    if c.group == 0 {
        return Err(IrError::invalid(op, "group must be positive"));
    }
    dims_match(&sx.0[1], &sw.0[0], op, "X channels and W's first dim differ")?;
    let n = sx.rank() - 2;
    c.window.check(n, op)?;
    let wk: Option<Vec<usize>> = Shape(sw.0[2..].to_vec()).as_known();
    let kernel = c.window.kernel(wk.as_deref());
    let m = match &sw.0[1] {
        Dim::Known(k) => Dim::Known(k * c.group),
        _ => Dim::Unknown,
    };
    let mut out = vec![sx.0[0].clone(), m];
    for (i, d) in sx.0[2..].iter().enumerate() {
        out.push(match (d, kernel) {
            (Dim::Known(s), Some(k)) => Dim::Known(c.axis(i, n, *s, k[i], op)?.input),
            _ => Dim::Unknown,
        });
    }
    Ok(Some(Shape(out)))
}

fn pool_shape(p: &Pool, x: &Fact, op: &str) -> Result<Option<Shape>> {
    let Some(sx) = &x.shape else { return Ok(None) };
    if sx.rank() < 3 {
        return Err(rank_err(op, "X", sx.rank()));
    }
    let kernel = p.window.kernel_shape.as_deref().ok_or_else(|| IrError::invalid(op, "kernel_shape is required"))?;
    let mut out = sx.0[..2].to_vec();
    out.extend(window_dims(&p.window, &sx.0[2..], Some(kernel), p.ceil_mode, op)?);
    Ok(Some(Shape(out)))
}

fn global_shape(s: &Shape, op: &str) -> Result<Shape> {
    if s.rank() < 2 {
        return Err(rank_err(op, "X", s.rank()));
    }
    let mut out = s.0[..2].to_vec();
    out.resize(s.rank(), Dim::Known(1));
    Ok(Shape(out))
}

fn unpool_shape(w: &Window, x: &Fact, output_shape: Option<&Fact>, op: &str) -> Result<Option<Shape>> {
    if let Some(f) = output_shape {
        return Ok(match &f.value {
            Some(v) => Some(Shape(v.to_i64_vec()?.into_iter().map(|d| Dim::Known(d.max(0) as usize)).collect())),
            None => f.shape.as_ref().and_then(|s| s.0.first()?.known()).map(|r| Shape(vec![Dim::Unknown; r])),
        });
    }
    let Some(sx) = &x.shape else { return Ok(None) };
    if sx.rank() < 3 {
        return Err(rank_err(op, "X", sx.rank()));
    }
    let n = sx.rank() - 2;
    w.check(n, op)?;
    let kernel = w.kernel_shape.as_deref().ok_or_else(|| IrError::invalid(op, "kernel_shape is required"))?;
    let mut out = sx.0[..2].to_vec();
    for (i, d) in sx.0[2..].iter().enumerate() {
        out.push(match d {
            Dim::Known(s) => Dim::Known(unpool_size(w, i, n, *s, kernel[i], op)?),
            _ => Dim::Unknown,
        });
    }
    Ok(Some(Shape(out)))
}

/// MaxUnpool's default output size of axis `i`: the input size of the MaxPool it inverts.
pub fn unpool_size(w: &Window, i: usize, n: usize, input: usize, kernel: usize, op: &str) -> Result<usize> {
    let stride = w.strides.as_ref().and_then(|s| s.get(i).copied()).unwrap_or(1);
    let pads = w.pads.as_ref().map_or(0, |p| p.get(i).copied().unwrap_or(0) + p.get(i + n).copied().unwrap_or(0));
    (stride * input.saturating_sub(1) + kernel)
        .checked_sub(pads)
        .ok_or_else(|| IrError::invalid(op, format!("axis {i}: pads exceed the output size")))
}

fn col2im_shape(x: &Fact, image: &Fact, block: &Fact) -> Result<Option<Shape>> {
    let Some(sx) = &x.shape else { return Ok(None) };
    if sx.rank() != 3 {
        return Err(rank_err("Col2Im", "input", sx.rank()));
    }
    let Some(image) = &image.value else { return Ok(None) };
    let image = image.to_i64_vec()?;
    let channels = match (&block.value, &sx.0[1]) {
        (Some(b), Dim::Known(cb)) => {
            let prod: i64 = b.to_i64_vec()?.iter().product();
            if prod <= 0 || *cb as i64 % prod != 0 {
                return Err(IrError::invalid("Col2Im", format!("{cb} channels are not a multiple of the block size")));
            }
            Dim::Known(*cb / prod as usize)
        }
        _ => Dim::Unknown,
    };
    let mut out = vec![sx.0[0].clone(), channels];
    out.extend(image.iter().map(|&d| Dim::Known(d.max(0) as usize)));
    Ok(Some(Shape(out)))
}
