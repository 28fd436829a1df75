//! Decomposed softmax, normalisations and activations, as exporters spell them, back
//! into the ONNX ops Kiln has kernels for: Softmax, LayerNormalization,
//! RMSNormalization, GroupNormalization, Gelu (erf and tanh forms), Swish (SiLU) and
//! HardSwish.
//!
//! A pattern matches only when its constants are the expected ones (within float
//! tolerance), its reductions run over the same trailing axes with keepdims, every
//! intermediate is read only inside the pattern, and the result keeps the shape and
//! dtype of the input (no broadcast by a constant of higher rank).

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::reduce::{self, GroupAffine, ReduceKind, SoftmaxKind};
use kiln_ir::ops::{ElementwiseOp, ReduceOp};
use kiln_ir::{DType, NodeId, Op, OutletId, Tensor};

use crate::context::Context;
use crate::patch::Patch;
use crate::rewrite::Rewrite;

// ---------------------------------------------------------------------------------
// Small matchers shared by the pattern files.

/// `o`'s producer as a binary op: (op, lhs, rhs).
pub(crate) fn binary(cx: &Context, o: OutletId) -> Option<(BinaryOp, OutletId, OutletId)> {
    match &cx.producer(o).op {
        Op::Elementwise(ElementwiseOp::Binary(b)) if o.slot == 0 => {
            Some((*b, cx.input(o.node, 0)?, cx.input(o.node, 1)?))
        }
        _ => None,
    }
}

/// `o`'s producer as a unary op: (op, input).
pub(crate) fn unary(cx: &Context, o: OutletId) -> Option<(UnaryOp, OutletId)> {
    match &cx.producer(o).op {
        Op::Elementwise(ElementwiseOp::Unary(u)) if o.slot == 0 => Some((*u, cx.input(o.node, 0)?)),
        _ => None,
    }
}

/// Whether `a` and `b` agree within a relative tolerance fit for f32 constants.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1e-30)
}

/// The value of a one-element float constant.
pub(crate) fn float_scalar(cx: &Context, o: OutletId) -> Option<f64> {
    let v = cx.value(o)?;
    if !v.dtype().is_float() {
        return None;
    }
    cx.scalar(o)
}

/// `o` is single-use and produced by a binary `op` with one operand a scalar constant:
/// (the other operand, the constant).
fn with_scalar(cx: &Context, o: OutletId, op: BinaryOp) -> Option<(OutletId, f64)> {
    let (b, l, r) = binary(cx, o)?;
    if b != op {
        return None;
    }
    if let Some(c) = float_scalar(cx, r) {
        return Some((l, c));
    }
    if matches!(op, BinaryOp::Add | BinaryOp::Mul) {
        return float_scalar(cx, l).map(|c| (r, c));
    }
    None
}

/// Flattens the product rooted at `o` through Mul and Div-by-constant nodes read only
/// inside the tree (the root is always expanded). Scalars are multiplied together.
/// Returns (scalar, value factors, nodes of the tree).
fn product(cx: &Context, o: OutletId) -> Option<(f64, Vec<OutletId>, Vec<NodeId>)> {
    let mut scalar = 1.0;
    let mut values = Vec::new();
    let mut nodes = Vec::new();
    let mut stack = vec![(o, true)];
    while let Some((v, root)) = stack.pop() {
        if let Some(c) = float_scalar(cx, v) {
            scalar *= c;
            continue;
        }
        let expand = root || cx.single_use(v);
        match binary(cx, v) {
            Some((BinaryOp::Mul, l, r)) if expand => {
                nodes.push(v.node);
                stack.push((l, false));
                stack.push((r, false));
            }
            Some((BinaryOp::Div, l, r)) if expand && float_scalar(cx, r).is_some_and(|c| c != 0.0) => {
                nodes.push(v.node);
                scalar /= float_scalar(cx, r)?;
                stack.push((l, false));
            }
            _ => values.push(v),
        }
    }
    if nodes.is_empty() {
        return None;
    }
    Some((scalar, values, nodes))
}

