//! Control flow: If, Loop and Scan, each running nested graphs.
//!
//! Subgraph outer-scope reads are the subgraphs' `captures`; the node receives those
//! values as trailing inputs in the order of `captured_names(&op.subgraphs())`.

use super::{OpFamily, optional, required};
use crate::{Dim, Fact, Graph, IrError, Result, Shape};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ControlOp {
    /// Runs `then_branch` or `else_branch` on a bool condition; outputs are the branch's.
    If {
        then_branch: Graph,
        else_branch: Graph,
    },
    /// Inputs: max trip count M (optional), condition (optional), loop-carried values.
    /// Body: (iteration, cond, carried…) → (cond, carried…, scan outputs…).
    Loop {
        body: Graph,
    },
    Scan(Scan),
}

/// Scan (opset 9+): inputs are N initial states then `num_scan_inputs` sequences.
/// Body: (states…, one slice of each sequence…) → (states…, scan output slices…).
///
/// Scan-8 (`batched`): a first optional input `sequence_lens`, and every input and
/// output has a leading batch axis; each batch element is scanned on its own along
/// axis 1, its scan outputs zero-padded past its sequence length.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Scan {
    pub body: Graph,
    pub batched: bool,
    pub num_scan_inputs: usize,
    /// Per scan input: the axis it is sliced along (default 0).
    pub input_axes: Vec<i64>,
    /// Per scan input: true to iterate it from the end.
    pub input_reverse: Vec<bool>,
    /// Per scan output: the axis its slices are stacked along (default 0).
    pub output_axes: Vec<i64>,
    /// Per scan output: true to stack from the end.
    pub output_reverse: Vec<bool>,
}

impl OpFamily for ControlOp {
    fn name(&self) -> &'static str {
        match self {
            ControlOp::If { .. } => "If",
            ControlOp::Loop { .. } => "Loop",
            ControlOp::Scan(_) => "Scan",
        }
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            ControlOp::If { then_branch, else_branch } => vec![then_branch, else_branch],
            ControlOp::Loop { body } => vec![body],
            ControlOp::Scan(s) => vec![&s.body],
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        // Trailing inputs are the subgraphs' captured outer values.
        let formal = inputs.len().saturating_sub(crate::captured_names(&self.subgraphs()).len());
        match self {
            ControlOp::If { then_branch, else_branch } => {
                let cond = required(inputs, 0, name)?;
                if let Some(n) = cond.shape.as_ref().and_then(|s| s.as_known())
                    && n.iter().product::<usize>() != 1
                {
                    return Err(IrError::invalid(name, "cond must have a single element"));
                }
                let (t, e) = (output_facts(then_branch)?, output_facts(else_branch)?);
                if t.len() != e.len() {
                    return Err(IrError::invalid(name, "branches have different numbers of outputs"));
                }
                Ok(t.iter().zip(&e).map(|(a, b)| merge(a, b)).collect())
            }
            ControlOp::Loop { body } => {
                let outs = output_facts(body)?;
                let carried = formal.saturating_sub(2);
                let mut facts = Vec::with_capacity(n_outputs);
                for i in 0..n_outputs {
                    let body_fact = outs.get(1 + i).cloned().unwrap_or_default();
                    if i < carried {
                        // Carried values may change shape from one iteration to the next.
                        let init = optional(inputs, 2 + i).cloned().unwrap_or_default();
                        facts.push(Fact { value: None, ..merge(&init, &body_fact) });
                    } else {
                        facts.push(stacked(&body_fact, 0, Dim::Unknown));
                    }
                }
                Ok(facts)
            }
            ControlOp::Scan(s) => {
                let outs = output_facts(&s.body)?;
                if s.batched {
                    return Ok(vec![]);
                }
                let n_states = formal.saturating_sub(s.num_scan_inputs);
                let seq = optional(inputs, n_states)
                    .and_then(|f| f.shape.as_ref())
                    .and_then(|sh| {
                        let axis = *s.input_axes.first().unwrap_or(&0);
                        let a = if axis < 0 { axis + sh.rank() as i64 } else { axis };
                        sh.0.get(usize::try_from(a).ok()?).cloned()
                    })
                    .unwrap_or(Dim::Unknown);
                let mut facts = Vec::with_capacity(n_outputs);
                for i in 0..n_outputs {
                    let body_fact = outs.get(i).cloned().unwrap_or_default();
                    if i < n_states {
                        facts.push(Fact { value: None, ..body_fact });
                    } else {
                        let axis = s.output_axes.get(i - n_states).copied().unwrap_or(0);
                        facts.push(stacked(&body_fact, axis, seq.clone()));
                    }
                }
                Ok(facts)
            }
        }
    }
}

fn output_facts(g: &Graph) -> Result<Vec<Fact>> {
    g.outputs.iter().map(|o| g.fact(*o).cloned()).collect()
}

/// What two facts that may each hold share: the dtype if equal, dims where equal.
fn merge(a: &Fact, b: &Fact) -> Fact {
    let dtype = match (a.dtype, b.dtype) {
        (Some(x), Some(y)) if x == y => Some(x),
        (Some(x), None) | (None, Some(x)) => Some(x),
        _ => None,
    };
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.rank() == y.rank() => {
            Some(Shape(x.0.iter().zip(&y.0).map(|(p, q)| if p == q { p.clone() } else { Dim::Unknown }).collect()))
        }
        _ => None,
    };
    Fact { dtype, shape, value: None }
}

/// The fact of slices stacked along a new `axis` of length `len`.
fn stacked(slice: &Fact, axis: i64, len: Dim) -> Fact {
    let shape = slice.shape.as_ref().and_then(|s| {
        let rank = s.rank() as i64 + 1;
        let a = if axis < 0 { axis + rank } else { axis };
        let a = usize::try_from(a).ok().filter(|&a| a <= s.rank())?;
        let mut dims = s.0.clone();
        dims.insert(a, len);
        Some(Shape(dims))
    });
    Fact { dtype: slice.dtype, shape, value: None }
}
