//! Shape subgraphs of dynamic models (`Shape → Gather → Unsqueeze → Concat → Reshape`):
//! the value of a small integer tensor is tracked element by element, each a known
//! number or a dim of some tensor, and so is the shape of every tensor (a dim that
//! inference left unknown is still known to equal some other one: the same row count
//! through MatMul, elementwise ops, Transpose…).
//!
//! Rewrites: a shape value that is fully known becomes a constant; a Reshape whose
//! target is provable from its input's dims gets a constant target (0 copies a dim,
//! -1 infers one); an Expand that provably broadcasts to its input's shape is removed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use kiln_ir::ops::elementwise::CompareOp;
use kiln_ir::ops::movement::{AxisSlice, permutation, shape_range};
use kiln_ir::ops::{ElementwiseOp, MovementOp, NnOp, normalize_axis};
use kiln_ir::{DType, Dim, NodeId, Op, OutletId, Tensor};

use crate::context::Context;
use crate::patch::{Patch, compatible};
use crate::rewrite::Rewrite;

/// One element of a shape value, or one dim of a tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Elem {
    Num(i64),
    Sym(Arc<str>),
    /// Dim `axis` of `outlet`, whatever it is at run time.
    Of(OutletId, usize),
}

impl Elem {
    fn num(&self) -> Option<i64> {
        match self {
            Elem::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn from_dim(d: &Dim) -> Option<Elem> {
        match d {
            Dim::Known(n) => i64::try_from(*n).ok().map(Elem::Num),
            Dim::Sym(s) => Some(Elem::Sym(s.clone())),
            Dim::Unknown => None,
        }
    }
}

/// The value of a 0-D or 1-D integer tensor.
#[derive(Clone, Debug)]
struct SymVal {
    scalar: bool,
    elems: Vec<Elem>,
}

const MAX_ELEMS: usize = 64;
const MAX_DEPTH: usize = 400;

/// Symbolic values and shapes, memoised for one rewrite call.
struct Tracker<'c, 'a> {
    cx: &'c Context<'a>,
    shapes: RefCell<HashMap<OutletId, Option<Vec<Elem>>>>,
    values: RefCell<HashMap<OutletId, Option<SymVal>>>,
    depth: Cell<usize>,
}

fn is_index(dt: Option<DType>) -> bool {
    matches!(dt, Some(DType::I64 | DType::I32))
}

/// Numpy broadcast of symbolic shapes; `None` at a position that is not provable.
fn broadcast(shapes: &[Vec<Elem>]) -> Vec<Option<Elem>> {
    let rank = shapes.iter().map(Vec::len).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            let at: Vec<&Elem> = shapes
                .iter()
                .filter_map(|s| (i + s.len()).checked_sub(rank).and_then(|k| s.get(k)))
                .filter(|e| **e != Elem::Num(1))
                .collect();
            match at.as_slice() {
                [] => Some(Elem::Num(1)),
                [first, rest @ ..] => {
                    if let Some(n) = at.iter().find(|e| e.num().is_some()) {
                        Some((*n).clone())
                    } else if rest.iter().all(|e| e == first) {
                        Some((*first).clone())
                    } else {
                        None
                    }
                }
            }
        })
        .collect()
}

/// The dim a -1 in a Reshape target stands for: the input's dims over the target's
/// others, where they cancel to one element.
fn inferred(input: &[Elem], rest: &[Elem]) -> Option<Elem> {
    let split = |v: &[Elem]| -> (i64, Vec<Elem>) {
        let p = v.iter().filter_map(Elem::num).product();
        (p, v.iter().filter(|e| e.num().is_none()).cloned().collect())
    };
    let ((p_in, mut s_in), (p_out, s_out)) = (split(input), split(rest));
    for e in s_out {
        let k = s_in.iter().position(|x| *x == e)?;
        s_in.remove(k);
    }
    match s_in.as_slice() {
        [] if p_out > 0 && p_in % p_out == 0 => Some(Elem::Num(p_in / p_out)),
        [e] if p_in == p_out => Some(e.clone()),
        _ => None,
    }
}

trait PositionsNone {
    fn positions_none(self) -> Vec<usize>;
}