/// Whether `o` is a float tensor whose shape equals `like`'s.
fn same_shape(cx: &Context, o: OutletId, like: OutletId) -> bool {
    let (a, b) = (cx.fact(o), cx.fact(like));
    let float = matches!(a.dtype, Some(d) if d.is_float()) && a.dtype == b.dtype;
    float && a.shape.is_some() && a.shape == b.shape
}

/// Every read of `o` comes from one of `nodes`, and `o` is no graph output.
fn only_read_by(cx: &Context, o: OutletId, nodes: &[NodeId]) -> bool {
    !cx.is_output(o) && cx.consumers(o).iter().all(|(n, _)| nodes.contains(n))
}

/// A `Reduce*` of `kind` with keepdims: (input, its normalised sorted axes).
fn reduce_of(cx: &Context, o: OutletId, kind: ReduceKind) -> Option<(OutletId, Vec<usize>)> {
    let Op::Reduce(ReduceOp::Reduce(r)) = &cx.producer(o).op else { return None };
    if r.kind != kind || !r.keepdims {
        return None;
    }
    let x = cx.input(o.node, 0)?;
    let rank = cx.fact(x).rank()?;
    let axes: Vec<i64> = match (&r.axes, cx.input(o.node, 1)) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => cx.value(a)?.to_i64_vec().ok()?,
        (None, None) => vec![],
    };
    let mut norm: Vec<usize> = if axes.is_empty() {
        if r.noop_with_empty_axes {
            return None;
        }
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| {
                let a = if a < 0 { a + rank as i64 } else { a };
                (0..rank as i64).contains(&a).then_some(a as usize)
            })
            .collect::<Option<_>>()?
    };
    norm.sort_unstable();
    norm.dedup();
    Some((x, norm))
}

/// The first axis when `axes` are the trailing axes `a..rank` of a rank-`rank` value.
fn trailing(axes: &[usize], rank: usize) -> Option<usize> {
    let first = *axes.first()?;
    (axes.iter().copied().eq(first..rank)).then_some(first)
}

/// A name for a fused node: the absorbed nodes' names joined by " + ", in graph order.
pub(crate) fn fused_name(cx: &Context, nodes: &[NodeId]) -> String {
    let mut ids = nodes.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(|&n| cx.node(n).name.as_str()).collect::<Vec<_>>().join(" + ")
}

/// A float constant of `dtype` (f32, f64) from f64 values.
pub(crate) fn float_tensor(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Option<Tensor> {
    match dtype {
        DType::F32 => Tensor::from_vec(shape, values.into_iter().map(|v| v as f32).collect()).ok(),
        DType::F64 => Tensor::from_vec(shape, values).ok(),
        _ => None,
    }
}

fn known_dims(cx: &Context, o: OutletId) -> Option<Vec<usize>> {
    cx.fact(o).shape.as_ref()?.as_known()
}

// ---------------------------------------------------------------------------------
// Softmax.

/// `Exp(x - ReduceMax(x)) / ReduceSum(Exp(..))` (or without the max) over one axis.
pub struct SoftmaxPattern;

impl Rewrite for SoftmaxPattern {
    fn name(&self) -> &'static str {
        "softmax-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        let (BinaryOp::Div, e, s) = binary(cx, out)? else { return None };
        let (sum_in, sum_axes) = reduce_of(cx, s, ReduceKind::Sum)?;
        if sum_in != e || sum_axes.len() != 1 || !cx.single_use(s) {
            return None;
        }
        let (UnaryOp::Exp, d) = unary(cx, e)? else { return None };
        let mut nodes = vec![id, s.node, e.node];
        if !only_read_by(cx, e, &nodes) {
            return None;
        }
        // With the max subtracted: Sub(x, ReduceMax(x)) over the same axis.
        let mut x = d;
        if let Some((BinaryOp::Sub, a, m)) = binary(cx, d)
            && let Some((max_in, max_axes)) = reduce_of(cx, m, ReduceKind::Max)
            && max_in == a
        {
            if max_axes != sum_axes || !cx.single_use(m) || !cx.single_use(d) {
                return None;
            }
            nodes.extend([d.node, m.node]);
            x = a;
        }
        if !same_shape(cx, out, x) {
            return None;
        }
        let op = Op::Reduce(ReduceOp::Softmax(reduce::Softmax {
            kind: SoftmaxKind::Softmax,
            axis: sum_axes[0] as i64,
            coerce_2d: false,
        }));
        let mut p = Patch::new();
        let y = p.add(fused_name(cx, &nodes), op, &[x.into()]);
        p.shunt(out, y);
        Some(p)
    }
}

