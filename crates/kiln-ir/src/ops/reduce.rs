//! Reductions and normalizations: ops that combine the elements along some axes
//! (ReduceSum…, ArgMax, TopK, Softmax, the *Normalization ops, LRN).

use super::{OpFamily, normalize_axis, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape, Tensor};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    Reduce(Reduce),
    Arg(ArgReduce),
    TopK(TopK),
    Softmax(Softmax),
    BatchNorm(BatchNorm),
    InstanceNorm(InstanceNorm),
    LayerNorm(LayerNorm),
    GroupNorm(GroupNorm),
    RmsNorm(RmsNorm),
    Lrn(Lrn),
    MeanVarianceNorm(MeanVarianceNorm),
    Loss(Loss),
}

/// `NegativeLogLikelihoodLoss` (input: log-probabilities) and `SoftmaxCrossEntropyLoss`
/// (input: scores; a second, optional output holds their log-softmax over axis 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Loss {
    pub kind: LossKind,
    pub reduction: LossReduction,
    /// Targets equal to this contribute nothing (and weigh nothing in `Mean`).
    pub ignore_index: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossKind {
    NegativeLogLikelihood,
    SoftmaxCrossEntropy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossReduction {
    None,
    Sum,
    /// Sum of the weighted losses over the sum of the weights applied.
    Mean,
}

/// What `Reduce*` computes over the reduced elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// `Reduce*`. The axes come from the attribute (older opsets) or else from input 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reduce {
    pub kind: ReduceKind,
    /// The `axes` attribute, for opsets where it is one; `None` = use input 1 if present.
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    /// With no axes: `true` = identity, `false` = reduce over all axes.
    pub noop_with_empty_axes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArgKind {
    Max,
    Min,
}

/// `ArgMax` / `ArgMin`: int64 index of the extreme along `axis`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArgReduce {
    pub kind: ArgKind,
    pub axis: i64,
    pub keepdims: bool,
    /// Ties pick the last index rather than the first.
    pub select_last_index: bool,
}

/// `TopK`: outputs the k largest (or smallest) values along `axis` and their indices.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopK {
    pub axis: i64,
    pub largest: bool,
    pub sorted: bool,
    /// The `k` attribute of opset 1; later opsets give K as input 1.
    pub k: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// `Softmax` / `LogSoftmax` / `Hardmax`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Softmax {
    pub kind: SoftmaxKind,
    pub axis: i64,
    /// Opsets before 13: the input is seen as 2-D `[prod(d[..axis]), prod(d[axis..])]`
    /// and each row is normalised; from 13 on, only the one `axis` is.
    pub coerce_2d: bool,
}

/// `BatchNormalization`. Inputs: X, scale, B, input_mean, input_var.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchNorm {
    pub epsilon: f32,
    pub momentum: f32,
    /// Use the batch statistics and output the updated running ones.
    pub training: bool,
}

/// `InstanceNormalization`. Inputs: X, scale [C], B [C].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceNorm {
    pub epsilon: f32,
}

/// `LayerNormalization`: normalise over axes `axis..rank`. Outputs Y, Mean, InvStdDev.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerNorm {
    pub axis: i64,
    pub epsilon: f32,
    /// Type of the Mean/InvStdDev outputs and of the statistics' computation.
    pub stash_type: DType,
}

/// Whether GroupNormalization's scale and bias are per group (opset 18) or per channel (21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupAffine {
    PerGroup,
    PerChannel,
}

/// `GroupNormalization`. Inputs: X, scale, bias.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupNorm {
    pub num_groups: i64,
    pub epsilon: f32,
    pub stash_type: DType,
    pub affine: GroupAffine,
}

/// `RMSNormalization` (opset 23): `X / sqrt(mean(X², axis..) + eps) * scale`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RmsNorm {
    pub axis: i64,
    pub epsilon: f32,
    pub stash_type: DType,
}

/// `LRN`: local response normalisation across channels.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lrn {
    pub size: i64,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

/// `MeanVarianceNormalization`: `(X - E[X]) / (sqrt(E[X²] - E[X]²) + 1e-9)` over `axes`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanVarianceNorm {
    pub axes: Vec<i64>,
}

impl ReduceKind {
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }
}