impl<'x, T: 'x, I: Iterator<Item = &'x Option<T>>> PositionsNone for I {
    fn positions_none(self) -> Vec<usize> {
        self.enumerate().filter(|(_, o)| o.is_none()).map(|(i, _)| i).collect()
    }
}

impl<'c, 'a> Tracker<'c, 'a> {
    fn new(cx: &'c Context<'a>) -> Self {
        Tracker { cx, shapes: RefCell::default(), values: RefCell::default(), depth: Cell::new(0) }
    }

    fn input(&self, id: NodeId, i: usize) -> Option<OutletId> {
        self.cx.input(id, i)
    }

    fn deeper<T>(&self, f: impl FnOnce() -> Option<T>) -> Option<T> {
        if self.depth.get() > MAX_DEPTH {
            return None;
        }
        self.depth.set(self.depth.get() + 1);
        let r = f();
        self.depth.set(self.depth.get() - 1);
        r
    }

    /// Constant integers of `o`.
    fn ints(&self, o: Option<OutletId>) -> Option<Vec<i64>> {
        self.cx.value(o?)?.to_i64_vec().ok()
    }

    /// The symbolic shape of `o` (its rank must be known).
    fn shape(&self, o: OutletId) -> Option<Vec<Elem>> {
        if let Some(s) = self.shapes.borrow().get(&o) {
            return s.clone();
        }
        let dims = &self.cx.fact(o).shape.as_ref()?.0;
        let direct: Option<Vec<Elem>> = dims.iter().map(Elem::from_dim).collect();
        let result = match direct {
            Some(d) => d,
            None => {
                let rule = self.deeper(|| self.shape_rule(o)).filter(|r| r.len() == dims.len());
                dims.iter()
                    .enumerate()
                    .map(|(i, d)| {
                        Elem::from_dim(d).or_else(|| rule.as_ref().and_then(|r| r[i].clone())).unwrap_or(Elem::Of(o, i))
                    })
                    .collect()
            }
        };
        self.shapes.borrow_mut().insert(o, Some(result.clone()));
        Some(result)
    }

    /// The shape of `o` from its op's rule, where inference left dims unknown.
    fn shape_rule(&self, o: OutletId) -> Option<Vec<Option<Elem>>> {
        if o.slot != 0 {
            return None;
        }
        let id = o.node;
        let node = self.cx.node(id);
        let sh = |i: usize| self.input(id, i).and_then(|x| self.shape(x));
        let same = |i: usize| sh(i).map(|s| s.into_iter().map(Some).collect());
        match &node.op {
            Op::Elementwise(e) => match e {
                ElementwiseOp::Binary(kiln_ir::ops::elementwise::BinaryOp::PRelu) => same(0),
                ElementwiseOp::Binary(_)
                | ElementwiseOp::Compare(_)
                | ElementwiseOp::Logic(_)
                | ElementwiseOp::Variadic(_)
                | ElementwiseOp::Where => {
                    let shapes: Option<Vec<Vec<Elem>>> = node.inputs.iter().flatten().map(|&x| self.shape(x)).collect();
                    Some(broadcast(&shapes?))
                }
                _ => same(0),
            },
            Op::Reduce(r) => {
                use kiln_ir::ops::OpFamily;
                let keeps = matches!(
                    r.name(),
                    "Softmax"
                        | "LogSoftmax"
                        | "Hardmax"
                        | "LayerNormalization"
                        | "BatchNormalization"
                        | "InstanceNormalization"
                        | "GroupNormalization"
                        | "RMSNormalization"
                        | "LRN"
                        | "MeanVarianceNormalization"
                );
                if keeps { same(0) } else { None }
            }
            Op::Nn(NnOp::MatMul) => {
                let (a, b) = (sh(0)?, sh(1)?);
                if a.len() < 2 || b.len() < 2 {
                    return None;
                }
                let batch = broadcast(&[a[..a.len() - 2].to_vec(), b[..b.len() - 2].to_vec()]);
                let mut out = batch;
                out.push(Some(a[a.len() - 2].clone()));
                out.push(Some(b[b.len() - 1].clone()));
                Some(out)
            }
            Op::Movement(m) => self.movement_shape(id, m),
            _ => None,
        }
    }