// ---------------------------------------------------------------------------------
// LayerNorm and RMSNorm.

/// (y, axes, eps, nodes) of `Sqrt(ReduceMean(y²) + eps)`.
type Rms = (OutletId, Vec<usize>, f64, Vec<NodeId>);

/// `Sqrt(ReduceMean(y²) + eps)`: (y, axes, eps, nodes).
fn root_mean_square(cx: &Context, o: OutletId) -> Option<Rms> {
    let (UnaryOp::Sqrt, a) = unary(cx, o)? else { return None };
    let (v, eps) = with_scalar(cx, a, BinaryOp::Add)?;
    if eps.is_nan() || eps <= 0.0 {
        return None;
    }
    let (sq, axes) = reduce_of(cx, v, ReduceKind::Mean)?;
    let y = match binary(cx, sq)? {
        (BinaryOp::Pow, y, two) if float_scalar(cx, two).is_some_and(|c| c == 2.0) => y,
        (BinaryOp::Mul, y, z) if y == z => y,
        _ => return None,
    };
    for w in [o, a, v, sq] {
        if !cx.single_use(w) {
            return None;
        }
    }
    Some((y, axes, eps, vec![o.node, a.node, v.node, sq.node]))
}

/// `n / rms` or `n * Reciprocal(rms)` (either order): (n, rms pattern).
fn normalised(cx: &Context, o: OutletId) -> Option<(OutletId, Rms)> {
    let (b, l, r) = binary(cx, o)?;
    let try_div = |n: OutletId, d: OutletId| {
        let (y, axes, eps, mut nodes) = root_mean_square(cx, d)?;
        nodes.push(o.node);
        Some((n, (y, axes, eps, nodes)))
    };
    let try_recip = |n: OutletId, rc: OutletId| {
        let (UnaryOp::Reciprocal, d) = unary(cx, rc)? else { return None };
        if !cx.single_use(rc) {
            return None;
        }
        let (n, (y, axes, eps, mut nodes)) = try_div(n, d)?;
        nodes.push(rc.node);
        Some((n, (y, axes, eps, nodes)))
    };
    match b {
        BinaryOp::Div => try_div(l, r),
        BinaryOp::Mul => try_recip(l, r).or_else(|| try_recip(r, l)),
        _ => None,
    }
}

/// `(x - mean(x)) / sqrt(mean((x - mean(x))²) + eps)` → LayerNormalization (unit scale,
/// zero bias; a following Mul γ / Add β is absorbed by `NormAffine`), and
/// `x / sqrt(mean(x²) + eps)` → RMSNormalization.
pub struct NormPattern;

