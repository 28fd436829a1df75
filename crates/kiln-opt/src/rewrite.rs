//! The rewrite engine: a pass is a set of rewrites, each a pattern anchored at one node
//! that returns a patch. The engine offers every live node to every rewrite, applies
//! each patch as it is found, and sweeps again until a sweep changes nothing.

use std::collections::HashSet;

use kiln_ir::{Graph, NodeId};

use crate::context::{Context, Options};
use crate::patch::Patch;
use crate::report::{Refused, Report, RewriteRecord};
use crate::{OptError, Result, compact};

/// One pattern and its replacement.
pub trait Rewrite: Sync {
    fn name(&self) -> &'static str;
    /// A patch replacing the pattern anchored at `node`, or `None` where it does not match.
    /// A rewrite must return `None` (not a no-op patch) when nothing would change.
    fn rewrite(&self, cx: &Context, node: NodeId) -> Option<Patch>;
}

const MAX_SWEEPS: usize = 64;

/// Runs `rewrites` to a fixpoint, logging every applied patch into `report`.
pub fn run_to_fixpoint(
    graph: &mut Graph,
    rewrites: &[&dyn Rewrite],
    options: &Options,
    report: &mut Report,
) -> Result<()> {
    let mut refused: HashSet<(&'static str, String)> = HashSet::new();
    for _ in 0..MAX_SWEEPS {
        let order = graph.eval_order()?;
        let mut next = 0;
        let mut changed = false;
        while let Some((pass, anchor, patch, live)) = find(graph, &order, &mut next, rewrites, options, &refused) {
            let anchor_name = graph.nodes[anchor].name.clone();
            match patch.apply(graph) {
                Ok(added) => {
                    changed = true;
                    let now = Context::new(graph, options);
                    let removed = (0..live.len())
                        .filter(|&i| live[i] && !now.is_live(i))
                        .map(|i| graph.nodes[i].name.clone())
                        .collect();
                    report.rewrites.push(RewriteRecord { pass, anchor: anchor_name, removed, added });
                }
                Err(e) => {
                    refused.insert((pass, anchor_name.clone()));
                    report.refused.push(Refused { pass, anchor: anchor_name, reason: e.to_string() });
                }
            }
        }
        compact::compact(graph)?;
        if !changed {
            return Ok(());
        }
    }
    Err(OptError::NoFixpoint(MAX_SWEEPS))
}

type Found = (&'static str, NodeId, Patch, Vec<bool>);

/// The next patch some rewrite offers, scanning `order` from `*next`.
fn find(
    graph: &Graph,
    order: &[NodeId],
    next: &mut usize,
    rewrites: &[&dyn Rewrite],
    options: &Options,
    refused: &HashSet<(&'static str, String)>,
) -> Option<Found> {
    let cx = Context::new(graph, options);
    while let Some(&id) = order.get(*next) {
        if cx.is_live(id) {
            for rw in rewrites {
                if refused.contains(&(rw.name(), graph.nodes[id].name.clone())) {
                    continue;
                }
                if let Some(p) = rw.rewrite(&cx, id) {
                    return Some((rw.name(), id, p, cx.live().to_vec()));
                }
            }
        }
        *next += 1;
    }
    None
}
