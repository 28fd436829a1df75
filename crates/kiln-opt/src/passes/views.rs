//! Slices that are views: a Slice (constant starts/ends, unit steps, one sliced axis) or
//! a Split whose dims before the axis are all 1 reads contiguous windows of its input's
//! buffer, so it becomes a `SliceView` that shares the input's bytes instead of copying.
//! Reshape, Flatten, Squeeze and Unsqueeze are views on every backend already.

use kiln_ir::ops::movement::{slice_axes, split_sizes};
use kiln_ir::ops::{FusedOp, MovementOp, normalize_axis};
use kiln_ir::{NodeId, Op, OutletId};

use crate::context::Context;
use crate::patch::{Patch, Wire};
use crate::rewrite::Rewrite;

/// The axis and `(start, len)` windows of a Slice or Split that can be a view of its
/// input, or `None`.
pub fn view_windows(cx: &Context, id: NodeId) -> Option<(usize, Vec<(usize, usize)>)> {
    let node = cx.node(id);
    let Op::Movement(m) = &node.op else { return None };
    let x = cx.input(id, 0)?;
    let shape = cx.fact(x).shape.as_ref()?.as_known()?;
    let (axis, windows) = match m {
        MovementOp::Slice { attrs } => {
            if node.outputs.len() != 1 {
                return None;
            }
            let ints = |i: usize| -> Option<Option<Vec<i64>>> {
                match cx.input(id, i) {
                    None => Some(None),
                    Some(o) => cx.value(o)?.to_i64_vec().ok().map(Some),
                }
            };
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (ints(1)??, ints(2)??, ints(3)?, ints(4)?),
            };
            if steps.as_ref().is_some_and(|s| s.iter().any(|&v| v != 1)) {
                return None;
            }
            let sl = slice_axes(&shape, &starts, &ends, axes.as_deref(), steps.as_deref()).ok()?;
            let sliced: Vec<usize> =
                (0..shape.len()).filter(|&a| sl[a].start != 0 || sl[a].len != shape[a] || sl[a].step != 1).collect();
            let [axis] = sliced.as_slice() else { return None };
            let s = sl.get(*axis)?;
            (*axis, vec![(usize::try_from(s.start).ok()?, s.len)])
        }
        MovementOp::Split { axis, split, num_outputs } => {
            let axis = normalize_axis(*axis, shape.len(), "Split").ok()?;
            let split = match (split, cx.input(id, 1)) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(o)) => Some(cx.value(o)?.to_i64_vec().ok()?),
                (None, None) => None,
            };
            let n = num_outputs.unwrap_or(node.outputs.len());
            let sizes = split_sizes(*shape.get(axis)?, split.as_deref(), n, "Split").ok()?;
            if sizes.len() != node.outputs.len() {
                return None;
            }
            let mut start = 0;
            let windows = sizes
                .iter()
                .map(|&len| {
                    start += len;
                    (start - len, len)
                })
                .collect();
            (axis, windows)
        }
        _ => return None,
    };
    if shape.get(..axis)?.iter().any(|&d| d != 1) {
        return None;
    }
    Some((axis, windows))
}

/// Slice / Split → SliceView.
pub struct SliceToView;

impl Rewrite for SliceToView {
    fn name(&self) -> &'static str {
        "slice-view"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let (axis, windows) = view_windows(cx, id)?;
        let node = cx.node(id);
        let x = cx.input(id, 0)?;
        let n = windows.len();
        let mut p = Patch::new();
        let outs = p.add_multi(
            node.name.clone(),
            Op::Fused(FusedOp::SliceView { axis, windows }),
            vec![Some(Wire::Graph(x))],
            n,
        );
        for (slot, w) in outs.into_iter().enumerate() {
            p.shunt(OutletId::new(id, slot), w);
        }
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&SliceToView]
}