impl Rewrite for NormPattern {
    fn name(&self) -> &'static str {
        "norm-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        let (n, (y, axes, eps, mut nodes)) = normalised(cx, out)?;
        if n != y {
            return None;
        }
        let rank = cx.fact(n).rank()?;
        let axis = trailing(&axes, rank)?;
        // Centred: n = x - ReduceMean(x) over the same axes → LayerNorm.
        let centred = match binary(cx, n) {
            Some((BinaryOp::Sub, x, m)) => match reduce_of(cx, m, ReduceKind::Mean) {
                Some((mx, max)) if mx == x => Some((x, m, max)),
                _ => None,
            },
            _ => None,
        };
        let (x, is_ln) = match centred {
            Some((x, m, maxes)) => {
                if maxes != axes || !cx.single_use(m) {
                    return None;
                }
                nodes.extend([n.node, m.node]);
                if !only_read_by(cx, n, &nodes) {
                    return None;
                }
                (x, true)
            }
            None => {
                // RMS: x is read by the square and by the division/multiplication.
                (n, false)
            }
        };
        if !same_shape(cx, out, x) {
            return None;
        }
        let dims = known_dims(cx, x)?;
        let norm_shape: Vec<usize> = dims.get(axis..)?.to_vec();
        let count: usize = norm_shape.iter().product();
        let dtype = cx.fact(x).dtype?;
        let mut p = Patch::new();
        let name = fused_name(cx, &nodes);
        let scale = p.constant(format!("{name}/scale"), float_tensor(dtype, norm_shape.clone(), vec![1.0; count])?);
        let stash_type = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let y = if is_ln {
            let bias = p.constant(format!("{name}/bias"), float_tensor(dtype, norm_shape, vec![0.0; count])?);
            let op = Op::Reduce(ReduceOp::LayerNorm(reduce::LayerNorm {
                axis: axis as i64,
                epsilon: eps as f32,
                stash_type,
            }));
            p.add(name, op, &[x.into(), scale, bias])
        } else {
            let op =
                Op::Reduce(ReduceOp::RmsNorm(reduce::RmsNorm { axis: axis as i64, epsilon: eps as f32, stash_type }));
            p.add(name, op, &[x.into(), scale])
        };
        p.shunt(out, y);
        Some(p)
    }
}

/// The values of constant `c` broadcast to `target` (trailing alignment), when `c`'s
/// shape, less leading 1s, broadcasts to it.
fn broadcast_const(cx: &Context, c: OutletId, target: &[usize]) -> Option<Vec<f64>> {
    let t = cx.value(c)?;
    if !t.dtype().is_float() {
        return None;
    }
    let vals = t.to_f64_vec().ok()?;
    let mut shape: Vec<usize> = t.shape().to_vec();
    while shape.len() > target.len() {
        if shape.first() != Some(&1) {
            return None;
        }
        shape.remove(0);
    }
    let pad = target.len() - shape.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad).chain(shape).collect();
    if full.iter().zip(target).any(|(&s, &t)| s != 1 && s != t) {
        return None;
    }
    let n: usize = target.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut rem, mut src, mut stride) = (flat, 0usize, 1usize);
        for d in (0..target.len()).rev() {
            let i = rem % target[d];
            rem /= target[d];
            if full[d] != 1 {
                src += i * stride;
            }
            stride *= full[d];
        }
        out.push(*vals.get(src)?);
    }
    Some(out)
}

/// `Mul(norm, γ)` and `Add(norm, β)` with constant γ/β folded into the scale and bias of
/// a LayerNormalization, RMSNormalization (Mul only) or GroupNormalization whose only
/// reader is that Mul/Add.
pub struct NormAffine;

