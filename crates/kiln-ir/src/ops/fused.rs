//! Fused ops: what the optimiser (kiln-opt) turns chains of ONNX ops into. They are
//! backend-neutral: each backend implements them (the CPU backend by composition of its
//! ordinary kernels, a GPU backend with one kernel or one library call each).
//!
//! Patterns that ONNX itself has an op for (Softmax, LayerNormalization,
//! RMSNormalization, GroupNormalization, Gelu, HardSwish, Attention) are fused into
//! those ops rather than into new ones here.

use super::elementwise::{BinaryOp, UnaryOp};
use super::{Op, OpFamily, broadcast_shape, required};
use crate::{DType, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum FusedOp {
    /// One elementwise kernel for a DAG of elementwise ops over broadcast inputs.
    Elementwise(Expr),
    /// A compute op (Conv, ConvTranspose, Gemm, MatMul) whose output passes through an
    /// elementwise epilogue (bias, activation, residual add…) before it is stored.
    Layer(FusedLayer),
    /// Concat whose inputs' producers write straight into slices of its output buffer
    /// (every input is the only use of its producer's output). Computes a Concat.
    ConcatInPlace { axis: usize },
    /// A contiguous window of its input along `axis` (every dim before `axis` is 1):
    /// a view of the input's buffer, no copy. One output per `(start, len)` window.
    SliceView { axis: usize, windows: Vec<(usize, usize)> },
    /// `op` computed channels-last: the inputs listed in `nhwc` (input 0 among them) and
    /// output 0 are rank-4 NHWC tensors where `op` reads and writes NCHW; the other
    /// inputs (weights, bias) are `op`'s own.
    ChannelsLast { op: Box<Op>, nhwc: Vec<usize> },
}

/// NCHW → NHWC.
pub const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
/// NHWC → NCHW.
pub const TO_NCHW: [usize; 4] = [0, 3, 1, 2];

/// `f` with its shape permuted by `perm` (dims `perm[i]` of `f` become dim `i`); no
/// value. `None` when `f` is not of rank 4.
pub fn permute_fact(f: &Fact, perm: &[usize; 4]) -> Option<Fact> {
    let shape = match &f.shape {
        None => None,
        Some(s) if s.rank() == 4 => Some(Shape(perm.iter().map(|&p| s.0[p].clone()).collect())),
        Some(_) => return None,
    };
    Some(Fact { dtype: f.dtype, shape, value: None })
}

/// `core` reads the node's first `core_inputs` inputs; the epilogue's `Input(0)` is the
/// core's output and its `Input(i)` (i ≥ 1) is node input `core_inputs + i - 1`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FusedLayer {
    pub core: Box<Op>,
    pub core_inputs: usize,
    pub epilogue: Expr,
}

/// An elementwise expression in SSA form: each node reads earlier nodes by index; the
/// value of the expression is its last node. All inputs share one float dtype.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Expr {
    pub nodes: Vec<ExprNode>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ExprNode {
    /// Input `i` of the expression.
    Input(usize),
    /// A constant, broadcast like a scalar.
    Scalar(f64),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// `min(max(x, lo), hi)` with either bound absent.
    Clip {
        x: usize,
        min: Option<f32>,
        max: Option<f32>,
    },
    Min(usize, usize),
    Max(usize, usize),
}

impl Expr {
    /// The expression `Input(0)`: an epilogue that changes nothing.
    pub fn identity() -> Expr {
        Expr { nodes: vec![ExprNode::Input(0)] }
    }

