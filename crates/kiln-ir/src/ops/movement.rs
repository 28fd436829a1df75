//! Data movement ops: reshaping, permuting, slicing, gathering and scattering elements,
//! and the shape queries (Shape, Size) whose results feed shape arithmetic.
//!
//! Besides inference, this file holds the dtype-agnostic copy primitives (strided copy,
//! block gather/concat) that both constant folding here and the CPU kernels use: they
//! move elements by storage, so one generic routine serves every dtype.

use super::{OpFamily, normalize_axis, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape, Tensor};

/// Constant inputs up to this many elements are folded at inference (shape arithmetic).
pub const FOLD_LIMIT: usize = 4096;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum MovementOp {
    /// Input 1 is the target shape; 0 copies the input dim unless `allowzero`.
    Reshape {
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    /// `axes` is the attribute form (opset < 13); later, input 1.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    /// `split` is the attribute form (opset < 13); later, input 1.
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
        num_outputs: Option<usize>,
    },
    /// `attrs` is the attribute form (opset < 10); later, inputs 1..=4.
    Slice {
        attrs: Option<SliceAttrs>,
    },
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    GatherND {
        batch_dims: usize,
    },
    ScatterND {
        reduction: Reduction,
    },
    /// Also the deprecated `Scatter` (`legacy`).
    ScatterElements {
        axis: i64,
        reduction: Reduction,
        legacy: bool,
    },
    Expand,
    Tile,
    /// `pads`/`value` are the attribute form (opset < 11); later, inputs 1..=3.
    Pad {
        mode: PadMode,
        pads: Option<Vec<i64>>,
        value: f32,
    },
    Range,
    Trilu {
        upper: bool,
    },
    OneHot {
        axis: i64,
    },
    CumSum {
        exclusive: bool,
        reverse: bool,
    },
    CumProd {
        exclusive: bool,
        reverse: bool,
    },
    DepthToSpace {
        blocksize: usize,
        mode: DepthToSpaceMode,
    },
    SpaceToDepth {
        blocksize: usize,
    },
    Compress {
        axis: Option<i64>,
    },
    NonZero,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    ConstantOfShape {
        value: Tensor,
    },
    EyeLike {
        dtype: Option<DType>,
        k: i64,
    },
    ReverseSequence {
        batch_axis: usize,
        time_axis: usize,
    },
    /// KV-cache update: writes `update` into the cache at per-batch write indices.
    TensorScatter {
        axis: i64,
        circular: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DepthToSpaceMode {
    Dcr,
    Crd,
}

impl OpFamily for MovementOp {
    fn name(&self) -> &'static str {
        use MovementOp::*;
        match self {
            Reshape { .. } => "Reshape",
            Flatten { .. } => "Flatten",
            Squeeze { .. } => "Squeeze",
            Unsqueeze { .. } => "Unsqueeze",
            Transpose { .. } => "Transpose",
            Concat { .. } => "Concat",
            Split { .. } => "Split",
            Slice { .. } => "Slice",
            Gather { .. } => "Gather",
            GatherElements { .. } => "GatherElements",
            GatherND { .. } => "GatherND",
            ScatterND { .. } => "ScatterND",
            ScatterElements { legacy: true, .. } => "Scatter",
            ScatterElements { .. } => "ScatterElements",
            Expand => "Expand",
            Tile => "Tile",
            Pad { .. } => "Pad",
            Range => "Range",
            Trilu { .. } => "Trilu",
            OneHot { .. } => "OneHot",
            CumSum { .. } => "CumSum",
            CumProd { .. } => "CumProd",
            DepthToSpace { .. } => "DepthToSpace",
            SpaceToDepth { .. } => "SpaceToDepth",
            Compress { .. } => "Compress",
            NonZero => "NonZero",
            Shape { .. } => "Shape",
            Size => "Size",
            ConstantOfShape { .. } => "ConstantOfShape",
            EyeLike { .. } => "EyeLike",
            ReverseSequence { .. } => "ReverseSequence",
            TensorScatter { .. } => "TensorScatter",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let x = required(inputs, 0, name)?;
        let same = || Ok(vec![Fact { value: None, ..x.clone() }]);
        use MovementOp::*;
        match self {
            Reshape { allowzero } => infer_reshape(x, required(inputs, 1, name)?, *allowzero),
            Flatten { axis } => infer_flatten(x, *axis),
            Squeeze { axes } => infer_squeeze(x, axes_of(axes, optional(inputs, 1))),
            Unsqueeze { axes } => infer_unsqueeze(x, axes_of(axes, optional(inputs, 1))),
            Transpose { perm } => infer_transpose(x, perm.as_deref()),
            Concat { axis } => infer_concat(inputs, *axis),
            Split { axis, split, num_outputs } => {
                let split = split.clone().map(Some).unwrap_or_else(|| const_ints(optional(inputs, 1)));
                let has_split_input = optional(inputs, 1).is_some();
                let n = num_outputs.unwrap_or(n_outputs);
                infer_split(x, *axis, split, has_split_input, n, n_outputs)
            }
            Slice { attrs } => infer_slice(x, &slice_params(attrs.as_ref(), inputs)),
            Gather { axis } => infer_gather(x, required(inputs, 1, name)?, *axis),
            GatherElements { axis } => {
                let idx = required(inputs, 1, name)?;
                check_same_rank(x, idx, name)?;
                if let Some(r) = x.rank() {
                    normalize_axis(*axis, r, name)?;
                }
                Ok(vec![Fact { dtype: x.dtype, shape: idx.shape.clone(), value: None }])
            }
            GatherND { batch_dims } => infer_gather_nd(x, required(inputs, 1, name)?, *batch_dims),
            ScatterND { .. }
            | ScatterElements { .. }
            | Trilu { .. }
            | CumSum { .. }
            | CumProd { .. }
            | ReverseSequence { .. }
            | TensorScatter { .. } => same(),
            Expand => infer_expand(x, required(inputs, 1, name)?),
            Tile => infer_tile(x, required(inputs, 1, name)?),
            Pad { pads, .. } => {
                let pads = pads.clone().or_else(|| const_ints(optional(inputs, 1)));
                let axes_given = optional(inputs, 3).is_some();
                infer_pad(x, pads, if axes_given { Some(const_ints(optional(inputs, 3))) } else { None })
            }
            Range => infer_range(inputs),
            OneHot { axis } => infer_onehot(x, required(inputs, 1, name)?, required(inputs, 2, name)?, *axis),
            DepthToSpace { blocksize, .. } => infer_space(x, *blocksize, true, name),
            SpaceToDepth { blocksize } => infer_space(x, *blocksize, false, name),
            Compress { axis } => {
                let shape = match (axis, &x.shape) {
                    (None, _) => Some(crate::Shape(vec![Dim::Unknown])),
                    (Some(a), Some(s)) => {
                        let mut d = s.0.clone();
                        d[normalize_axis(*a, s.rank(), name)?] = Dim::Unknown;
                        Some(crate::Shape(d))
                    }
                    (Some(_), None) => None,
                };
                Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
            }
            NonZero => {
                let shape = x.rank().map(|r| crate::Shape(vec![Dim::Known(r), Dim::Unknown]));
                Ok(vec![Fact { dtype: Some(DType::I64), shape, value: None }])
            }
            Shape { start, end } => Ok(vec![infer_shape(x, *start, *end)]),
            Size => {
                let known = x.shape.as_ref().and_then(crate::Shape::as_known);
                let value = known.map(|d| Tensor::scalar(d.iter().product::<usize>() as i64));
                Ok(vec![Fact { dtype: Some(DType::I64), shape: Some(crate::Shape(vec![])), value }])
            }
            ConstantOfShape { value } => infer_constant_of_shape(x, value),
            EyeLike { dtype, k: _ } => {
                if x.rank().is_some_and(|r| r != 2) {
                    return Err(IrError::invalid(name, "input must be 2-D"));
                }
                Ok(vec![Fact { dtype: dtype.or(x.dtype), shape: x.shape.clone(), value: None }])
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers over facts
// ---------------------------------------------------------------------------------------

/// The constant integer value of an input, if known.
pub fn const_ints(f: Option<&Fact>) -> Option<Vec<i64>> {
    f.and_then(|f| f.value.as_ref()).and_then(|t| t.to_i64_vec().ok())
}

/// Axes from an attribute, else from a constant input; `Err(())` when the input exists
/// but is not constant.
fn axes_of(attr: &Option<Vec<i64>>, input: Option<&Fact>) -> std::result::Result<Option<Vec<i64>>, ()> {
    match (attr, input) {
        (Some(a), _) => Ok(Some(a.clone())),
        (None, None) => Ok(None),
        (None, Some(f)) => const_ints(Some(f)).map(Some).ok_or(()),
    }
}

fn check_same_rank(a: &Fact, b: &Fact, op: &str) -> Result<()> {
    match (a.rank(), b.rank()) {
        (Some(x), Some(y)) if x != y => Err(IrError::invalid(op, format!("ranks differ: {x} and {y}"))),
        _ => Ok(()),
    }
}

fn small(t: &Tensor) -> bool {
    t.len() <= FOLD_LIMIT
}

/// The product of dims: known when all are, the single non-1 dim when others are 1.
pub fn dim_product(dims: &[Dim]) -> Dim {
    let mut known = 1usize;
    let mut other: Option<&Dim> = None;
    for d in dims {
        match d {
            Dim::Known(n) => known *= n,
            d if other.is_none() => other = Some(d),
            _ => return Dim::Unknown,
        }
    }
    match other {
        None => Dim::Known(known),
        Some(d) if known == 1 => d.clone(),
        Some(_) => Dim::Unknown,
    }
}

fn dim_sum(dims: &[&Dim]) -> Dim {
    dims.iter().try_fold(0usize, |a, d| d.known().map(|n| a + n)).map_or(Dim::Unknown, Dim::Known)
}

/// Of two dims that must be equal, the more informative one.
fn dim_merge(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(_), _) => a.clone(),
        _ => b.clone(),
    }
}

fn to_usize(v: i64, op: &str, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| IrError::invalid(op, format!("{what} {v} is negative")))
}

// ---------------------------------------------------------------------------------------
// Inference per op
// ---------------------------------------------------------------------------------------

/// Resolves a Reshape target against the input shape (0 = copy, -1 = infer).
pub fn reshape_dims(input: &[Dim], target: &[i64], allowzero: bool) -> Result<Vec<Dim>> {
    let op = "Reshape";
    let mut infer_at = None;
    let mut out = Vec::with_capacity(target.len());
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(IrError::invalid(op, "more than one -1 in the shape"));
                }
                Dim::Unknown
            }
            0 if !allowzero => {
                input.get(i).cloned().ok_or_else(|| IrError::invalid(op, format!("0 at {i} copies a missing dim")))?
            }
            t => Dim::Known(to_usize(t, op, "shape value")?),
        });
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        return Err(IrError::invalid(op, "allowzero with both 0 and -1 in the shape"));
    }
    if let Some(i) = infer_at {
        let rest: Vec<Dim> = out.iter().enumerate().filter(|(k, _)| *k != i).map(|(_, d)| d.clone()).collect();
        out[i] = inferred_dim(input, &rest)?;
    } else if let (Dim::Known(t), Dim::Known(r)) = (dim_product(input), dim_product(&out))
        && t != r
    {
        return Err(IrError::invalid(op, format!("cannot reshape {t} elements into {r}")));
    }
    Ok(out)
}

