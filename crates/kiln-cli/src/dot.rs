//! A Graphviz picture of a graph: inputs, layers (constants left out), outputs, and
//! edges labelled with the shapes they carry.

use std::fmt::Write;

use kiln_ir::{Graph, Op};

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// The graph in the DOT language.
pub fn to_dot(graph: &Graph) -> String {
    let mut s =
        format!("digraph {} {{\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n", quote(&graph.name));
    for (id, node) in graph.nodes.iter().enumerate() {
        match &node.op {
            Op::Constant(_) => continue,
            Op::Input => {
                let o = node.outputs.first().map(|o| format!("{}\n{}", o.name, o.fact)).unwrap_or_default();
                let _ =
                    writeln!(s, "  n{id} [shape=ellipse, style=filled, fillcolor=\"#dde8f5\", label={}];", quote(&o));
            }
            op => {
                let label = format!("{}\n{}", crate::inspect::describe_op(op), node.name);
                let _ = writeln!(s, "  n{id} [shape=box, style=rounded, label={}];", quote(&label));
            }
        }
        for o in node.inputs.iter().flatten() {
            if matches!(graph.nodes.get(o.node).map(|n| &n.op), Some(Op::Constant(_)) | None) {
                continue;
            }
            let shape = graph.fact(*o).ok().and_then(|f| f.shape.as_ref()).map(|s| s.to_string()).unwrap_or_default();
            let _ = writeln!(s, "  n{} -> n{id} [label={}, fontsize=8];", o.node, quote(&shape));
        }
    }
    for (k, o) in graph.outputs.iter().enumerate() {
        let label = format!("{}\n{}", graph.outlet_name(*o), graph.fact(*o).map(|f| f.to_string()).unwrap_or_default());
        let _ = writeln!(s, "  out{k} [shape=ellipse, style=filled, fillcolor=\"#e5f5dd\", label={}];", quote(&label));
        let _ = writeln!(s, "  n{} -> out{k};", o.node);
    }
    s.push_str("}\n");
    s
}