    /// Appends a node and returns its index.
    pub fn push(&mut self, node: ExprNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// How many inputs the expression reads (one more than the largest index).
    pub fn arity(&self) -> usize {
        self.nodes.iter().filter_map(|n| if let ExprNode::Input(i) = n { Some(i + 1) } else { None }).max().unwrap_or(0)
    }

    pub fn is_identity(&self) -> bool {
        matches!(self.nodes.as_slice(), [ExprNode::Input(0)])
    }

    /// Checks that every node reads only earlier nodes and the value is defined.
    pub fn check(&self) -> Result<()> {
        let bad = |i: usize, msg: &str| Err(IrError::invalid("FusedElementwise", format!("node {i}: {msg}")));
        if self.nodes.is_empty() {
            return Err(IrError::invalid("FusedElementwise", "empty expression"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.operands().iter().any(|&a| a >= i) {
                return bad(i, "reads a later node");
            }
        }
        Ok(())
    }

    /// The expression with `Input(i)` renumbered by `map(i)`.
    pub fn map_inputs(&self, map: impl Fn(usize) -> usize) -> Expr {
        let nodes =
            self.nodes.iter().map(|n| if let ExprNode::Input(i) = n { ExprNode::Input(map(*i)) } else { n.clone() });
        Expr { nodes: nodes.collect() }
    }

    /// Appends `other`, whose `Input(i)` becomes `inputs[i]` (indices of this
    /// expression's nodes); returns the index of `other`'s value.
    pub fn inline(&mut self, other: &Expr, inputs: &[usize]) -> Result<usize> {
        let mut at: Vec<usize> = Vec::with_capacity(other.nodes.len());
        for n in &other.nodes {
            let idx = match n {
                ExprNode::Input(i) => *inputs.get(*i).ok_or_else(|| {
                    IrError::invalid("FusedElementwise", format!("inlined expression reads missing input {i}"))
                })?,
                _ => self.push(n.remap(|a| at[a])),
            };
            at.push(idx);
        }
        at.last().copied().ok_or_else(|| IrError::invalid("FusedElementwise", "empty expression"))
    }

    /// A short formula for tables and logs, e.g. `relu(x0 + x1)`.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let t = match n {
                ExprNode::Input(i) => format!("x{i}"),
                ExprNode::Scalar(v) => format!("{v}"),
                ExprNode::Unary(u, a) => format!("{}({})", u.name().to_lowercase(), s[*a]),
                ExprNode::Binary(b, x, y) => match b {
                    BinaryOp::Add => format!("({} + {})", s[*x], s[*y]),
                    BinaryOp::Sub => format!("({} - {})", s[*x], s[*y]),
                    BinaryOp::Mul => format!("{} * {}", s[*x], s[*y]),
                    BinaryOp::Div => format!("{} / {}", s[*x], s[*y]),
                    other => format!("{}({}, {})", other.name().to_lowercase(), s[*x], s[*y]),
                },
                ExprNode::Clip { x, min, max } => {
                    format!("clip({}, {}, {})", s[*x], fmt_bound(*min), fmt_bound(*max))
                }
                ExprNode::Min(x, y) => format!("min({}, {})", s[*x], s[*y]),
                ExprNode::Max(x, y) => format!("max({}, {})", s[*x], s[*y]),
            };
            s.push(t);
        }
        s.pop().unwrap_or_default()
    }
}

fn fmt_bound(b: Option<f32>) -> String {
    b.map_or("-".to_string(), |v| v.to_string())
}

impl ExprNode {
    /// The nodes this node reads.
    pub fn operands(&self) -> Vec<usize> {
        match self {
            ExprNode::Input(_) | ExprNode::Scalar(_) => vec![],
            ExprNode::Unary(_, a) | ExprNode::Clip { x: a, .. } => vec![*a],
            ExprNode::Binary(_, a, b) | ExprNode::Min(a, b) | ExprNode::Max(a, b) => vec![*a, *b],
        }
    }

    /// This node with its operands renumbered.
    pub fn remap(&self, f: impl Fn(usize) -> usize) -> ExprNode {
        match self {
            ExprNode::Input(_) | ExprNode::Scalar(_) => self.clone(),
            ExprNode::Unary(u, a) => ExprNode::Unary(*u, f(*a)),
            ExprNode::Clip { x, min, max } => ExprNode::Clip { x: f(*x), min: *min, max: *max },
            ExprNode::Binary(b, x, y) => ExprNode::Binary(*b, f(*x), f(*y)),
            ExprNode::Min(x, y) => ExprNode::Min(f(*x), f(*y)),
            ExprNode::Max(x, y) => ExprNode::Max(f(*x), f(*y)),
        }
    }
}

