//! Host math on constant weights, shared by the BatchNorm and scale folds: a compute op
//! (Conv, ConvTranspose, Gemm, MatMul) with constant weights is linear per output
//! channel, so `y * s + t` per channel folds into new weights `W * s` and bias `b * s + t`.
//! Values are computed in f64 and stored in the weights' dtype.

use half::{bf16, f16};
use kiln_ir::ops::NnOp;
use kiln_ir::ops::nn::Gemm;
use kiln_ir::{DType, Dim, NodeId, Op, OutletId, Shape, Tensor};

use crate::context::Context;
use crate::patch::{Patch, Wire};

/// The elements of a float tensor as f64 (f32, f16, bf16, f64).
pub fn floats(t: &Tensor) -> Option<Vec<f64>> {
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        return None;
    }
    t.to_f64_vec().ok()
}

/// A tensor of `dtype` (f32, f16, bf16, f64) holding `v`.
pub fn store(dtype: DType, shape: Vec<usize>, v: &[f64]) -> Option<Tensor> {
    let t = match dtype {
        DType::F32 => Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, v.to_vec()),
        DType::F16 => Tensor::from_vec(shape, v.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BF16 => Tensor::from_vec(shape, v.iter().map(|&x| bf16::from_f64(x)).collect()),
        _ => return None,
    };
    t.ok()
}

/// Where the output channel of each weight element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// Conv `[C_out, C_in/group, k…]`: dim 0.
    Conv,
    /// ConvTranspose `[C_in, C_out/group, k…]`: output channel `g·(C_out/group) + j`.
    ConvTranspose { group: usize },
    /// A `[N, K]` matrix (Gemm with transB): rows.
    Rows,
    /// A `[K, N]` matrix (Gemm, MatMul): columns.
    Cols,
}

impl WeightLayout {
    /// The number of output channels of weights of `shape`.
    pub fn channels(self, shape: &[usize]) -> Option<usize> {
        match self {
            WeightLayout::Conv => (shape.len() >= 3).then(|| shape[0]),
            WeightLayout::ConvTranspose { group } => {
                if shape.len() < 3 || group == 0 || !shape[0].is_multiple_of(group) {
                    return None;
                }
                shape[1].checked_mul(group)
            }
            WeightLayout::Rows => (shape.len() == 2).then(|| shape[0]),
            WeightLayout::Cols => (shape.len() == 2).then(|| shape[1]),
        }
    }

    /// The output channel of the element at flat index `i` of weights of `shape`.
    fn channel_of(self, shape: &[usize], i: usize) -> usize {
        let inner: usize = shape.iter().skip(1).product();
        match self {
            WeightLayout::Conv | WeightLayout::Rows => i / inner.max(1),
            WeightLayout::Cols => i % shape.get(1).copied().unwrap_or(1).max(1),
            WeightLayout::ConvTranspose { group } => {
                let per_out = shape.get(1).copied().unwrap_or(1).max(1);
                let k: usize = shape.iter().skip(2).product::<usize>().max(1);
                let cin = i / inner.max(1);
                let j = (i / k) % per_out;
                let per_in = (shape.first().copied().unwrap_or(1) / group.max(1)).max(1);
                (cin / per_in) * per_out + j
            }
        }
    }
}

/// `w` with every element multiplied by the scale of its output channel.
pub fn scale_weights(w: &Tensor, layout: WeightLayout, s: &[f64]) -> Option<Tensor> {
    let shape = w.shape();
    if layout.channels(shape)? != s.len() {
        return None;
    }
    let v = floats(w)?;
    let out: Vec<f64> =
        v.iter().enumerate().map(|(i, &x)| x * s.get(layout.channel_of(shape, i)).copied().unwrap_or(1.0)).collect();
    store(w.dtype(), shape.to_vec(), &out)
}

/// A compute op whose output is linear per output channel in constant weights.
pub struct Linear<'a> {
    pub id: NodeId,
    pub x: OutletId,
    pub w: &'a Tensor,
    pub layout: WeightLayout,
    pub channels: usize,
    /// The per-channel bias (Gemm's `beta · C` when it is per channel), if any.
    pub bias: Option<Vec<f64>>,
    /// The output's rank and its channel axis (1 for convolutions, the last otherwise).
    pub rank: usize,
    pub axis: usize,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Conv,
    ConvTranspose,
    Gemm(Gemm),
    MatMul,
}

