//! Passes grouped by optimisation level (`--opt-level`):
//!
//! | level | adds |
//! | --- | --- |
//! | 0 | dead-node removal only: what is needed to run |
//! | 1 | constant and shape folding, symbolic shape simplification, no-op removal and cancellation |
//! | 2 | BatchNorm and scale folding into Conv/Gemm/MatMul; softmax, norm, GELU/SiLU and attention patterns |
//! | 3 | horizontal fusion, vertical (epilogue) fusion, elementwise chains, concat elision and views, layout (default) |
//!
//! Each stage runs its rewrites together to a fixpoint; stages run in order.

use kiln_ir::Graph;

use crate::context::Options;
use crate::passes;
use crate::report::{Report, layer_count};
use crate::rewrite::{Rewrite, run_to_fixpoint};
use crate::{Result, compact};

pub const DEFAULT_LEVEL: u8 = 3;

/// A named group of rewrites run together, from a given level on.
pub struct Stage {
    pub name: &'static str,
    pub level: u8,
    pub rewrites: Vec<&'static dyn Rewrite>,
}

/// The stages, in order.
pub fn stages() -> Vec<Stage> {
    vec![
        Stage { name: "simplify", level: 1, rewrites: passes::simplify() },
        Stage { name: "canonicalize", level: 2, rewrites: passes::canonicalize() },
        Stage { name: "fuse", level: 3, rewrites: passes::fuse() },
        Stage { name: "memory", level: 3, rewrites: passes::memory() },
    ]
}

/// TensorRT's builder optimisation step: `Optimizer::new(level).optimize(&graph)`.
pub struct Optimizer<'a> {
    pub level: u8,
    pub options: Options<'a>,
}

impl<'a> Optimizer<'a> {
    pub fn new(level: u8) -> Optimizer<'a> {
        Optimizer { level, options: Options::default() }
    }

    pub fn with_evaluator(mut self, evaluator: &'a dyn crate::Evaluator) -> Optimizer<'a> {
        self.options.evaluator = Some(evaluator);
        self
    }

    pub fn with_options(mut self, options: Options<'a>) -> Optimizer<'a> {
        self.options = options;
        self
    }

    /// The optimised copy of `graph`, and what was done.
    pub fn optimize(&self, graph: &Graph) -> Result<(Graph, Report)> {
        let mut g = graph.clone();
        let mut report = Report { nodes_before: layer_count(graph), ..Report::default() };
        compact::compact(&mut g)?;
        for stage in stages().into_iter().filter(|s| s.level <= self.level) {
            run_to_fixpoint(&mut g, &stage.rewrites, &self.options, &mut report)?;
        }
        report.layers_after = layer_count(&g);
        Ok((g, report))
    }
}
