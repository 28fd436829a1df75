//! Kiln's graph optimiser: small rewrites applied to a fixpoint, grouped into passes,
//! and passes into a pipeline by optimisation level. Every pass keeps what the graph
//! computes: tests run the CPU backend before and after on random inputs.
//!
//! A rewrite (`Rewrite`) looks at one node and its neighbourhood through a `Context` and
//! returns a `Patch`; the engine (`rewrite::run_to_fixpoint`) applies patches as
//! transactions and drops dead nodes after each sweep.

pub mod compact;
pub mod context;
mod error;
pub mod passes;
pub mod patch;
pub mod pipeline;
pub mod report;
pub mod rewrite;

pub use context::{Context, Layout, Options};
pub use error::{OptError, Result};
pub use patch::{Patch, Wire};
pub use pipeline::Optimizer;
pub use report::{Report, layer_count};
pub use rewrite::Rewrite;

use kiln_ir::{Op, Tensor};

/// Computes an op on known inputs, for constant folding. The CPU backend provides one
/// (`kiln_cpu::eval_op`); the optimiser itself does not depend on a backend.
pub trait Evaluator: Sync {
    fn eval(&self, op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> std::result::Result<Vec<Tensor>, String>;
}

impl<F> Evaluator for F
where
    F: Fn(&Op, &[Option<Tensor>], usize) -> std::result::Result<Vec<Tensor>, String> + Sync,
{
    fn eval(&self, op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> std::result::Result<Vec<Tensor>, String> {
        self(op, inputs, n_outputs)
    }
}