impl OpFamily for FusedOp {
    fn name(&self) -> &'static str {
        match self {
            FusedOp::Elementwise(_) => "FusedElementwise",
            FusedOp::Layer(l) => match l.core.name() {
                "Conv" => "FusedConv",
                "ConvTranspose" => "FusedConvTranspose",
                "Gemm" => "FusedGemm",
                "MatMul" => "FusedMatMul",
                _ => "FusedLayer",
            },
            FusedOp::ConcatInPlace { .. } => "ConcatInPlace",
            FusedOp::SliceView { .. } => "SliceView",
            FusedOp::ChannelsLast { op, .. } => match op.name() {
                "Conv" => "ConvNhwc",
                "FusedConv" => "FusedConvNhwc",
                "ConvTranspose" => "ConvTransposeNhwc",
                "FusedConvTranspose" => "FusedConvTransposeNhwc",
                "Resize" => "ResizeNhwc",
                "BatchNormalization" => "BatchNormalizationNhwc",
                "MaxPool" => "MaxPoolNhwc",
                "AveragePool" => "AveragePoolNhwc",
                "LpPool" => "LpPoolNhwc",
                "GlobalAveragePool" => "GlobalAveragePoolNhwc",
                "GlobalMaxPool" => "GlobalMaxPoolNhwc",
                "GlobalLpPool" => "GlobalLpPoolNhwc",
                _ => "ChannelsLast",
            },
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        match self {
            FusedOp::Elementwise(e) => Ok(vec![infer_expr(e, &inputs.iter().copied().flatten().collect::<Vec<_>>())?]),
            FusedOp::Layer(l) => {
                let core = l.core.infer(&inputs[..l.core_inputs.min(inputs.len())], 1)?;
                let core = core.into_iter().next().unwrap_or_default();
                let mut operands = vec![&core];
                operands.extend(inputs.iter().skip(l.core_inputs).copied().flatten());
                let out = infer_expr(&l.epilogue, &operands)?;
                if out.shape.is_some() && core.shape.is_some() && out.shape != core.shape {
                    let msg = format!("epilogue changes the core's shape {:?} to {:?}", core.shape, out.shape);
                    return Err(IrError::invalid(name, msg));
                }
                Ok(vec![out])
            }
            FusedOp::ConcatInPlace { axis } => {
                let concat = super::MovementOp::Concat { axis: *axis as i64 };
                concat.infer(inputs, 1)
            }
            FusedOp::SliceView { axis, windows } => {
                let x = required(inputs, 0, name)?;
                if windows.len() != n_outputs {
                    return Err(IrError::invalid(name, format!("{} windows for {n_outputs} outputs", windows.len())));
                }
                let Some(shape) = &x.shape else { return Ok(vec![Fact::unknown(); n_outputs]) };
                let dim = shape.0.get(*axis).ok_or_else(|| IrError::invalid(name, "axis out of range"))?;
                if let Some(d) = dim.known()
                    && windows.iter().any(|&(s, l)| s + l > d)
                {
                    return Err(IrError::invalid(name, format!("window outside dim {d}")));
                }
                Ok(windows
                    .iter()
                    .map(|&(_, len)| {
                        let mut s = shape.clone();
                        s.0[*axis] = len.into();
                        Fact { dtype: x.dtype, shape: Some(s), value: None }
                    })
                    .collect())
            }
            FusedOp::ChannelsLast { op, nhwc } => {
                if !nhwc.contains(&0) || matches!(**op, Op::Fused(FusedOp::ChannelsLast { .. })) {
                    return Err(IrError::invalid(name, "input 0 must be NHWC, and the op not channels-last already"));
                }
                let mut facts: Vec<Option<Fact>> = inputs.iter().map(|f| f.cloned()).collect();
                for &i in nhwc {
                    let f = facts
                        .get_mut(i)
                        .and_then(Option::as_mut)
                        .ok_or_else(|| IrError::invalid(name, format!("NHWC input {i} is missing")))?;
                    *f = permute_fact(f, &TO_NCHW)
                        .ok_or_else(|| IrError::invalid(name, format!("input {i} is not rank 4")))?;
                }
                let refs: Vec<Option<&Fact>> = facts.iter().map(Option::as_ref).collect();
                let mut out = op.infer(&refs, n_outputs)?;
                if let Some(o) = out.first_mut() {
                    *o = permute_fact(o, &TO_NHWC).ok_or_else(|| IrError::invalid(name, "output 0 is not rank 4"))?;
                }
                Ok(out)
            }
        }
    }
}

/// Output fact of `e` over `inputs`: the broadcast shape, the inputs' one float dtype.
fn infer_expr(e: &Expr, inputs: &[&Fact]) -> Result<Fact> {
    let name = "FusedElementwise";
    e.check()?;
    if e.arity() > inputs.len() {
        return Err(IrError::invalid(
            name,
            format!("expression reads {} inputs, node has {}", e.arity(), inputs.len()),
        ));
    }
    let dtypes: Vec<DType> = inputs.iter().filter_map(|f| f.dtype).collect();
    if let Some(d) = dtypes.first()
        && (dtypes.iter().any(|x| x != d) || !d.is_float())
    {
        return Err(IrError::invalid(name, format!("inputs must share one float dtype, got {dtypes:?}")));
    }
    let shape: Option<Shape> = broadcast_shape(inputs, name)?;
    Ok(Fact { dtype: dtypes.first().copied(), shape, value: None })
}