/// A dims list as (product of known dims, symbols); `None` if any dim is unknown.
fn known_and_symbols(dims: &[Dim]) -> Option<(usize, Vec<&Dim>)> {
    let mut known = 1usize;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Known(n) => known *= n,
            Dim::Sym(_) => syms.push(d),
            Dim::Unknown => return None,
        }
    }
    Some((known, syms))
}

/// The dim a -1 stands for: the input's size over the other target dims, with the
/// symbols they share cancelled (`[batch, 3, 4]` into `[batch, -1]` gives 12).
fn inferred_dim(input: &[Dim], rest: &[Dim]) -> Result<Dim> {
    let (Some((t, mut syms)), Some((r, rest_syms))) = (known_and_symbols(input), known_and_symbols(rest)) else {
        return Ok(Dim::Unknown);
    };
    for s in rest_syms {
        match syms.iter().position(|x| *x == s) {
            Some(k) => {
                syms.remove(k);
            }
            None => return Ok(Dim::Unknown),
        }
    }
    match syms.as_slice() {
        [] if r == 0 || t % r != 0 => {
            Err(IrError::invalid("Reshape", format!("cannot reshape {t} elements with -1 over {r}")))
        }
        [] => Ok(Dim::Known(t / r)),
        [s] if t == r => Ok((*s).clone()),
        _ => Ok(Dim::Unknown),
    }
}

