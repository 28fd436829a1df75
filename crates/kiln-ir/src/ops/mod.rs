//! The op enum. Every op carries typed attributes (no string maps after import) and
//! infers its outputs' facts from its inputs' facts.
//!
//! Ops are grouped by family, one file each; a family is a sub-enum.

pub mod attention;
pub mod control;
pub mod elementwise;
pub mod fused;
pub mod movement;
pub mod nn;
pub mod quant;
pub mod recurrent;
pub mod reduce;
pub mod vision;

pub use attention::AttentionOp;
pub use control::ControlOp;
pub use elementwise::ElementwiseOp;
pub use fused::{Expr, ExprNode, FusedLayer, FusedOp};
pub use movement::MovementOp;
pub use nn::NnOp;
pub use quant::QuantOp;
pub use recurrent::RecurrentOp;
pub use reduce::ReduceOp;
pub use vision::VisionOp;

use crate::{DType, Fact, Graph, IrError, Result, Shape, Tensor};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A graph input (or a subgraph's formal or captured input).
    Input,
    /// An initializer or a constant; its value is also its output fact's value.
    Constant(Tensor),
    Elementwise(ElementwiseOp),
    Movement(MovementOp),
    Reduce(ReduceOp),
    Nn(NnOp),
    Vision(VisionOp),
    Attention(AttentionOp),
    Quant(QuantOp),
    Recurrent(RecurrentOp),
    Control(ControlOp),
    /// What the optimiser fuses chains of ops into.
    Fused(FusedOp),
}

/// What every family of ops provides.
pub trait OpFamily {
    /// The ONNX op type this op corresponds to (e.g. "Conv").
    fn name(&self) -> &'static str;
    /// Output facts from input facts (`None` for an omitted optional input).
    /// May return fewer facts than `n_outputs`; the rest are unknown.
    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>>;
    /// Nested graphs (If/Loop/Scan bodies).
    fn subgraphs(&self) -> Vec<&Graph> {
        vec![]
    }
}

macro_rules! each_family {
    ($self:expr, $op:ident => $e:expr, $input:expr, $constant:expr) => {
        match $self {
            Op::Input => $input,
            Op::Constant(_) => $constant,
            Op::Elementwise($op) => $e,
            Op::Movement($op) => $e,
            Op::Reduce($op) => $e,
            Op::Nn($op) => $e,
            Op::Vision($op) => $e,
            Op::Attention($op) => $e,
            Op::Quant($op) => $e,
            Op::Recurrent($op) => $e,
            Op::Control($op) => $e,
            Op::Fused($op) => $e,
        }
    };
}

impl Op {
    pub fn name(&self) -> &'static str {
        each_family!(self, op => op.name(), "Input", "Constant")
    }

    pub fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        each_family!(self, op => op.infer(inputs, n_outputs),
            Ok(vec![Fact::unknown()]),
            match self { Op::Constant(t) => Ok(vec![Fact::constant(t.clone())]), _ => unreachable!() })
    }

    pub fn subgraphs(&self) -> Vec<&Graph> {
        each_family!(self, op => op.subgraphs(), vec![], vec![])
    }
}

// ---- helpers for `infer` implementations ----

/// Input `i`, which the op requires.
pub fn required<'a>(inputs: &[Option<&'a Fact>], i: usize, op: &str) -> Result<&'a Fact> {
    inputs.get(i).copied().flatten().ok_or_else(|| IrError::invalid(op, format!("input {i} is required but missing")))
}

/// Input `i` if it is present.
pub fn optional<'a>(inputs: &[Option<&'a Fact>], i: usize) -> Option<&'a Fact> {
    inputs.get(i).copied().flatten()
}

/// Numpy broadcast of the shapes of `facts`; unknown rank if any is unknown.
pub fn broadcast_shape(facts: &[&Fact], op: &str) -> Result<Option<Shape>> {
    let shapes: Option<Vec<&Shape>> = facts.iter().map(|f| f.shape.as_ref()).collect();
    match shapes {
        None => Ok(None),
        Some(s) => Shape::broadcast(&s).map(Some).ok_or_else(|| {
            let list: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            IrError::invalid(op, format!("shapes {} do not broadcast", list.join(" and ")))
        }),
    }
}

/// The dtype of the first input that has one.
pub fn first_dtype(facts: &[&Fact]) -> Option<DType> {
    facts.iter().find_map(|f| f.dtype)
}

/// Resolves a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize, op: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r.max(1)).contains(&a) || (r == 0 && a == 0) {
        Ok(a as usize)
    } else {
        Err(IrError::invalid(op, format!("axis {axis} is out of range for rank {rank}")))
    }
}