impl Rewrite for NormAffine {
    fn name(&self) -> &'static str {
        "norm-affine"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        let (b, l, r) = binary(cx, out)?;
        let is_mul = match b {
            BinaryOp::Mul => true,
            BinaryOp::Add => false,
            _ => return None,
        };
        let (nv, c) = if cx.value(r).is_some() { (l, r) } else { (r, l) };
        cx.value(c)?;
        if nv.slot != 0 || !cx.single_use(nv) || !same_shape(cx, out, nv) {
            return None;
        }
        let norm = cx.producer(nv);
        let Op::Reduce(rop) = &norm.op else { return None };
        let x = cx.input(nv.node, 0)?;
        let dims = known_dims(cx, x)?;
        let rank = dims.len();
        let dtype = cx.fact(x).dtype?;
        if norm.outputs.len() > 1 && (1..norm.outputs.len()).any(|s| cx.uses(OutletId::new(nv.node, s)) > 0) {
            return None;
        }
        // The parameter shape and how γ/β broadcast onto it.
        let (param_shape, gamma_target): (Vec<usize>, Vec<usize>) = match rop {
            ReduceOp::LayerNorm(ln) => {
                let a = usize::try_from(if ln.axis < 0 { ln.axis + rank as i64 } else { ln.axis }).ok()?;
                let s = dims.get(a..)?.to_vec();
                (s.clone(), s)
            }
            ReduceOp::RmsNorm(rn) if is_mul => {
                let a = usize::try_from(if rn.axis < 0 { rn.axis + rank as i64 } else { rn.axis }).ok()?;
                let s = dims.get(a..)?.to_vec();
                (s.clone(), s)
            }
            ReduceOp::GroupNorm(gn) if gn.affine == GroupAffine::PerChannel && rank >= 2 => {
                // Per channel: γ must be [C, 1, …] over the axes after the batch.
                let ch = *dims.get(1)?;
                let mut t = vec![ch];
                t.extend(std::iter::repeat_n(1, rank - 2));
                (vec![ch], t)
            }
            _ => return None,
        };
        let g = broadcast_const(cx, c, &gamma_target)?;
        let count: usize = param_shape.iter().product();
        if g.len() != count {
            return None;
        }
        let scale = cx.value(cx.input(nv.node, 1)?)?;
        let scale = scale.to_f64_vec().ok()?;
        if scale.len() != count {
            return None;
        }
        let bias = match cx.input(nv.node, 2) {
            Some(bo) => {
                let v = cx.value(bo)?.to_f64_vec().ok()?;
                (v.len() == count).then_some(v)?
            }
            None => vec![0.0; count],
        };
        let (new_scale, new_bias): (Vec<f64>, Vec<f64>) = if is_mul {
            (scale.iter().zip(&g).map(|(s, g)| s * g).collect(), bias.iter().zip(&g).map(|(b, g)| b * g).collect())
        } else {
            (scale, bias.iter().zip(&g).map(|(b, g)| b + g).collect())
        };
        let name = fused_name(cx, &[nv.node, id]);
        let mut p = Patch::new();
        let s = p.constant(format!("{name}/scale"), float_tensor(dtype, param_shape.clone(), new_scale)?);
        let y = if matches!(rop, ReduceOp::RmsNorm(_)) {
            p.add(name, norm.op.clone(), &[x.into(), s])
        } else {
            let bw = p.constant(format!("{name}/bias"), float_tensor(dtype, param_shape, new_bias)?);
            p.add(name, norm.op.clone(), &[x.into(), s, bw])
        };
        p.shunt(out, y);
        Some(p)
    }
}

// ---------------------------------------------------------------------------------
// GroupNorm, as PyTorch exports it.

/// `Reshape(InstanceNormalization(Reshape(x, [N, G, -1]), 1, 0), shape(x))` →
/// GroupNormalization (unit scale, zero bias per channel; γ/β absorbed by `NormAffine`).
pub struct GroupNormPattern;

impl Rewrite for GroupNormPattern {
    fn name(&self) -> &'static str {
        "groupnorm-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        use kiln_ir::ops::MovementOp;
        let out = OutletId::new(id, 0);
        if !matches!(cx.node(id).op, Op::Movement(MovementOp::Reshape { .. })) {
            return None;
        }
        let inorm = cx.input(id, 0)?;
        let Op::Reduce(ReduceOp::InstanceNorm(inst)) = &cx.producer(inorm).op else { return None };
        let r1 = cx.input(inorm.node, 0)?;
        if !matches!(cx.producer(r1).op, Op::Movement(MovementOp::Reshape { .. })) || inorm.slot != 0 {
            return None;
        }
        let x = cx.input(r1.node, 0)?;
        if !cx.single_use(inorm) || !cx.single_use(r1) || !same_shape(cx, out, x) {
            return None;
        }
        let xd = known_dims(cx, x)?;
        let rd = known_dims(cx, r1)?;
        let (&n, &c) = (xd.first()?, xd.get(1)?);
        let [rn, g, m] = rd[..] else { return None };
        let spatial: usize = xd.get(2..)?.iter().product();
        if rn != n || g == 0 || !c.is_multiple_of(g) || m != c / g * spatial {
            return None;
        }
        // Unit scale and zero bias over the G "channels".
        let ones = cx.value(cx.input(inorm.node, 1)?)?.to_f64_vec().ok()?;
        let zeros = cx.value(cx.input(inorm.node, 2)?)?.to_f64_vec().ok()?;
        if ones.len() != g || zeros.len() != g || ones.iter().any(|&v| v != 1.0) || zeros.iter().any(|&v| v != 0.0) {
            return None;
        }
        let dtype = cx.fact(x).dtype?;
        let name = fused_name(cx, &[r1.node, inorm.node, id]);
        let mut p = Patch::new();
        let s = p.constant(format!("{name}/scale"), float_tensor(dtype, vec![c], vec![1.0; c])?);
        let b = p.constant(format!("{name}/bias"), float_tensor(dtype, vec![c], vec![0.0; c])?);
        let op = Op::Reduce(ReduceOp::GroupNorm(reduce::GroupNorm {
            num_groups: g as i64,
            epsilon: inst.epsilon,
            stash_type: if dtype == DType::F64 { DType::F64 } else { DType::F32 },
            affine: GroupAffine::PerChannel,
        }));
        let y = p.add(name, op, &[x.into(), s, b]);
        p.shunt(out, y);
        Some(p)
    }
}

