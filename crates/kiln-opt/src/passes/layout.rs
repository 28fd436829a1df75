//! Channels-last regions (`Options::layout == Layout::Nhwc`; the default NCHW layout
//! leaves the graph alone). Starting from a 2-D convolution, a region grows through
//! the ops next to it that can compute channels-last: convolutions (also fused ones,
//! and transposed ones), pools, Resize and BatchNorm, wrapped in `ChannelsLast`, and
//! layout-agnostic ops carried as they are (unary elementwise ops; elementwise ops over
//! rank-4 values and constants, whose constants are permuted; channel Concats and
//! Splits, whose axis becomes 3; channel SliceViews, which become a Slice or Split of
//! axis 3 since channels are no longer contiguous). Only convolutions start a region, so
//! a lone pool is left alone. The whole region
//! is rewritten in one patch, with one Transpose per value entering it (NCHW → NHWC)
//! and one per value leaving it (NHWC → NCHW): a chain conv → relu → conv → pool has
//! exactly two.

use std::collections::HashMap;

use kiln_ir::ops::fused::{TO_NCHW, TO_NHWC};
use kiln_ir::ops::movement::SliceAttrs;
use kiln_ir::ops::{ElementwiseOp, FusedOp, MovementOp, NnOp, ReduceOp, VisionOp, normalize_axis};
use kiln_ir::{NodeId, Op, OutletId, Tensor};

use crate::context::{Context, Layout};
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// What a region does with one input of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A rank-4 activation: read channels-last.
    Nhwc,
    /// A constant broadcast against activations: permuted to channels-last.
    Permute,
    /// Read as it is (weights, bias, scalars).
    Keep,
}

/// How a node computes in a region.
#[derive(Clone, Debug)]
enum Kind {
    /// Wrapped in `ChannelsLast`.
    Wrap(Vec<Role>),
    /// The same op (Concat's axis moved to 3).
    Carry(Vec<Role>),
}

impl Kind {
    fn roles(&self) -> &[Role] {
        match self {
            Kind::Wrap(r) | Kind::Carry(r) => r,
        }
    }

    fn role(&self, i: usize) -> Role {
        self.roles().get(i).copied().unwrap_or(Role::Keep)
    }
}

fn rank4(cx: &Context, o: OutletId) -> bool {
    cx.fact(o).rank() == Some(4)
}

/// The role of an operand of a layout-agnostic elementwise op or Concat.
fn operand_role(cx: &Context, o: OutletId) -> Option<Role> {
    match cx.value(o) {
        Some(t) if t.len() == 1 => Some(Role::Keep),
        Some(t) if t.shape().len() <= 4 => Some(Role::Permute),
        Some(_) => None,
        None if rank4(cx, o) => Some(Role::Nhwc),
        None => None,
    }
}

fn operand_roles(cx: &Context, id: NodeId) -> Option<Vec<Role>> {
    let node = cx.node(id);
    let roles: Vec<Role> = node.inputs.iter().map(|o| operand_role(cx, (*o)?)).collect::<Option<_>>()?;
    roles.contains(&Role::Nhwc).then_some(roles)
}