    fn movement_shape(&self, id: NodeId, m: &MovementOp) -> Option<Vec<Option<Elem>>> {
        let sh = |i: usize| self.input(id, i).and_then(|x| self.shape(x));
        let out_rank = self.cx.fact(OutletId::new(id, 0)).rank()?;
        match m {
            MovementOp::Transpose { perm } => {
                let x = sh(0)?;
                let p = permutation(perm.as_deref(), x.len()).ok()?;
                Some(p.iter().map(|&a| x.get(a).cloned()).collect())
            }
            MovementOp::Unsqueeze { axes } => {
                let axes = axes.clone().or_else(|| self.ints(self.input(id, 1)))?;
                let axes: Vec<usize> =
                    axes.iter().map(|&a| normalize_axis(a, out_rank, "Unsqueeze").ok()).collect::<Option<_>>()?;
                let mut rest = sh(0)?.into_iter();
                Some((0..out_rank).map(|i| if axes.contains(&i) { Some(Elem::Num(1)) } else { rest.next() }).collect())
            }
            MovementOp::Squeeze { axes } => {
                let x = sh(0)?;
                let axes = axes.clone().or_else(|| self.ints(self.input(id, 1)))?;
                let axes: Vec<usize> =
                    axes.iter().map(|&a| normalize_axis(a, x.len(), "Squeeze").ok()).collect::<Option<_>>()?;
                Some(x.into_iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, e)| Some(e)).collect())
            }
            MovementOp::Reshape { allowzero } => {
                let x = sh(0)?;
                let t = self.value(self.input(id, 1)?)?;
                let mut out: Vec<Option<Elem>> = t
                    .elems
                    .iter()
                    .enumerate()
                    .map(|(i, e)| match e {
                        Elem::Num(0) if !allowzero => x.get(i).cloned(),
                        Elem::Num(n) if *n >= 0 => Some(e.clone()),
                        Elem::Num(_) => None,
                        _ => Some(e.clone()),
                    })
                    .collect();
                if let [k] = out.iter().positions_none()[..] {
                    let rest: Vec<Elem> = out.iter().flatten().cloned().collect();
                    out[k] = inferred(&x, &rest);
                }
                Some(out)
            }
            MovementOp::Slice { attrs } => {
                let x = sh(0)?;
                let (starts, ends, axes, steps) = match attrs {
                    Some(a) => (Some(a.starts.clone()), Some(a.ends.clone()), a.axes.clone(), None),
                    None => (
                        self.ints(self.input(id, 1)),
                        self.ints(self.input(id, 2)),
                        match self.input(id, 3) {
                            None => None,
                            Some(a) => Some(self.ints(Some(a))?),
                        },
                        match self.input(id, 4) {
                            None => None,
                            Some(a) => Some(self.ints(Some(a))?),
                        },
                    ),
                };
                let n = axes.as_ref().map(Vec::len).or(starts.as_ref().map(Vec::len))?;
                let axes: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&v| normalize_axis(v, x.len(), "Slice").ok()).collect::<Option<_>>()?,
                    None => (0..n).collect(),
                };
                let mut out: Vec<Option<Elem>> = x.iter().cloned().map(Some).collect();
                for (k, &a) in axes.iter().enumerate() {
                    let full = starts.as_ref().and_then(|s| s.get(k)) == Some(&0)
                        && ends.as_ref().and_then(|e| e.get(k)).is_some_and(|&e| e >= i32::MAX as i64)
                        && steps.as_ref().is_none_or(|s| s.get(k) == Some(&1));
                    if !full {
                        *out.get_mut(a)? = None;
                    }
                }
                Some(out)
            }
            MovementOp::Expand => {
                let x = sh(0)?;
                let t = self.value(self.input(id, 1)?)?;
                Some(broadcast(&[x, t.elems]))
            }
            MovementOp::ConstantOfShape { .. } => {
                Some(self.value(self.input(id, 0)?)?.elems.into_iter().map(Some).collect())
            }
            MovementOp::Range => {
                let scalar =
                    |i| self.value(self.input(id, i)?).filter(|v| v.elems.len() == 1).map(|v| v.elems[0].clone());
                let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
                (start == Elem::Num(0) && delta == Elem::Num(1)).then(|| vec![Some(limit)])
            }
            MovementOp::Gather { axis } => {
                let (x, idx) = (sh(0)?, sh(1)?);
                let a = normalize_axis(*axis, x.len(), "Gather").ok().filter(|&a| a < x.len())?;
                Some(x.get(..a)?.iter().chain(&idx).chain(x.get(a + 1..)?).cloned().map(Some).collect())
            }
            MovementOp::Concat { axis } => {
                let shapes: Vec<Vec<Elem>> =
                    self.cx.node(id).inputs.iter().flatten().map(|&x| self.shape(x)).collect::<Option<_>>()?;
                let first = shapes.first()?;
                let a = normalize_axis(*axis, first.len(), "Concat").ok()?;
                Some(
                    (0..first.len())
                        .map(|i| {
                            if i == a {
                                shapes.iter().map(|s| s.get(i).and_then(Elem::num)).sum::<Option<i64>>().map(Elem::Num)
                            } else {
                                let at: Vec<&Elem> = shapes.iter().filter_map(|s| s.get(i)).collect();
                                at.iter().find(|e| !matches!(e, Elem::Of(..))).or(at.first()).map(|e| (*e).clone())
                            }
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// The symbolic value of a small 0-D or 1-D integer tensor.
    fn value(&self, o: OutletId) -> Option<SymVal> {
        if let Some(v) = self.values.borrow().get(&o) {
            return v.clone();
        }
        let v = self.deeper(|| self.value_rule(o)).filter(|v| v.elems.len() <= MAX_ELEMS);
        self.values.borrow_mut().insert(o, v.clone());
        v
    }

    fn value_rule(&self, o: OutletId) -> Option<SymVal> {
        if let Some(t) = self.cx.value(o) {
            if t.rank() > 1 || t.len() > MAX_ELEMS || !t.dtype().is_integer() {
                return None;
            }
            let elems = t.to_i64_vec().ok()?.into_iter().map(Elem::Num).collect();
            return Some(SymVal { scalar: t.rank() == 0, elems });
        }
        if !is_index(self.cx.fact(o).dtype) || o.slot != 0 {
            return None;
        }
        let id = o.node;
        let node = self.cx.node(id);
        let val = |i: usize| self.input(id, i).and_then(|x| self.value(x));
        let vector = |i: usize| val(i).filter(|v| !v.scalar);
        match &node.op {
            Op::Movement(MovementOp::Shape { start, end }) => {
                let s = self.shape(self.input(id, 0)?)?;
                let (a, b) = shape_range(s.len(), *start, *end);
                Some(SymVal { scalar: false, elems: s.get(a..b)?.to_vec() })
            }
            Op::Movement(MovementOp::Gather { axis }) => {
                let data = vector(0)?;
                normalize_axis(*axis, 1, "Gather").ok()?;
                let idx = self.cx.value(self.input(id, 1)?)?;
                if idx.rank() > 1 {
                    return None;
                }
                let n = data.elems.len() as i64;
                let elems = idx
                    .to_i64_vec()
                    .ok()?
                    .into_iter()
                    .map(|i| {
                        let j = if i < 0 { i + n } else { i };
                        usize::try_from(j).ok().and_then(|j| data.elems.get(j).cloned())
                    })
                    .collect::<Option<_>>()?;
                Some(SymVal { scalar: idx.rank() == 0, elems })
            }
            Op::Movement(MovementOp::Slice { attrs }) => {
                let data = vector(0)?;
                let (starts, ends, axes, steps) = match attrs {
                    Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                    None => {
                        let opt = |i| match self.input(id, i) {
                            None => Some(None),
                            Some(x) => self.ints(Some(x)).map(Some),
                        };
                        (self.ints(self.input(id, 1))?, self.ints(self.input(id, 2))?, opt(3)?, opt(4)?)
                    }
                };
                if starts.len() != 1 || ends.len() != 1 || axes.as_ref().is_some_and(|a| a != &[0] && a != &[-1]) {
                    return None;
                }
                let step = steps.map_or(Some(1), |s| (s.len() == 1).then(|| s[0]))?;
                if data.elems.is_empty() {
                    return None; // AxisSlice needs a dim of at least 1 for negative steps
                }
                let sl = AxisSlice::new(data.elems.len(), starts[0], ends[0], step).ok()?;
                let elems = (0..sl.len as i64)
                    .map(|k| usize::try_from(sl.start + k * sl.step).ok().and_then(|j| data.elems.get(j).cloned()))
                    .collect::<Option<_>>()?;
                Some(SymVal { scalar: false, elems })
            }
            Op::Movement(MovementOp::Concat { .. }) => {
                let parts: Vec<SymVal> = node
                    .inputs
                    .iter()
                    .flatten()
                    .map(|&x| self.value(x).filter(|v| !v.scalar))
                    .collect::<Option<_>>()?;
                Some(SymVal { scalar: false, elems: parts.into_iter().flat_map(|p| p.elems).collect() })
            }
            Op::Movement(MovementOp::Unsqueeze { axes }) => {
                let axes = axes.clone().or_else(|| self.ints(self.input(id, 1)))?;
                let v = val(0).filter(|v| v.scalar)?;
                (axes == [0] || axes == [-1]).then_some(SymVal { scalar: false, elems: v.elems })
            }
            Op::Movement(MovementOp::Squeeze { axes }) => {
                let axes = axes.clone().or_else(|| self.ints(self.input(id, 1)));
                let v = vector(0).filter(|v| v.elems.len() == 1)?;
                matches!(axes.as_deref(), None | Some([0]) | Some([-1]))
                    .then_some(SymVal { scalar: true, elems: v.elems })
            }
            Op::Movement(MovementOp::Reshape { .. }) => {
                let v = val(0)?;
                match self.cx.fact(o).rank()? {
                    0 if v.elems.len() == 1 => Some(SymVal { scalar: true, elems: v.elems }),
                    1 => Some(SymVal { scalar: false, elems: v.elems }),
                    _ => None,
                }
            }
            Op::Elementwise(ElementwiseOp::Cast { to, .. }) if is_index(Some(*to)) => {
                let x = self.input(id, 0)?;
                if !self.cx.fact(x).dtype.is_some_and(DType::is_integer) {
                    return None;
                }
                self.value(x)
            }
            Op::Elementwise(ElementwiseOp::Identity) => val(0),
            Op::Elementwise(ElementwiseOp::Where) => {
                let cond = self.bools(self.input(id, 0)?)?;
                let (a, b) = (val(1)?, val(2)?);
                let n = cond.len().max(a.elems.len()).max(b.elems.len());
                let pick = |v: &[Elem], k: usize| if v.len() == 1 { v.first().cloned() } else { v.get(k).cloned() };
                if [cond.len(), a.elems.len(), b.elems.len()].iter().any(|&l| l != 1 && l != n) {
                    return None;
                }
                let elems = (0..n)
                    .map(|k| {
                        let c = if cond.len() == 1 { cond.first() } else { cond.get(k) };
                        if *c? { pick(&a.elems, k) } else { pick(&b.elems, k) }
                    })
                    .collect::<Option<_>>()?;
                let scalar = a.scalar && b.scalar && self.cx.fact(o).rank() == Some(0);
                Some(SymVal { scalar, elems })
            }
            _ => None,
        }
    }

    /// The elements of a small bool tensor, when each is provable.
    fn bools(&self, o: OutletId) -> Option<Vec<bool>> {
        if let Some(t) = self.cx.value(o) {
            return if t.rank() <= 1 && t.len() <= MAX_ELEMS { t.to_bools().ok() } else { None };
        }
        let id = o.node;
        let Op::Elementwise(ElementwiseOp::Compare(CompareOp::Equal)) = &self.cx.node(id).op else { return None };
        let (a, b) = (self.value(self.input(id, 0)?)?, self.value(self.input(id, 1)?)?);
        let n = a.elems.len().max(b.elems.len());
        if [a.elems.len(), b.elems.len()].iter().any(|&l| l != 1 && l != n) {
            return None;
        }
        let at = |v: &[Elem], k: usize| if v.len() == 1 { v.first().cloned() } else { v.get(k).cloned() };
        (0..n)
            .map(|k| {
                let (x, y) = (at(&a.elems, k)?, at(&b.elems, k)?);
                match (&x, &y) {
                    (Elem::Num(p), Elem::Num(q)) => Some(p == q),
                    _ if x == y => Some(true),
                    // A dim is never negative.
                    (Elem::Num(n), _) | (_, Elem::Num(n)) if *n < 0 => Some(false),
                    _ => None,
                }
            })
            .collect()
    }
}

/// A shape value that is fully known becomes a constant.
pub struct KnownShapeValue;

impl Rewrite for KnownShapeValue {
    fn name(&self) -> &'static str {
        "known-shape-value"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        let tracked = matches!(
            node.op,
            Op::Movement(
                MovementOp::Shape { .. }
                    | MovementOp::Gather { .. }
                    | MovementOp::Slice { .. }
                    | MovementOp::Concat { .. }
                    | MovementOp::Unsqueeze { .. }
                    | MovementOp::Squeeze { .. }
                    | MovementOp::Reshape { .. }
            ) | Op::Elementwise(ElementwiseOp::Cast { .. } | ElementwiseOp::Where)
        );
        let o = OutletId::new(id, 0);
        let fact = cx.fact(o);
        if !tracked || node.outputs.len() != 1 || fact.value.is_some() || !is_index(fact.dtype) {
            return None;
        }
        let v = Tracker::new(cx).value(o)?;
        let nums: Vec<i64> = v.elems.iter().map(Elem::num).collect::<Option<_>>()?;
        let shape = if v.scalar { vec![] } else { vec![nums.len()] };
        let t = match fact.dtype? {
            DType::I32 => {
                Tensor::from_vec(shape, nums.iter().map(|&n| i32::try_from(n).ok()).collect::<Option<Vec<i32>>>()?)
            }
            _ => Tensor::from_vec(shape, nums),
        }
        .ok()?;
        if !compatible(fact, &kiln_ir::Fact::constant(t.clone())) {
            return None;
        }
        let mut p = Patch::new();
        let c = p.constant(format!("{}/value", node.name), t);
        p.shunt(o, c);
        Some(p)
    }
}

/// Reshape to a computed shape whose every element is a known number or the input's
/// dim at the same position (→ 0), with at most one other (→ -1): a constant target.
pub struct SymbolicReshape;

impl Rewrite for SymbolicReshape {
    fn name(&self) -> &'static str {
        "symbolic-reshape"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let Op::Movement(MovementOp::Reshape { allowzero }) = &cx.node(id).op else { return None };
        let (x, t) = (cx.input(id, 0)?, cx.input(id, 1)?);
        if cx.value(t).is_some() {
            return None;
        }
        let tr = Tracker::new(cx);
        let target = tr.value(t).filter(|v| !v.scalar)?;
        let xs = tr.shape(x)?;
        let mut inferred = target.elems.contains(&Elem::Num(-1));
        let mut out = Vec::with_capacity(target.elems.len());
        for (i, e) in target.elems.iter().enumerate() {
            out.push(match e {
                Elem::Num(n) if *n < -1 => return None,
                Elem::Num(n) => *n,
                _ if !allowzero && xs.get(i) == Some(e) => 0,
                _ if !inferred => {
                    inferred = true;
                    -1
                }
                _ => return None,
            });
        }
        if !allowzero && out.len() == xs.len() && out.iter().all(|&v| v == 0) {
            let o = OutletId::new(id, 0);
            if !cx.can_forward(o, x) {
                return None;
            }
            let mut p = Patch::new();
            p.shunt(o, x);
            return Some(p);
        }
        let name = &cx.node(id).name;
        let mut p = Patch::new();
        let n = out.len();
        let c = p.constant(format!("{name}/shape"), Tensor::from_vec(vec![n], out).ok()?);
        let r = p.add(name.clone(), Op::Movement(MovementOp::Reshape { allowzero: *allowzero }), &[x.into(), c]);
        p.shunt(OutletId::new(id, 0), r);
        Some(p)
    }
}

/// Expand to a computed shape that provably is the input's own (each element 1 or the
/// input's dim at that position): removed.
pub struct SymbolicExpand;

impl Rewrite for SymbolicExpand {
    fn name(&self) -> &'static str {
        "symbolic-expand"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let Op::Movement(MovementOp::Expand) = &cx.node(id).op else { return None };
        let (x, s) = (cx.input(id, 0)?, cx.input(id, 1)?);
        let tr = Tracker::new(cx);
        let target = tr.value(s)?;
        let xs = tr.shape(x)?;
        let off = xs.len().checked_sub(target.elems.len())?;
        let noop = target.elems.iter().enumerate().all(|(i, e)| *e == Elem::Num(1) || xs.get(off + i) == Some(e));
        let o = OutletId::new(id, 0);
        if !noop || !cx.can_forward(o, x) {
            return None;
        }
        let mut p = Patch::new();
        p.shunt(o, x);
        Some(p)
    }
}