fn infer_reshape(x: &Fact, shape: &Fact, allowzero: bool) -> Result<Vec<Fact>> {
    let Some(target) = const_ints(Some(shape)) else {
        let rank = shape.shape.as_ref().and_then(|s| s.0.first()).and_then(Dim::known);
        return Ok(vec![Fact { dtype: x.dtype, shape: rank.map(|r| Shape(vec![Dim::Unknown; r])), value: None }]);
    };
    let input = x.shape.as_ref().map(|s| s.0.clone());
    let dims = match &input {
        Some(i) => reshape_dims(i, &target, allowzero)?,
        None => target
            .iter()
            .map(|&t| if t > 0 || (t == 0 && allowzero) { Dim::Known(t as usize) } else { Dim::Unknown })
            .collect(),
    };
    let shape = Shape(dims);
    Ok(vec![fact_with_reshaped_value(x, shape)])
}

/// A fact of `shape` whose value (if `x` has one) is `x`'s data under that shape.
fn fact_with_reshaped_value(x: &Fact, shape: Shape) -> Fact {
    let value = x.value.as_ref().zip(shape.as_known()).and_then(|(v, s)| v.reshaped(s).ok());
    Fact { dtype: x.dtype, shape: Some(shape), value }
}

fn infer_flatten(x: &Fact, axis: i64) -> Result<Vec<Fact>> {
    let Some(s) = &x.shape else { return Ok(vec![Fact { dtype: x.dtype, shape: None, value: None }]) };
    let r = s.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(IrError::invalid("Flatten", format!("axis {axis} is out of range for rank {r}")));
    }
    let (head, tail) = s.0.split_at(a as usize);
    Ok(vec![fact_with_reshaped_value(x, Shape(vec![dim_product(head), dim_product(tail)]))])
}

fn normalize_axes(axes: &[i64], rank: usize, op: &str) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = axes.iter().map(|&a| normalize_axis(a, rank, op)).collect::<Result<_>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(IrError::invalid(op, format!("repeated axis in {axes:?}")));
    }
    Ok(out)
}

/// Output dims of Squeeze; `axes` None squeezes every dim of size 1.
pub fn squeeze_dims(dims: &[Dim], axes: Option<&[i64]>) -> Result<Option<Vec<Dim>>> {
    let op = "Squeeze";
    match axes {
        None => {
            if dims.iter().any(|d| d.known().is_none()) {
                return Ok(None);
            }
            Ok(Some(dims.iter().filter(|d| **d != Dim::Known(1)).cloned().collect()))
        }
        Some(axes) => {
            let axes = normalize_axes(axes, dims.len(), op)?;
            for &a in &axes {
                if let Dim::Known(n) = dims[a]
                    && n != 1
                {
                    return Err(IrError::invalid(op, format!("cannot squeeze axis {a} of size {n}")));
                }
            }
            Ok(Some(dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect()))
        }
    }
}

fn infer_squeeze(x: &Fact, axes: std::result::Result<Option<Vec<i64>>, ()>) -> Result<Vec<Fact>> {
    let unknown = Fact { dtype: x.dtype, shape: None, value: None };
    let (Some(s), Ok(axes)) = (&x.shape, axes) else { return Ok(vec![unknown]) };
    Ok(vec![match squeeze_dims(&s.0, axes.as_deref())? {
        Some(d) => fact_with_reshaped_value(x, Shape(d)),
        None => unknown,
    }])
}

pub fn unsqueeze_dims(dims: &[Dim], axes: &[i64]) -> Result<Vec<Dim>> {
    let rank = dims.len() + axes.len();
    let axes = normalize_axes(axes, rank, "Unsqueeze")?;
    let mut rest = dims.iter();
    Ok((0..rank)
        .map(|i| if axes.contains(&i) { Dim::Known(1) } else { rest.next().cloned().unwrap_or(Dim::Unknown) })
        .collect())
}

fn infer_unsqueeze(x: &Fact, axes: std::result::Result<Option<Vec<i64>>, ()>) -> Result<Vec<Fact>> {
    let unknown = Fact { dtype: x.dtype, shape: None, value: None };
    let (Some(s), Ok(axes)) = (&x.shape, axes) else { return Ok(vec![unknown]) };
    let axes = axes.ok_or_else(|| IrError::invalid("Unsqueeze", "axes are required"))?;
    Ok(vec![fact_with_reshaped_value(x, Shape(unsqueeze_dims(&s.0, &axes)?))])
}

