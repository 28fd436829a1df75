//! What the optimiser did: every applied rewrite, every refused one, and the counts.

use std::fmt;

use kiln_ir::{Graph, Op};

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Nodes (other than inputs and constants) before optimisation.
    pub nodes_before: usize,
    /// Layers (nodes other than inputs and constants) after.
    pub layers_after: usize,
    pub rewrites: Vec<RewriteRecord>,
    /// Patches the graph refused (a pass bug, never a wrong graph): kept for `--verbose`.
    pub refused: Vec<Refused>,
}

#[derive(Clone, Debug)]
pub struct RewriteRecord {
    pub pass: &'static str,
    /// The node the pattern was anchored at.
    pub anchor: String,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Refused {
    pub pass: &'static str,
    pub anchor: String,
    pub reason: String,
}

/// Nodes that do work: everything but graph inputs and constants.
pub fn layer_count(graph: &Graph) -> usize {
    graph.nodes.iter().filter(|n| !matches!(n.op, Op::Input | Op::Constant(_))).count()
}

impl Report {
    /// How many rewrites each pass applied.
    pub fn by_pass(&self) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for r in &self.rewrites {
            match out.iter_mut().find(|(p, _)| *p == r.pass) {
                Some((_, n)) => *n += 1,
                None => out.push((r.pass, 1)),
            }
        }
        out
    }
}

impl fmt::Display for RewriteRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at '{}': removed {:?}, added {:?}", self.pass, self.anchor, self.removed, self.added)
    }
}