impl OpFamily for ReduceOp {
    fn name(&self) -> &'static str {
        match self {
            ReduceOp::Reduce(r) => r.kind.name(),
            ReduceOp::Arg(a) => match a.kind {
                ArgKind::Max => "ArgMax",
                ArgKind::Min => "ArgMin",
            },
            ReduceOp::TopK(_) => "TopK",
            ReduceOp::Softmax(s) => match s.kind {
                SoftmaxKind::Softmax => "Softmax",
                SoftmaxKind::LogSoftmax => "LogSoftmax",
                SoftmaxKind::Hardmax => "Hardmax",
            },
            ReduceOp::BatchNorm(_) => "BatchNormalization",
            ReduceOp::InstanceNorm(_) => "InstanceNormalization",
            ReduceOp::LayerNorm(_) => "LayerNormalization",
            ReduceOp::GroupNorm(_) => "GroupNormalization",
            ReduceOp::RmsNorm(_) => "RMSNormalization",
            ReduceOp::Lrn(_) => "LRN",
            ReduceOp::MeanVarianceNorm(_) => "MeanVarianceNormalization",
            ReduceOp::Loss(l) => match l.kind {
                LossKind::NegativeLogLikelihood => "NegativeLogLikelihoodLoss",
                LossKind::SoftmaxCrossEntropy => "SoftmaxCrossEntropyLoss",
            },
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let x = required(inputs, 0, name)?;
        let same = || Fact { value: None, ..x.clone() };
        match self {
            ReduceOp::Reduce(r) => infer_reduce(r, x, optional(inputs, 1), name),
            ReduceOp::Arg(a) => {
                let shape = match &x.shape {
                    Some(s) => {
                        let axis = normalize_axis(a.axis, s.rank(), name)?;
                        Some(reduced_shape(s, &[axis], a.keepdims))
                    }
                    None => None,
                };
                Ok(vec![Fact { dtype: Some(DType::I64), shape, value: None }])
            }
            ReduceOp::TopK(t) => infer_topk(t, x, optional(inputs, 1), name),
            ReduceOp::Softmax(s) => {
                // Opsets before 13 also accept axis == rank (rows of length 1).
                if let Some(r) = x.rank()
                    && !(s.coerce_2d && s.axis == r as i64)
                {
                    normalize_axis(s.axis, r, name)?;
                }
                Ok(vec![same()])
            }
            ReduceOp::BatchNorm(_) => infer_batch_norm(x, inputs, n_outputs, name),
            ReduceOp::Loss(l) => {
                check_min_rank(x, 2, name)?;
                let shape = match (l.reduction, &x.shape) {
                    (LossReduction::None, Some(s)) => {
                        Some(Shape(s.0.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, d)| d.clone()).collect()))
                    }
                    (LossReduction::None, None) => None,
                    _ => Some(Shape(vec![])),
                };
                Ok(vec![Fact { dtype: x.dtype, shape, value: None }, same()])
            }
            ReduceOp::InstanceNorm(_) | ReduceOp::Lrn(_) => {
                check_min_rank(x, 3, name)?;
                Ok(vec![same()])
            }
            ReduceOp::GroupNorm(_) => {
                check_min_rank(x, 2, name)?;
                Ok(vec![same()])
            }
            ReduceOp::LayerNorm(l) => {
                let mut out = vec![same()];
                if n_outputs > 1 {
                    let shape = match &x.shape {
                        Some(s) => {
                            let axis = normalize_axis(l.axis, s.rank(), name)?;
                            let dims =
                                s.0.iter().enumerate().map(|(i, d)| if i < axis { d.clone() } else { Dim::Known(1) });
                            Some(Shape(dims.collect()))
                        }
                        None => None,
                    };
                    let stat = Fact { dtype: Some(l.stash_type), shape, value: None };
                    out.push(stat.clone());
                    out.push(stat);
                }
                Ok(out)
            }
            ReduceOp::RmsNorm(r) => {
                if let Some(rank) = x.rank() {
                    normalize_axis(r.axis, rank, name)?;
                }
                Ok(vec![same()])
            }
            ReduceOp::MeanVarianceNorm(m) => {
                if let Some(rank) = x.rank() {
                    for &a in &m.axes {
                        normalize_axis(a, rank, name)?;
                    }
                }
                Ok(vec![same()])
            }
        }
    }
}

fn check_min_rank(x: &Fact, min: usize, op: &str) -> Result<()> {
    match x.rank() {
        Some(r) if r < min => Err(IrError::invalid(op, format!("input must have rank >= {min}, got {r}"))),
        _ => Ok(()),
    }
}

/// `shape` with `axes` (normalised, any order) set to 1 or removed.
pub fn reduced_shape(shape: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    let dims = shape.0.iter().enumerate().filter_map(|(i, d)| match (axes.contains(&i), keepdims) {
        (false, _) => Some(d.clone()),
        (true, true) => Some(Dim::Known(1)),
        (true, false) => None,
    });
    Shape(dims.collect())
}