/// A validated permutation (default: reversed axes).
pub fn permutation(perm: Option<&[i64]>, rank: usize) -> Result<Vec<usize>> {
    let Some(p) = perm else { return Ok((0..rank).rev().collect()) };
    let err = || IrError::invalid("Transpose", format!("perm {p:?} is not a permutation of {rank} axes"));
    if p.len() != rank {
        return Err(err());
    }
    let out: Vec<usize> = p.iter().map(|&a| normalize_axis(a, rank, "Transpose")).collect::<Result<_>>()?;
    let mut seen = vec![false; rank];
    for &a in &out {
        if std::mem::replace(&mut seen[a], true) {
            return Err(err());
        }
    }
    Ok(out)
}

fn infer_transpose(x: &Fact, perm: Option<&[i64]>) -> Result<Vec<Fact>> {
    let shape = match &x.shape {
        Some(s) => {
            let p = permutation(perm, s.rank())?;
            Some(Shape(p.iter().map(|&a| s.0[a].clone()).collect()))
        }
        None => perm.map(|p| Shape(vec![Dim::Unknown; p.len()])),
    };
    Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
}

fn infer_concat(inputs: &[Option<&Fact>], axis: i64) -> Result<Vec<Fact>> {
    let op = "Concat";
    let facts: Vec<&Fact> = inputs.iter().flatten().copied().collect();
    let dtype = facts.iter().find_map(|f| f.dtype);
    let shapes: Vec<&Shape> = facts.iter().filter_map(|f| f.shape.as_ref()).collect();
    let Some(first) = shapes.first() else { return Ok(vec![Fact { dtype, shape: None, value: None }]) };
    let rank = first.rank();
    let a = normalize_axis(axis, rank, op)?;
    let mut dims = first.0.clone();
    for s in &shapes[1..] {
        if s.rank() != rank {
            return Err(IrError::invalid(op, format!("inputs have ranks {rank} and {}", s.rank())));
        }
        for (i, (d, e)) in dims.iter_mut().zip(&s.0).enumerate() {
            if i == a {
                continue;
            }
            if let (Dim::Known(p), Dim::Known(q)) = (&d, e)
                && p != q
            {
                return Err(IrError::invalid(op, format!("inputs differ in dim {i}: {p} and {q}")));
            }
            *d = dim_merge(d, e);
        }
    }
    dims[a] = if shapes.len() == facts.len() {
        dim_sum(&shapes.iter().map(|s| &s.0[a]).collect::<Vec<_>>())
    } else {
        Dim::Unknown
    };
    let values: Option<Vec<&Tensor>> = facts.iter().map(|f| f.value.as_ref()).collect();
    let value = values.filter(|v| v.iter().all(|t| small(t))).and_then(|v| concat_tensors(&v, a).ok());
    Ok(vec![Fact { dtype, shape: Some(Shape(dims)), value }])
}

/// Sizes of Split's outputs along the axis: given, or `n` chunks of ceil(dim / n)
/// with a smaller last one.
pub fn split_sizes(dim: usize, split: Option<&[i64]>, n: usize, op: &str) -> Result<Vec<usize>> {
    if let Some(s) = split {
        let sizes: Vec<usize> = s.iter().map(|&v| to_usize(v, op, "split size")).collect::<Result<_>>()?;
        if sizes.iter().sum::<usize>() != dim {
            return Err(IrError::invalid(op, format!("split {s:?} does not sum to the dim {dim}")));
        }
        return Ok(sizes);
    }
    if n == 0 {
        return Err(IrError::invalid(op, "no outputs"));
    }
    let chunk = dim.div_ceil(n);
    Ok((0..n).map(|i| chunk.min(dim.saturating_sub(i * chunk))).collect())
}

fn infer_split(
    x: &Fact,
    axis: i64,
    split: Option<Vec<i64>>,
    has_split_input: bool,
    n: usize,
    n_outputs: usize,
) -> Result<Vec<Fact>> {
    let op = "Split";
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype); n_outputs]) };
    let a = normalize_axis(axis, s.rank(), op)?;
    if let Some(sp) = &split
        && sp.len() != n_outputs
    {
        return Err(IrError::invalid(op, format!("split has {} entries for {n_outputs} outputs", sp.len())));
    }
    let sizes: Vec<Dim> = match (&s.0[a], &split) {
        (Dim::Known(d), sp) if sp.is_some() || !has_split_input => {
            split_sizes(*d, sp.as_deref(), n, op)?.into_iter().map(Dim::Known).collect()
        }
        (_, Some(sp)) => sp.iter().map(|&v| to_usize(v, op, "split size").map(Dim::Known)).collect::<Result<_>>()?,
        _ => vec![Dim::Unknown; n_outputs],
    };
    Ok(sizes
        .into_iter()
        .map(|d| {
            let mut dims = s.0.clone();
            dims[a] = d;
            Fact { dtype: x.dtype, shape: Some(Shape(dims)), value: None }
        })
        .collect())
}

trait FactExt {
    fn dtype_only_opt(d: Option<DType>) -> Fact;
}
impl FactExt for Fact {
    fn dtype_only_opt(d: Option<DType>) -> Fact {
        Fact { dtype: d, shape: None, value: None }
    }
}

/// Slice parameters as far as they are known: `None` when an input is not constant.
pub struct SliceParams {
    pub starts: Option<Vec<i64>>,
    pub ends: Option<Vec<i64>>,
    pub axes: Option<Option<Vec<i64>>>,
    pub steps: Option<Option<Vec<i64>>>,
}

fn slice_params(attrs: Option<&SliceAttrs>, inputs: &[Option<&Fact>]) -> SliceParams {
    if let Some(a) = attrs {
        return SliceParams {
            starts: Some(a.starts.clone()),
            ends: Some(a.ends.clone()),
            axes: Some(a.axes.clone()),
            steps: Some(None),
        };
    }
    let opt_input = |i| match optional(inputs, i) {
        None => Some(None),
        Some(f) => const_ints(Some(f)).map(Some),
    };
    SliceParams {
        starts: const_ints(optional(inputs, 1)),
        ends: const_ints(optional(inputs, 2)),
        axes: opt_input(3),
        steps: opt_input(4),
    }
}