// ---------------------------------------------------------------------------------
// Activations.

/// `1 + Erf(x / √2)` (or `x · 1/√2`): x.
fn one_plus_erf(cx: &Context, o: OutletId) -> Option<(OutletId, Vec<NodeId>)> {
    let (e, one) = with_scalar(cx, o, BinaryOp::Add)?;
    if !close(one, 1.0) {
        return None;
    }
    let (UnaryOp::Erf, t) = unary(cx, e)? else { return None };
    let (s, vals, tn) = product(cx, t)?;
    let [x] = vals[..] else { return None };
    if !close(s, std::f64::consts::FRAC_1_SQRT_2) || !cx.single_use(e) || !cx.single_use(t) {
        return None;
    }
    let mut nodes = vec![o.node, e.node];
    nodes.extend(tn);
    Some((x, nodes))
}

/// `1 + Tanh(√(2/π) · (x + 0.044715 · x³))`: x.
fn one_plus_tanh(cx: &Context, o: OutletId) -> Option<(OutletId, Vec<NodeId>)> {
    let (th, one) = with_scalar(cx, o, BinaryOp::Add)?;
    if !close(one, 1.0) {
        return None;
    }
    let (UnaryOp::Tanh, t) = unary(cx, th)? else { return None };
    let (k, vals, mut nodes) = product(cx, t)?;
    let [inner] = vals[..] else { return None };
    if !close(k, (2.0 / std::f64::consts::PI).sqrt()) || !cx.single_use(th) || !cx.single_use(t) {
        return None;
    }
    let (BinaryOp::Add, a, b) = binary(cx, inner)? else { return None };
    if !cx.single_use(inner) {
        return None;
    }
    nodes.extend([o.node, th.node, inner.node]);
    // One side is x, the other 0.044715 · x³ (Pow(x, 3) or x·x·x).
    for (x, cube) in [(a, b), (b, a)] {
        let Some((c, vals, cn)) = product(cx, cube) else { continue };
        if !close(c, 0.044715) || !cx.single_use(cube) {
            continue;
        }
        let mut n2 = nodes.clone();
        n2.extend(cn);
        let ok = match vals[..] {
            [p] => match binary(cx, p) {
                Some((BinaryOp::Pow, px, three)) if px == x && float_scalar(cx, three) == Some(3.0) => {
                    cx.single_use(p).then(|| n2.push(p.node)).is_some()
                }
                _ => false,
            },
            [p, q, r] => p == x && q == x && r == x,
            _ => false,
        };
        if ok {
            return Some((x, n2));
        }
    }
    None
}

/// GELU in its erf and tanh forms, in any association and operand order of the
/// products → `Gelu { tanh }`.
pub struct GeluPattern;