/// How `id` computes channels-last, if it can.
fn kind(cx: &Context, id: NodeId) -> Option<Kind> {
    let node = cx.node(id);
    let splits = matches!(node.op, Op::Movement(MovementOp::Split { .. }) | Op::Fused(FusedOp::SliceView { .. }));
    if node.outputs.is_empty() || (node.outputs.len() > 1 && !splits) {
        return None;
    }
    if !(0..node.outputs.len()).all(|s| rank4(cx, OutletId::new(id, s))) {
        return None;
    }
    let x = cx.input(id, 0)?;
    let activation = rank4(cx, x) && cx.value(x).is_none();
    let first = |n: usize| {
        let mut r = vec![Role::Keep; n];
        if let Some(f) = r.first_mut() {
            *f = Role::Nhwc;
        }
        r
    };
    match &node.op {
        Op::Nn(NnOp::Conv(_) | NnOp::ConvTranspose(_) | NnOp::Pool(_) | NnOp::GlobalPool(_))
        | Op::Vision(VisionOp::Resize(_))
        | Op::Reduce(ReduceOp::BatchNorm(_))
            if activation =>
        {
            Some(Kind::Wrap(first(node.inputs.len())))
        }
        Op::Movement(MovementOp::Split { axis, .. })
            if activation && normalize_axis(*axis, 4, "Split").ok() == Some(1) =>
        {
            Some(Kind::Carry(first(node.inputs.len())))
        }
        Op::Fused(FusedOp::SliceView { axis: 1, windows }) if activation && channel_windows(windows).is_some() => {
            Some(Kind::Carry(first(node.inputs.len())))
        }
        Op::Fused(FusedOp::Layer(l))
            if activation && matches!(*l.core, Op::Nn(NnOp::Conv(_) | NnOp::ConvTranspose(_))) =>
        {
            let mut roles = first(node.inputs.len());
            for (i, r) in roles.iter_mut().enumerate().skip(l.core_inputs.max(1)) {
                let o = cx.input(id, i)?;
                if cx.value(o).is_none() {
                    if !rank4(cx, o) {
                        return None;
                    }
                    *r = Role::Nhwc;
                }
            }
            Some(Kind::Wrap(roles))
        }
        Op::Elementwise(ElementwiseOp::Unary(_) | ElementwiseOp::Clip { .. }) if activation => {
            Some(Kind::Carry(first(node.inputs.len())))
        }
        Op::Elementwise(ElementwiseOp::Binary(_) | ElementwiseOp::Variadic(_)) | Op::Fused(FusedOp::Elementwise(_)) => {
            Some(Kind::Carry(operand_roles(cx, id)?))
        }
        Op::Movement(MovementOp::Concat { axis }) if normalize_axis(*axis, 4, "Concat").ok() == Some(1) => {
            concat_kind(cx, id)
        }
        // Channels-last, the channel slices are no longer contiguous: a plain Concat.
        Op::Fused(FusedOp::ConcatInPlace { axis: 1 }) => concat_kind(cx, id),
        _ => None,
    }
}

/// The op computing a channel SliceView channels-last: one window is a Slice of axis 3,
/// windows that tile the channels from 0 are a Split of axis 3.
fn channel_windows(windows: &[(usize, usize)]) -> Option<Op> {
    match windows {
        [(start, len)] => {
            let (s, e) = (i64::try_from(*start).ok()?, i64::try_from(start + len).ok()?);
            let attrs = SliceAttrs { starts: vec![s], ends: vec![e], axes: Some(vec![3]) };
            Some(Op::Movement(MovementOp::Slice { attrs: Some(attrs) }))
        }
        _ => {
            let mut at = 0;
            let mut split = Vec::with_capacity(windows.len());
            for &(start, len) in windows {
                if start != at {
                    return None;
                }
                at += len;
                split.push(i64::try_from(len).ok()?);
            }
            Some(Op::Movement(MovementOp::Split { axis: 3, split: Some(split), num_outputs: None }))
        }
    }
}

fn concat_kind(cx: &Context, id: NodeId) -> Option<Kind> {
    let node = cx.node(id);
    let roles = operand_roles(cx, id)?;
    // A permuted constant of lower rank would not be rank 4 for Concat.
    let ok = node.inputs.iter().zip(&roles).all(|(o, r)| *r == Role::Nhwc || o.is_some_and(|o| rank4(cx, o)));
    ok.then_some(Kind::Carry(roles))
}