/// One sliced axis after ONNX's clamping: first index, step, and output length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AxisSlice {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

impl AxisSlice {
    pub fn new(dim: usize, start: i64, end: i64, step: i64) -> Result<AxisSlice> {
        if step == 0 {
            return Err(IrError::invalid("Slice", "step 0"));
        }
        let d = dim as i64;
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (start, end) = (norm(start), norm(end));
        let (start, end) =
            if step > 0 { (start.clamp(0, d), end.clamp(0, d)) } else { (start.clamp(0, d - 1), end.clamp(-1, d - 1)) };
        let len = if step > 0 {
            if end > start { (end - start - 1) / step + 1 } else { 0 }
        } else if start > end {
            (start - end - 1) / (-step) + 1
        } else {
            0
        };
        Ok(AxisSlice { start, step, len: len as usize })
    }

    pub fn full(dim: usize) -> AxisSlice {
        AxisSlice { start: 0, step: 1, len: dim }
    }
}

/// Per-axis slices of a tensor of `shape` (unsliced axes are full).
pub fn slice_axes(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<AxisSlice>> {
    let op = "Slice";
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n) {
        return Err(IrError::invalid(op, "starts, ends, axes and steps differ in length"));
    }
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = normalize_axes_unsorted(axes.unwrap_or(&default_axes), shape.len(), op)?;
    let mut out: Vec<AxisSlice> = shape.iter().map(|&d| AxisSlice::full(d)).collect();
    for (k, &a) in axes.iter().enumerate() {
        let step = steps.map_or(1, |s| s[k]);
        out[a] = AxisSlice::new(shape[a], starts[k], ends[k], step)?;
    }
    Ok(out)
}

fn normalize_axes_unsorted(axes: &[i64], rank: usize, op: &str) -> Result<Vec<usize>> {
    let out: Vec<usize> = axes.iter().map(|&a| normalize_axis(a, rank, op)).collect::<Result<_>>()?;
    let mut sorted = out.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(IrError::invalid(op, format!("repeated axis in {axes:?}")));
    }
    Ok(out)
}

fn infer_slice(x: &Fact, p: &SliceParams) -> Result<Vec<Fact>> {
    let op = "Slice";
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let (Some(starts), Some(ends), Some(axes), Some(steps)) = (&p.starts, &p.ends, &p.axes, &p.steps) else {
        return Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(vec![Dim::Unknown; s.rank()])), value: None }]);
    };
    let n = starts.len();
    if ends.len() != n || axes.as_ref().is_some_and(|a| a.len() != n) || steps.as_ref().is_some_and(|a| a.len() != n) {
        return Err(IrError::invalid(op, "starts, ends, axes and steps differ in length"));
    }
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = normalize_axes_unsorted(axes.as_deref().unwrap_or(&default_axes), s.rank(), op)?;
    let mut dims = s.0.clone();
    for (k, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().map_or(1, |v| v[k]);
        dims[a] = match &s.0[a] {
            Dim::Known(d) => Dim::Known(AxisSlice::new(*d, starts[k], ends[k], step)?.len),
            // Slicing everything keeps a symbolic dim.
            d if starts[k] == 0 && step == 1 && ends[k] >= i32::MAX as i64 => d.clone(),
            _ => Dim::Unknown,
        };
    }
    let value = x.value.as_ref().filter(|v| small(v)).and_then(|v| {
        let sl = slice_axes(
            v.shape(),
            starts,
            ends,
            Some(&axes.iter().map(|&a| a as i64).collect::<Vec<_>>()),
            steps.as_deref(),
        )
        .ok()?;
        slice_tensor(v, &sl).ok()
    });
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value }])
}

fn infer_gather(x: &Fact, idx: &Fact, axis: i64) -> Result<Vec<Fact>> {
    let op = "Gather";
    let (Some(s), Some(is)) = (&x.shape, &idx.shape) else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let a = normalize_axis(axis, s.rank(), op)?;
    if s.rank() == 0 {
        return Err(IrError::invalid(op, "data must have rank >= 1"));
    }
    let dims: Vec<Dim> = s.0[..a].iter().chain(&is.0).chain(&s.0[a + 1..]).cloned().collect();
    let value = match (&x.value, &idx.value) {
        (Some(d), Some(i)) if small(d) && i.len() <= FOLD_LIMIT => {
            i.to_i64_vec().ok().and_then(|iv| gather_tensor(d, a, &iv, i.shape()).ok())
        }
        _ => None,
    };
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value }])
}

fn infer_gather_nd(x: &Fact, idx: &Fact, b: usize) -> Result<Vec<Fact>> {
    let op = "GatherND";
    let (Some(s), Some(is)) = (&x.shape, &idx.shape) else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let Some(last) = is.0.last() else { return Err(IrError::invalid(op, "indices must have rank >= 1")) };
    if b >= s.rank().min(is.rank()) {
        return Err(IrError::invalid(op, format!("batch_dims {b} must be less than both ranks")));
    }
    let Dim::Known(k) = last else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    if b + k > s.rank() {
        return Err(IrError::invalid(op, format!("index tuples of {k} exceed data rank {} - batch_dims", s.rank())));
    }
    let dims = is.0[..is.rank() - 1].iter().chain(&s.0[b + k..]).cloned().collect();
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value: None }])
}

