//! Drops dead nodes (those no graph output depends on) and renumbers the rest in
//! evaluation order, so that node ids stay dense and tables read top to bottom.

use kiln_ir::{Graph, OutletId};

use crate::Result;
use crate::context::{Context, Options};

pub fn compact(graph: &mut Graph) -> Result<()> {
    let options = Options::default();
    let live = Context::new(graph, &options).live().to_vec();
    let order: Vec<usize> = graph.eval_order()?.into_iter().filter(|&i| live[i]).collect();
    if order.len() == graph.nodes.len() && order.iter().enumerate().all(|(i, &n)| i == n) {
        return Ok(());
    }
    let mut new_id = vec![usize::MAX; graph.nodes.len()];
    for (i, &n) in order.iter().enumerate() {
        new_id[n] = i;
    }
    let map = |o: OutletId| OutletId::new(new_id[o.node], o.slot);
    let mut old: Vec<Option<kiln_ir::Node>> = std::mem::take(&mut graph.nodes).into_iter().map(Some).collect();
    for &n in &order {
        let mut node = old[n].take().expect("each live node is placed once");
        for i in node.inputs.iter_mut().flatten() {
            *i = map(*i);
        }
        graph.nodes.push(node);
    }
    for o in graph.inputs.iter_mut().chain(graph.outputs.iter_mut()) {
        *o = map(*o);
    }
    for c in &mut graph.captures {
        c.outlet = map(c.outlet);
    }
    Ok(())
}