impl<'a> Linear<'a> {
    /// `id` when it is a Conv, ConvTranspose, Gemm or MatMul with constant float weights
    /// (and constant per-channel bias) and an output of known rank.
    pub fn of(cx: &Context<'a>, id: NodeId) -> Option<Linear<'a>> {
        let node = cx.node(id);
        let Op::Nn(nn) = &node.op else { return None };
        let x = cx.input(id, 0)?;
        let w_out = cx.input(id, 1)?;
        let w = cx.value(w_out)?;
        floats(w)?;
        let out = cx.fact(OutletId::new(id, 0));
        let rank = out.shape.as_ref()?.rank();
        if out.dtype != Some(w.dtype()) || node.outputs.len() != 1 {
            return None;
        }
        let bias_in = cx.input(id, 2);
        let (kind, layout, axis) = match nn {
            NnOp::Conv(_) => (Kind::Conv, WeightLayout::Conv, 1),
            NnOp::ConvTranspose(c) => (Kind::ConvTranspose, WeightLayout::ConvTranspose { group: c.group }, 1),
            NnOp::Gemm(g) => {
                let layout = if g.trans_b { WeightLayout::Rows } else { WeightLayout::Cols };
                (Kind::Gemm(*g), layout, 1)
            }
            NnOp::MatMul => {
                if node.inputs.len() != 2 || rank < 1 {
                    return None;
                }
                (Kind::MatMul, WeightLayout::Cols, rank - 1)
            }
            _ => return None,
        };
        if axis >= rank {
            return None;
        }
        let channels = layout.channels(w.shape())?;
        if let Some(d) = out.shape.as_ref()?.0.get(axis)
            && let Dim::Known(n) = d
            && *n != channels
        {
            return None;
        }
        let bias = match (bias_in, kind) {
            (None, _) => None,
            (Some(b), Kind::Gemm(g)) => {
                let t = cx.value(b)?;
                let v = floats(t)?;
                let per = match (t.shape(), v.len()) {
                    (_, 1) => vec![v[0]; channels],
                    ([n], _) | ([1, n], _) if *n == channels => v,
                    _ => return None,
                };
                Some(per.into_iter().map(|x| x * f64::from(g.beta)).collect())
            }
            (Some(b), _) => {
                let t = cx.value(b)?;
                let v = floats(t)?;
                (v.len() == channels && t.rank() == 1).then_some(v)?.into()
            }
        };
        if let Some(b) = bias_in
            && cx.fact(b).dtype != Some(w.dtype())
        {
            return None;
        }
        Some(Linear { id, x, w, layout, channels, bias, rank, axis, kind })
    }

    /// Whether the channel `axis` of the output is where `y * s + t` per channel applies:
    /// a constant of `shape` broadcast to the output must vary along the channel axis only.
    /// Returns the constant per channel (`values` broadcast along the channel axis).
    pub fn per_channel(&self, shape: &[usize], values: &[f64]) -> Option<Vec<f64>> {
        if shape.len() > self.rank {
            return None;
        }
        let offset = self.rank - shape.len();
        let mut along = 1;
        for (i, &d) in shape.iter().enumerate() {
            if i + offset == self.axis {
                if d != 1 && d != self.channels {
                    return None;
                }
                along = d;
            } else if d != 1 {
                return None;
            }
        }
        match (along, values.len()) {
            (1, 1) => Some(vec![values[0]; self.channels]),
            (n, m) if n == m && n == self.channels => Some(values.to_vec()),
            _ => None,
        }
    }

    /// A patch computing `y * s + t` per channel (`t` absent: zero) in one op, replacing
    /// `old` (the output being replaced); `None` where it cannot (MatMul needing a bias
    /// with an input that is not a matrix). `name` names the new node.
    pub fn fold(&self, cx: &Context, s: &[f64], t: Option<&[f64]>, old: OutletId, name: String) -> Option<Patch> {
        let dtype = self.w.dtype();
        let w = scale_weights(self.w, self.layout, s)?;
        let bias: Option<Vec<f64>> = match (&self.bias, t) {
            (None, None) => None,
            (b, t) => Some(
                (0..self.channels)
                    .map(|c| {
                        let b = b.as_ref().and_then(|b| b.get(c)).copied().unwrap_or(0.0);
                        let t = t.and_then(|t| t.get(c)).copied().unwrap_or(0.0);
                        b * s.get(c).copied().unwrap_or(1.0) + t
                    })
                    .collect(),
            ),
        };
        let mut p = Patch::new();
        let w = p.constant(format!("{name}/weight"), w);
        let b = match &bias {
            Some(b) => Some(p.constant(format!("{name}/bias"), store(dtype, vec![self.channels], b)?)),
            None => None,
        };
        let x = Wire::Graph(self.x);
        let node = cx.node(self.id);
        let (op, inputs) = match self.kind {
            Kind::Conv | Kind::ConvTranspose => {
                let mut inputs = vec![Some(x), Some(w)];
                if let Some(b) = b {
                    inputs.push(Some(b));
                }
                (node.op.clone(), inputs)
            }
            Kind::Gemm(g) => {
                let op = Op::Nn(NnOp::Gemm(Gemm { beta: 1.0, ..g }));
                let mut inputs = vec![Some(x), Some(w)];
                if b.is_some() {
                    inputs.push(b);
                }
                (op, inputs)
            }
            Kind::MatMul => match b {
                None => (node.op.clone(), vec![Some(x), Some(w)]),
                Some(b) => {
                    // A matrix times weights plus a bias is a Gemm.
                    if cx.fact(self.x).rank() != Some(2) || self.rank != 2 {
                        return None;
                    }
                    let g = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
                    (Op::Nn(NnOp::Gemm(g)), vec![Some(x), Some(w), Some(b)])
                }
            },
        };
        let y = p.add_multi(name, op, inputs, 1);
        p.shunt(old, *y.first()?);
        Some(p)
    }
}

/// The shape of a constant `[C, 1, …, 1]` that broadcasts along axis 1 of a rank-`rank`
/// value (`[C]` for rank 2).
pub fn channel_shape(channels: usize, rank: usize) -> Vec<usize> {
    let mut s = vec![channels];
    s.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
    s
}

/// Whether broadcasting `other` to `base` leaves `base`'s shape unchanged: `other` has
/// no more dims and each of its dims is 1 or the same as `base`'s.
pub fn broadcasts_into(other: &Shape, base: &Shape) -> bool {
    if other.rank() > base.rank() {
        return false;
    }
    let offset = base.rank() - other.rank();
    other.0.iter().enumerate().all(|(i, d)| match (d, &base.0[i + offset]) {
        (Dim::Known(1), _) => true,
        (Dim::Known(a), Dim::Known(b)) => a == b,
        (Dim::Sym(a), Dim::Sym(b)) => a == b,
        _ => false,
    })
}