/// Numpy broadcast of a shape with an Expand target (dims are numbers).
fn infer_expand(x: &Fact, shape: &Fact) -> Result<Vec<Fact>> {
    let op = "Expand";
    let Some(target) = const_ints(Some(shape)) else {
        let n = shape.shape.as_ref().and_then(|s| s.0.first()).and_then(Dim::known);
        let shape = match (n, x.rank()) {
            (Some(n), Some(r)) => Some(Shape(vec![Dim::Unknown; n.max(r)])),
            _ => None,
        };
        return Ok(vec![Fact { dtype: x.dtype, shape, value: None }]);
    };
    let t = Shape(target.iter().map(|&v| to_usize(v, op, "shape value").map(Dim::Known)).collect::<Result<_>>()?);
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let out =
        Shape::broadcast(&[s, &t]).ok_or_else(|| IrError::invalid(op, format!("{s} does not broadcast to {t}")))?;
    Ok(vec![Fact { dtype: x.dtype, shape: Some(out), value: None }])
}

fn infer_tile(x: &Fact, repeats: &Fact) -> Result<Vec<Fact>> {
    let op = "Tile";
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let Some(r) = const_ints(Some(repeats)) else {
        return Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(vec![Dim::Unknown; s.rank()])), value: None }]);
    };
    if r.len() != s.rank() {
        return Err(IrError::invalid(op, format!("{} repeats for rank {}", r.len(), s.rank())));
    }
    let dims =
        s.0.iter()
            .zip(&r)
            .map(|(d, &k)| {
                let k = to_usize(k, op, "repeat")?;
                Ok(match d {
                    Dim::Known(n) => Dim::Known(n * k),
                    d if k == 1 => d.clone(),
                    _ => Dim::Unknown,
                })
            })
            .collect::<Result<_>>()?;
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value: None }])
}

/// Per-axis (begin, end) pads of Pad for a tensor of `rank`, given `pads` over `axes`.
pub fn pad_amounts(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let op = "Pad";
    let default_axes: Vec<i64> = (0..rank as i64).collect();
    let axes = normalize_axes_unsorted(axes.unwrap_or(&default_axes), rank, op)?;
    if pads.len() != 2 * axes.len() {
        return Err(IrError::invalid(op, format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    let mut out = vec![(0, 0); rank];
    let n = axes.len();
    for (k, &a) in axes.iter().enumerate() {
        out[a] = (pads[k], pads[k + n]);
    }
    Ok(out)
}

fn infer_pad(x: &Fact, pads: Option<Vec<i64>>, axes: Option<Option<Vec<i64>>>) -> Result<Vec<Fact>> {
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    let axes = match axes {
        None => Some(None),
        Some(Some(a)) => Some(Some(a)),
        Some(None) => None,
    };
    let (Some(pads), Some(axes)) = (pads, axes) else {
        return Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(vec![Dim::Unknown; s.rank()])), value: None }]);
    };
    let amounts = pad_amounts(s.rank(), &pads, axes.as_deref())?;
    let dims =
        s.0.iter()
            .zip(&amounts)
            .map(|(d, &(b, e))| match d {
                Dim::Known(n) => {
                    let v = *n as i64 + b + e;
                    to_usize(v, "Pad", "padded dim").map(Dim::Known)
                }
                d if b == 0 && e == 0 => Ok(d.clone()),
                _ => Ok(Dim::Unknown),
            })
            .collect::<Result<_>>()?;
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value: None }])
}

/// Number of elements of Range(start, limit, delta).
pub fn range_len(start: f64, limit: f64, delta: f64) -> Result<usize> {
    if delta == 0.0 {
        return Err(IrError::invalid("Range", "delta is 0"));
    }
    let n = ((limit - start) / delta).ceil();
    if !n.is_finite() {
        return Err(IrError::invalid("Range", "the number of elements is not finite"));
    }
    Ok(n.max(0.0) as usize)
}

fn infer_range(inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
    let op = "Range";
    let (s, l, d) = (required(inputs, 0, op)?, required(inputs, 1, op)?, required(inputs, 2, op)?);
    // The spec says scalars; exporters (and ONNX's own function bodies) also pass
    // one-element 1-D tensors, which runtimes accept.
    for f in [s, l, d] {
        let one_element =
            f.shape.as_ref().is_none_or(|sh| sh.0.iter().all(|d| *d == Dim::Known(1) || *d == Dim::Unknown));
        if f.rank().is_some_and(|r| r > 1) || !one_element {
            return Err(IrError::invalid(op, "start, limit and delta must be scalars (or one-element tensors)"));
        }
    }
    let dtype = s.dtype.or(l.dtype).or(d.dtype);
    let scalars =
        [s, l, d].map(|f| f.value.as_ref().and_then(|t| t.to_f64_vec().ok()).and_then(|v| v.first().copied()));
    let (shape, value) = match scalars {
        [Some(a), Some(b), Some(c)] => {
            let n = range_len(a, b, c)?;
            let value = (n <= FOLD_LIMIT && matches!(dtype, Some(DType::I64 | DType::I32)))
                .then(|| range_int(a as i64, c as i64, n, dtype.unwrap_or(DType::I64)))
                .flatten();
            (Shape(vec![Dim::Known(n)]), value)
        }
        _ => (Shape(vec![Dim::Unknown]), None),
    };
    Ok(vec![Fact { dtype, shape: Some(shape), value }])
}

fn range_int(start: i64, delta: i64, n: usize, dtype: DType) -> Option<Tensor> {
    let v: Vec<i64> = (0..n as i64).map(|i| start + i * delta).collect();
    match dtype {
        DType::I64 => Tensor::from_vec(vec![n], v).ok(),
        DType::I32 => Tensor::from_vec(vec![n], v.into_iter().map(|x| x as i32).collect()).ok(),
        _ => None,
    }
}