impl Rewrite for GeluPattern {
    fn name(&self) -> &'static str {
        "gelu-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        let (BinaryOp::Mul, _, _) = binary(cx, out)? else { return None };
        let (half, vals, mut nodes) = product(cx, out)?;
        if !close(half, 0.5) || vals.len() != 2 {
            return None;
        }
        let mut found = None;
        for (x, term) in [(vals[0], vals[1]), (vals[1], vals[0])] {
            if !cx.single_use(term) {
                continue;
            }
            if let Some((tx, tn)) = one_plus_erf(cx, term)
                && tx == x
            {
                found = Some((x, tn, false));
                break;
            }
            if let Some((tx, tn)) = one_plus_tanh(cx, term)
                && tx == x
            {
                found = Some((x, tn, true));
                break;
            }
        }
        let (x, tn, tanh) = found?;
        nodes.extend(tn);
        if !same_shape(cx, out, x) {
            return None;
        }
        let mut p = Patch::new();
        let y =
            p.add(fused_name(cx, &nodes), Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Gelu { tanh })), &[x.into()]);
        p.shunt(out, y);
        Some(p)
    }
}

/// `x · Sigmoid(x)` → Swish (alpha 1: ONNX Swish is `x · sigmoid(alpha · x)`);
/// `x · HardSigmoid(x; 1/6, 0.5)` and `x · Clip(x + 3, 0, 6) / 6` → HardSwish.
pub struct SwishPattern;

/// Clip's bounds from attributes or constant inputs 1 and 2.
fn clip_bounds(cx: &Context, o: OutletId) -> Option<(OutletId, Option<f64>, Option<f64>)> {
    let Op::Elementwise(ElementwiseOp::Clip { min, max }) = &cx.producer(o).op else { return None };
    let x = cx.input(o.node, 0)?;
    let lo = match cx.input(o.node, 1) {
        Some(m) => Some(float_scalar(cx, m)?),
        None => min.map(f64::from),
    };
    let hi = match cx.input(o.node, 2) {
        Some(m) => Some(float_scalar(cx, m)?),
        None => max.map(f64::from),
    };
    Some((x, lo, hi))
}

impl Rewrite for SwishPattern {
    fn name(&self) -> &'static str {
        "swish-pattern"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let out = OutletId::new(id, 0);
        if !matches!(binary(cx, out)?.0, BinaryOp::Mul | BinaryOp::Div) {
            return None;
        }
        let (s, vals, mut nodes) = product(cx, out)?;
        let [a, b] = vals[..] else { return None };
        let mut found = None;
        for (x, g) in [(a, b), (b, a)] {
            if !cx.single_use(g) {
                continue;
            }
            match unary(cx, g) {
                Some((UnaryOp::Sigmoid, gx)) if gx == x && close(s, 1.0) => {
                    found = Some((x, UnaryOp::Swish { alpha: 1.0 }, vec![g.node]));
                }
                Some((UnaryOp::HardSigmoid { alpha, beta }, gx))
                    if gx == x && close(s, 1.0) && close(alpha.into(), 1.0 / 6.0) && close(beta.into(), 0.5) =>
                {
                    found = Some((x, UnaryOp::HardSwish, vec![g.node]));
                }
                _ => {
                    if let Some((c, Some(lo), Some(hi))) = clip_bounds(cx, g)
                        && lo == 0.0
                        && close(hi, 6.0)
                        && close(s, 1.0 / 6.0)
                        && let Some((cx_in, three)) = with_scalar(cx, c, BinaryOp::Add)
                        && cx_in == x
                        && close(three, 3.0)
                        && cx.single_use(c)
                    {
                        found = Some((x, UnaryOp::HardSwish, vec![g.node, c.node]));
                    }
                }
            }
            if found.is_some() {
                break;
            }
        }
        let (x, op, gn) = found?;
        nodes.extend(gn);
        if !same_shape(cx, out, x) {
            return None;
        }
        let mut p = Patch::new();
        let y = p.add(fused_name(cx, &nodes), Op::Elementwise(ElementwiseOp::Unary(op)), &[x.into()]);
        p.shunt(out, y);
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&SoftmaxPattern, &NormPattern, &GroupNormPattern, &NormAffine, &GeluPattern, &SwishPattern]
}