/// Facts are inferred when a node is added; once its inputs were replaced by constants
/// (folded shapes), inference may know more. The node is re-added, unchanged, where it
/// would now get a more informative fact (a known rank, dim, dtype or value).
pub struct RefineFacts;

/// `new` knows nothing less than `old`.
fn not_worse(old: &kiln_ir::Fact, new: &kiln_ir::Fact) -> bool {
    let dims = match (&old.shape, &new.shape) {
        (None, _) => true,
        (Some(a), Some(b)) => a.rank() == b.rank() && a.0.iter().zip(&b.0).all(|(x, y)| *x == Dim::Unknown || x == y),
        (Some(_), None) => false,
    };
    dims && (old.dtype.is_none() || old.dtype == new.dtype) && (old.value.is_none() || new.value.is_some())
}

fn more_informative(old: &kiln_ir::Fact, new: &kiln_ir::Fact) -> bool {
    let dims = match (&old.shape, &new.shape) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) if a.rank() == b.rank() => {
            a.0.iter().zip(&b.0).any(|(x, y)| *x == Dim::Unknown && *y != Dim::Unknown)
        }
        _ => false,
    };
    dims || (old.dtype.is_none() && new.dtype.is_some()) || (old.value.is_none() && new.value.is_some())
}

impl Rewrite for RefineFacts {
    fn name(&self) -> &'static str {
        "refine-facts"
    }

    fn rewrite(&self, cx: &Context, id: NodeId) -> Option<Patch> {
        let node = cx.node(id);
        if matches!(node.op, Op::Input | Op::Constant(_)) || !node.op.subgraphs().is_empty() {
            return None;
        }
        let all_inputs_known = node.inputs.iter().flatten().all(|&o| cx.value(o).is_some());
        let incomplete = node.outputs.iter().any(|o| {
            let f = &o.fact;
            f.dtype.is_none()
                || f.shape.as_ref().is_none_or(|s| s.0.contains(&Dim::Unknown))
                || (f.value.is_none() && all_inputs_known)
        });
        if !incomplete {
            return None;
        }
        let facts: Vec<Option<&kiln_ir::Fact>> = node.inputs.iter().map(|i| i.map(|o| cx.fact(o))).collect();
        let new = node.op.infer(&facts, node.outputs.len()).ok()?;
        let better = node.outputs.iter().zip(&new).any(|(o, n)| compatible(&o.fact, n) && more_informative(&o.fact, n));
        if !better || new.iter().zip(&node.outputs).any(|(n, o)| !compatible(&o.fact, n) || !not_worse(&o.fact, n)) {
            return None;
        }
        let mut p = Patch::new();
        let inputs = node.inputs.iter().map(|i| i.map(Into::into)).collect();
        let outs = p.add_multi(node.name.clone(), node.op.clone(), inputs, node.outputs.len());
        for (slot, w) in outs.into_iter().enumerate() {
            p.shunt(OutletId::new(id, slot), w);
        }
        Some(p)
    }
}

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![&KnownShapeValue, &SymbolicReshape, &SymbolicExpand, &RefineFacts]
}