fn infer_onehot(indices: &Fact, depth: &Fact, values: &Fact, axis: i64) -> Result<Vec<Fact>> {
    let Some(s) = &indices.shape else { return Ok(vec![Fact::dtype_only_opt(values.dtype)]) };
    let rank = s.rank() + 1;
    let a = normalize_axis(axis, rank, "OneHot")?;
    let d = depth
        .value
        .as_ref()
        .and_then(|t| t.to_f64_vec().ok())
        .and_then(|v| v.first().copied())
        .filter(|&v| v >= 1.0)
        .map_or(Dim::Unknown, |v| Dim::Known(v as usize));
    let mut dims = s.0.clone();
    dims.insert(a, d);
    Ok(vec![Fact { dtype: values.dtype, shape: Some(Shape(dims)), value: None }])
}

fn infer_space(x: &Fact, b: usize, to_space: bool, op: &str) -> Result<Vec<Fact>> {
    let Some(s) = &x.shape else { return Ok(vec![Fact::dtype_only_opt(x.dtype)]) };
    if s.rank() != 4 {
        return Err(IrError::invalid(op, format!("input must be 4-D, got {s}")));
    }
    if b == 0 {
        return Err(IrError::invalid(op, "blocksize must be positive"));
    }
    let mul = |d: &Dim, k: usize| d.known().map_or(Dim::Unknown, |n| Dim::Known(n * k));
    let div = |d: &Dim, k: usize| -> Result<Dim> {
        match d.known() {
            Some(n) if n % k != 0 => Err(IrError::invalid(op, format!("dim {n} is not divisible by {k}"))),
            Some(n) => Ok(Dim::Known(n / k)),
            None => Ok(Dim::Unknown),
        }
    };
    let d = &s.0;
    let dims = if to_space {
        vec![d[0].clone(), div(&d[1], b * b)?, mul(&d[2], b), mul(&d[3], b)]
    } else {
        vec![d[0].clone(), mul(&d[1], b * b), div(&d[2], b)?, div(&d[3], b)?]
    };
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(dims)), value: None }])
}

/// The [start, end) range of dims that Shape returns, clamped.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    (s, e.max(s))
}

fn infer_shape(x: &Fact, start: i64, end: Option<i64>) -> Fact {
    let Some(s) = &x.shape else {
        return Fact { dtype: Some(DType::I64), shape: Some(Shape(vec![Dim::Unknown])), value: None };
    };
    let (a, b) = shape_range(s.rank(), start, end);
    let dims = &s.0[a..b];
    let value = Shape(dims.to_vec())
        .as_known()
        .and_then(|d| Tensor::from_vec(vec![d.len()], d.into_iter().map(|v| v as i64).collect()).ok());
    Fact { dtype: Some(DType::I64), shape: Some(Shape::known(&[b - a])), value }
}

fn infer_constant_of_shape(shape: &Fact, value: &Tensor) -> Result<Vec<Fact>> {
    let op = "ConstantOfShape";
    let dims = match const_ints(Some(shape)) {
        Some(v) => Some(Shape(v.iter().map(|&d| to_usize(d, op, "dim").map(Dim::Known)).collect::<Result<_>>()?)),
        None => {
            shape.shape.as_ref().and_then(|s| s.0.first()).and_then(Dim::known).map(|n| Shape(vec![Dim::Unknown; n]))
        }
    };
    let folded = dims.as_ref().and_then(Shape::as_known).filter(|d| d.iter().product::<usize>() <= FOLD_LIMIT);
    let folded = folded.and_then(|d| fill_tensor(value, d).ok());
    Ok(vec![Fact { dtype: Some(value.dtype()), shape: dims, value: folded }])
}

// ---------------------------------------------------------------------------------------
// Dtype-agnostic copy primitives (used by folding here and by the CPU kernels)
// ---------------------------------------------------------------------------------------

/// Runs `$body` with `$T` the unsigned integer type of `$dt`'s storage size.
#[macro_export]
macro_rules! with_storage {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt.size() {
            1 => {
                type $T = u8;
                $body
            }
            2 => {
                type $T = u16;
                $body
            }
            4 => {
                type $T = u32;
                $body
            }
            _ => {
                type $T = u64;
                $body
            }
        }
    };
}

/// Row-major strides (in elements) of `shape`.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Merges adjacent dims that are contiguous with each other in the source (and drops
/// dims of size 1), so strided copies run over as few, as long, rows as possible.
pub fn coalesce(shape: &[usize], strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
    let mut sh: Vec<usize> = Vec::with_capacity(shape.len());
    let mut st: Vec<isize> = Vec::with_capacity(shape.len());
    for (&d, &s) in shape.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        match (sh.last_mut(), st.last_mut()) {
            (Some(pd), Some(ps)) if *ps == s * d as isize => {
                *pd *= d;
                *ps = s;
            }
            _ => {
                sh.push(d);
                st.push(s);
            }
        }
    }
    (sh, st)
}

/// `out[i] = src[offset + Σ i_k * strides_k]` over the row-major positions of `shape`:
/// slices (strides × steps), transposes (permuted strides) and broadcasts (stride 0).
/// `out` receives the rows `first_row..` of the outermost dim where `out` is a part
/// of the whole (so callers may split the work over threads).
pub fn strided_copy<T: Copy>(src: &[T], offset: isize, shape: &[usize], strides: &[isize], out: &mut [T]) {
    let (shape, strides) = coalesce(shape, strides);
    strided_rows(src, offset, &shape, &strides, out);
}

fn strided_rows<T: Copy>(src: &[T], offset: isize, shape: &[usize], strides: &[isize], out: &mut [T]) {
    let Some((&inner, outer_dims)) = shape.split_last() else {
        if let Some(o) = out.first_mut() {
            *o = src[offset as usize];
        }
        return;
    };
    let inner_stride = strides[shape.len() - 1];
    let outer_strides = &strides[..shape.len() - 1];
    let mut idx = vec![0usize; outer_dims.len()];
    let mut base = offset;
    for row in out.chunks_mut(inner) {
        if inner_stride == 1 {
            let b = base as usize;
            row.copy_from_slice(&src[b..b + inner]);
        } else {
            let mut p = base;
            for o in row.iter_mut() {
                *o = src[p as usize];
                p += inner_stride;
            }
        }
        // Odometer over the outer dims.
        for k in (0..outer_dims.len()).rev() {
            idx[k] += 1;
            base += outer_strides[k];
            if idx[k] < outer_dims[k] {
                break;
            }
            base -= outer_strides[k] * outer_dims[k] as isize;
            idx[k] = 0;
        }
    }
}