/// `t` read as rank 4 (leading 1s added) and permuted by `perm`.
fn permute_tensor(t: &Tensor, perm: &[usize; 4]) -> Option<Tensor> {
    let r = t.shape().len();
    if r > 4 {
        return None;
    }
    let mut shape = vec![1usize; 4 - r];
    shape.extend_from_slice(t.shape());
    let es = t.dtype().size();
    let bytes = t.bytes();
    if bytes.len() != t.len() * es {
        return None;
    }
    let strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1];
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut out = Vec::with_capacity(bytes.len());
    for a in 0..out_shape[0] {
        for b in 0..out_shape[1] {
            for c in 0..out_shape[2] {
                for d in 0..out_shape[3] {
                    let idx = [a, b, c, d];
                    let src: usize = (0..4).map(|k| idx[k] * strides[perm[k]]).sum();
                    out.extend_from_slice(bytes.get(src * es..(src + 1) * es)?);
                }
            }
        }
    }
    Tensor::from_bytes(t.dtype(), out_shape, out.into()).ok()
}

/// The region grown from the convolution `seed`, with each member's kind.
fn region(cx: &Context, seed: NodeId, seed_kind: Kind) -> HashMap<NodeId, Kind> {
    let mut members: HashMap<NodeId, Kind> = HashMap::from([(seed, seed_kind)]);
    let reads_nhwc = |members: &HashMap<NodeId, Kind>, c: NodeId, pos: usize| {
        members.get(&c).is_some_and(|k| k.role(pos) == Role::Nhwc)
    };
    loop {
        let mut added: Vec<(NodeId, Kind)> = Vec::new();
        let mut ids: Vec<NodeId> = members.keys().copied().collect();
        ids.sort_unstable();
        for m in ids {
            // Downstream: readers of the member's output that read it channels-last.
            let slots = cx.node(m).outputs.len();
            for &(c, pos) in (0..slots).flat_map(|s| cx.consumers(OutletId::new(m, s))) {
                if members.contains_key(&c) || added.iter().any(|(a, _)| *a == c) || !cx.is_live(c) {
                    continue;
                }
                if let Some(k) = kind(cx, c)
                    && k.role(pos) == Role::Nhwc
                {
                    added.push((c, k));
                }
            }
            // Upstream: producers of its activations that are convolutions or pools, or
            // whose output only the region reads.
            let Some(mk) = members.get(&m) else { continue };
            for (pos, role) in mk.roles().iter().enumerate() {
                let Some(o) = cx.input(m, pos) else { continue };
                if *role != Role::Nhwc || members.contains_key(&o.node) {
                    continue;
                }
                if added.iter().any(|(a, _)| *a == o.node) {
                    continue;
                }
                let Some(k) = kind(cx, o.node) else { continue };
                let outs = (0..cx.node(o.node).outputs.len()).map(|s| OutletId::new(o.node, s));
                let inside = outs.into_iter().all(|o| {
                    !cx.is_output(o)
                        && cx.consumers(o).iter().all(|&(c, p)| !cx.is_live(c) || reads_nhwc(&members, c, p))
                });
                if matches!(k, Kind::Wrap(_)) || inside {
                    added.push((o.node, k));
                }
            }
        }
        if added.is_empty() {
            return members;
        }
        members.extend(added);
    }
}

/// Rewrites the channels-last region around a convolution.
pub struct ChannelsLastRegion;

impl Rewrite for ChannelsLastRegion {
    fn name(&self) -> &'static str {
        "channels-last"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        if cx.options.layout != Layout::Nhwc {
            return None;
        }
        let is_conv = match &cx.node(id).op {
            Op::Nn(NnOp::Conv(_)) => true,
            Op::Fused(FusedOp::Layer(l)) => matches!(*l.core, Op::Nn(NnOp::Conv(_))),
            _ => false,
        };
        if !is_conv {
            return None;
        }
        let seed_kind = kind(cx, id)?;
        let members = region(cx, id, seed_kind);
        let order: Vec<NodeId> = cx.graph.eval_order().ok()?.into_iter().filter(|n| members.contains_key(n)).collect();
        let to_nhwc =
            || Op::Movement(MovementOp::Transpose { perm: Some(TO_NHWC.iter().map(|&p| p as i64).collect()) });
        let to_nchw =
            || Op::Movement(MovementOp::Transpose { perm: Some(TO_NCHW.iter().map(|&p| p as i64).collect()) });