/// Normalises reduction axes against `rank`, rejecting out-of-range and repeated ones.
pub fn normalize_axes(axes: &[i64], rank: usize, op: &str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank, op)?;
        if rank == 0 {
            return Err(IrError::invalid(op, format!("axis {a} is out of range for a scalar")));
        }
        if out.contains(&n) {
            return Err(IrError::invalid(op, format!("axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

/// The axes a `Reduce*` op reduces: `None` = identity (noop); otherwise the list.
pub fn resolve_reduce_axes(
    r: &Reduce,
    axes_input: Option<Vec<i64>>,
    rank: usize,
    op: &str,
) -> Result<Option<Vec<usize>>> {
    let axes = r.axes.clone().or(axes_input).unwrap_or_default();
    if axes.is_empty() {
        return Ok(if r.noop_with_empty_axes { None } else { Some((0..rank).collect()) });
    }
    normalize_axes(&axes, rank, op).map(Some)
}

fn infer_reduce(r: &Reduce, x: &Fact, axes_in: Option<&Fact>, name: &str) -> Result<Vec<Fact>> {
    let axes_value: Option<Option<Vec<i64>>> = match (&r.axes, axes_in) {
        (Some(_), _) | (None, None) => Some(None),
        (None, Some(f)) => f.value.as_ref().map(|t| t.to_i64_vec().map(Some)).transpose()?,
    };
    let shape = match (&x.shape, axes_value) {
        (None, _) => None,
        (Some(s), Some(axes)) => match resolve_reduce_axes(r, axes, s.rank(), name)? {
            None => Some(s.clone()),
            Some(axes) => Some(reduced_shape(s, &axes, r.keepdims)),
        },
        // Axes only known at run time: with keepdims the rank stays.
        (Some(s), None) if r.keepdims => {
            Some(Shape(s.0.iter().map(|d| if *d == Dim::Known(1) { d.clone() } else { Dim::Unknown }).collect()))
        }
        (Some(_), None) => None,
    };
    let value = match (&x.value, &shape) {
        (Some(t), Some(s)) => fold_i64(r, t, s),
        _ => None,
    };
    Ok(vec![Fact { dtype: x.dtype, shape, value }])
}

/// Folds a small constant int64 reduction (shape arithmetic, e.g. ReduceProd of a Shape)
/// when it reduces everything to a scalar or a single element.
fn fold_i64(r: &Reduce, t: &Tensor, out: &Shape) -> Option<Tensor> {
    if t.dtype() != DType::I64 || t.len() > 64 || out.as_known()?.iter().product::<usize>() != 1 {
        return None;
    }
    let v = t.to_i64_vec().ok()?;
    let folded = match r.kind {
        ReduceKind::Sum => v.iter().fold(0i64, |a, &b| a.wrapping_add(b)),
        ReduceKind::Prod => v.iter().fold(1i64, |a, &b| a.wrapping_mul(b)),
        ReduceKind::Max => *v.iter().max()?,
        ReduceKind::Min => *v.iter().min()?,
        _ => return None,
    };
    Tensor::from_vec(out.as_known()?, vec![folded]).ok()
}

fn infer_topk(t: &TopK, x: &Fact, k_in: Option<&Fact>, name: &str) -> Result<Vec<Fact>> {
    let k = match (t.k, k_in.and_then(|f| f.value.as_ref())) {
        (Some(k), _) => Some(k),
        (None, Some(v)) => match v.to_i64_vec()?.as_slice() {
            [k] => Some(*k),
            other => return Err(IrError::invalid(name, format!("K must hold one value, got {}", other.len()))),
        },
        (None, None) => None,
    };
    if let Some(k) = k
        && k < 0
    {
        return Err(IrError::invalid(name, format!("k must be >= 0, got {k}")));
    }
    let shape = match &x.shape {
        Some(s) => {
            let axis = normalize_axis(t.axis, s.rank(), name)?;
            if let (Some(k), Some(n)) = (k, s.0.get(axis).and_then(Dim::known))
                && k as usize > n
            {
                return Err(IrError::invalid(name, format!("k = {k} exceeds the axis size {n}")));
            }
            let mut dims = s.0.clone();
            dims[axis] = k.map_or(Dim::Unknown, |k| Dim::Known(k as usize));
            Some(Shape(dims))
        }
        None => None,
    };
    Ok(vec![
        Fact { dtype: x.dtype, shape: shape.clone(), value: None },
        Fact { dtype: Some(DType::I64), shape, value: None },
    ])
}

fn infer_batch_norm(x: &Fact, inputs: &[Option<&Fact>], n_outputs: usize, name: &str) -> Result<Vec<Fact>> {
    check_min_rank(x, 2, name)?;
    let channels = x.shape.as_ref().and_then(|s| s.0.get(1).and_then(Dim::known));
    for i in 1..5 {
        let p = required(inputs, i, name)?;
        if let (Some(c), Some(ps)) = (channels, p.shape.as_ref().and_then(Shape::as_known))
            && ps.first() != Some(&c)
        {
            return Err(IrError::invalid(name, format!("input {i} has shape {ps:?}, expected [{c}, ..]")));
        }
    }
    let mut out = vec![Fact { value: None, ..x.clone() }];
    let stat = required(inputs, 3, name)?;
    for _ in 1..n_outputs {
        out.push(Fact { value: None, ..stat.clone() });
    }
    Ok(out)
}