/// Source offset and strides that read the slice `sl` of a row-major tensor of `shape`.
pub fn slice_layout(shape: &[usize], sl: &[AxisSlice]) -> (isize, Vec<usize>, Vec<isize>) {
    let st = strides_of(shape);
    let offset = sl.iter().zip(&st).map(|(s, &k)| s.start as isize * k as isize).sum();
    let strides = sl.iter().zip(&st).map(|(s, &k)| s.step as isize * k as isize).collect();
    (offset, sl.iter().map(|s| s.len).collect(), strides)
}

/// The slice `sl` of `t` (any dtype).
pub fn slice_tensor(t: &Tensor, sl: &[AxisSlice]) -> Result<Tensor> {
    let (offset, shape, strides) = slice_layout(t.shape(), sl);
    let n: usize = shape.iter().product();
    with_storage!(t.dtype(), T => {
        let src = t.as_slice::<T>()?;
        let mut out = vec![T::default(); n];
        if n > 0 {
            strided_copy(&src, offset, &shape, &strides, &mut out);
        }
        Tensor::from_vec_as(t.dtype(), shape, out)
    })
}

/// Concatenation along `axis` as block copies: each outer row takes one block per part.
pub fn concat_blocks<T: Copy>(parts: &[&[T]], blocks: &[usize], out: &mut Vec<T>) {
    let outer = parts.iter().zip(blocks).find(|(_, b)| **b > 0).map_or(0, |(p, b)| p.len() / b);
    for o in 0..outer {
        for (p, &b) in parts.iter().zip(blocks) {
            out.extend_from_slice(&p[o * b..(o + 1) * b]);
        }
    }
}

/// Checks Concat inputs and returns the output shape and each part's block length.
pub fn concat_plan(shapes: &[&[usize]], axis: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let op = "Concat";
    let first = shapes.first().ok_or_else(|| IrError::invalid(op, "no inputs"))?;
    let mut out = first.to_vec();
    out[axis] = 0;
    for s in shapes {
        if s.len() != first.len() || s.iter().zip(*first).enumerate().any(|(i, (a, b))| i != axis && a != b) {
            return Err(IrError::invalid(op, format!("shapes {first:?} and {s:?} differ off axis {axis}")));
        }
        out[axis] += s[axis];
    }
    let blocks = shapes.iter().map(|s| s[axis..].iter().product()).collect();
    Ok((out, blocks))
}

pub fn concat_tensors(ts: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = ts.first().ok_or_else(|| IrError::invalid("Concat", "no inputs"))?;
    if ts.iter().any(|t| t.dtype() != first.dtype()) {
        return Err(IrError::invalid("Concat", "inputs differ in dtype"));
    }
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let (shape, blocks) = concat_plan(&shapes, axis)?;
    with_storage!(first.dtype(), T => {
        let slices = ts.iter().map(|t| t.as_slice::<T>()).collect::<Result<Vec<_>>>()?;
        let parts: Vec<&[T]> = slices.iter().map(|c| c.as_ref()).collect();
        let mut out = Vec::with_capacity(shape.iter().product());
        concat_blocks(&parts, &blocks, &mut out);
        Tensor::from_vec_as(first.dtype(), shape, out)
    })
}

/// Resolves possibly negative indices against `dim`; out of range is an error.
pub fn resolve_indices(indices: &[i64], dim: usize, op: &str) -> Result<Vec<usize>> {
    let d = dim as i64;
    indices
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d } else { i };
            if (0..d).contains(&j) {
                Ok(j as usize)
            } else {
                Err(IrError::invalid(op, format!("index {i} is out of range for a dim of {dim}")))
            }
        })
        .collect()
}

/// Gather along an axis as block copies: `data` is [outer, dim, inner].
pub fn gather_blocks<T: Copy>(data: &[T], dim: usize, inner: usize, indices: &[usize], out: &mut Vec<T>) {
    let outer = data.len().checked_div(dim * inner).unwrap_or(0);
    for o in 0..outer {
        let base = o * dim * inner;
        for &i in indices {
            let s = base + i * inner;
            out.extend_from_slice(&data[s..s + inner]);
        }
    }
}

pub fn gather_tensor(data: &Tensor, axis: usize, indices: &[i64], idx_shape: &[usize]) -> Result<Tensor> {
    let s = data.shape();
    let dim = *s.get(axis).ok_or_else(|| IrError::invalid("Gather", "axis out of range"))?;
    let idx = resolve_indices(indices, dim, "Gather")?;
    let inner: usize = s[axis + 1..].iter().product();
    let shape: Vec<usize> = s[..axis].iter().chain(idx_shape).chain(&s[axis + 1..]).copied().collect();
    with_storage!(data.dtype(), T => {
        let src = data.as_slice::<T>()?;
        let mut out = Vec::with_capacity(shape.iter().product());
        gather_blocks(&src, dim, inner, &idx, &mut out);
        Tensor::from_vec_as(data.dtype(), shape, out)
    })
}

/// A tensor of `shape` filled with the single element of `value`.
pub fn fill_tensor(value: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
    if value.len() != 1 {
        return Err(IrError::invalid("ConstantOfShape", "value must have one element"));
    }
    let n = shape.iter().product();
    with_storage!(value.dtype(), T => {
        let v = value.as_slice::<T>()?[0];
        Tensor::from_vec_as(value.dtype(), shape, vec![v; n])
    })
}