        let mut p = Patch::new();
        let mut new_out: HashMap<OutletId, Wire> = HashMap::new();
        let mut entries: HashMap<OutletId, Wire> = HashMap::new();
        let mut exits: HashMap<OutletId, Wire> = HashMap::new();
        let exit = |p: &mut Patch, exits: &mut HashMap<OutletId, Wire>, new: Wire, o: OutletId| match exits.get(&o) {
            Some(w) => *w,
            None => {
                let w = p.add(format!("{}/to_nchw", cx.graph.outlet_name(o)), to_nchw(), &[new]);
                exits.insert(o, w);
                w
            }
        };
        for &m in &order {
            let node = cx.node(m);
            let k = members.get(&m)?;
            let mut inputs: Vec<Option<Wire>> = Vec::with_capacity(node.inputs.len());
            for (i, o) in node.inputs.iter().enumerate() {
                let Some(o) = *o else {
                    inputs.push(None);
                    continue;
                };
                let w = match (k.role(i), new_out.get(&o)) {
                    (Role::Nhwc, Some(w)) => *w,
                    (Role::Nhwc, None) => match entries.get(&o) {
                        Some(w) => *w,
                        None => {
                            let name = format!("{}/to_nhwc", cx.graph.outlet_name(o));
                            let w = p.add(name, to_nhwc(), &[Wire::Graph(o)]);
                            entries.insert(o, w);
                            w
                        }
                    },
                    (Role::Permute, _) => {
                        let t = permute_tensor(cx.value(o)?, &TO_NHWC)?;
                        p.constant(format!("{}/nhwc", cx.graph.outlet_name(o)), t)
                    }
                    (Role::Keep, Some(w)) => exit(&mut p, &mut exits, *w, o),
                    (Role::Keep, None) => Wire::Graph(o),
                };
                inputs.push(Some(w));
            }
            let op = match (k, &node.op) {
                (Kind::Wrap(roles), op) => {
                    let nhwc = (0..roles.len()).filter(|&i| roles[i] == Role::Nhwc).collect();
                    Op::Fused(FusedOp::ChannelsLast { op: Box::new(op.clone()), nhwc })
                }
                (
                    Kind::Carry(_),
                    Op::Movement(MovementOp::Concat { .. }) | Op::Fused(FusedOp::ConcatInPlace { .. }),
                ) => Op::Movement(MovementOp::Concat { axis: 3 }),
                (Kind::Carry(_), Op::Movement(MovementOp::Split { split, .. })) => {
                    Op::Movement(MovementOp::Split { axis: 3, split: split.clone(), num_outputs: None })
                }
                (Kind::Carry(_), Op::Fused(FusedOp::SliceView { windows, .. })) => channel_windows(windows)?,
                (Kind::Carry(_), op) => op.clone(),
            };
            let n = node.outputs.len();
            for (slot, w) in p.add_multi(node.name.clone(), op, inputs, n).into_iter().enumerate() {
                new_out.insert(OutletId::new(m, slot), w);
            }
        }
        for &m in &order {
            for slot in 0..cx.node(m).outputs.len() {
                let o = OutletId::new(m, slot);
                let outside = cx.is_output(o)
                    || cx
                        .consumers(o)
                        .iter()
                        .filter(|&&(c, _)| cx.is_live(c))
                        .any(|&(c, pos)| members.get(&c).is_none_or(|k| k.role(pos) != Role::Nhwc));
                if outside {
                    let w = exit(&mut p, &mut exits, *new_out.get(&o)?, o);
                    p.shunt(o, w);
                }
            }
        }
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&ChannelsLastRegion]
}
