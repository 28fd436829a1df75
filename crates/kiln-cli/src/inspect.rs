//! `kiln inspect`: what a model is made of.

use std::path::PathBuf;

use anyhow::Context;
use kiln_ir::{Graph, Op};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

/// (count of parameters, their bytes) over the constants of a graph and its subgraphs.
fn parameters(graph: &Graph) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    graph.visit_nodes(&mut |node| {
        if let Op::Constant(t) = &node.op {
            n += t.len();
            bytes += t.bytes().len();
        }
    });
    (n, bytes)
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let model = kiln_onnx::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let g = &model.graph;
    let io = |outlets: &[kiln_ir::OutletId]| -> Vec<(String, String)> {
        outlets
            .iter()
            .map(|o| (g.outlet_name(*o).to_string(), g.fact(*o).map(|f| f.to_string()).unwrap_or_default()))
            .collect()
    };
    let (inputs, outputs) = (io(&g.inputs), io(&g.outputs));
    let hist = g.op_histogram();
    let (params, bytes) = parameters(g);
    if args.json {
        let report = json!({
            "model": args.model.display().to_string(), "ir_version": model.ir_version, "producer": model.producer,
            "opsets": model.opsets, "inputs": inputs.iter().map(|(n, f)| json!({"name": n, "type": f})).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(n, f)| json!({"name": n, "type": f})).collect::<Vec<_>>(),
            "ops": hist, "nodes": hist.values().sum::<usize>(), "parameters": params, "parameter_bytes": bytes,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model      {}", args.model.display());
    println!(
        "producer   {} (IR version {})",
        if model.producer.is_empty() { "?" } else { &model.producer },
        model.ir_version
    );
    let opsets: Vec<String> =
        model.opsets.iter().map(|(d, v)| format!("{}:{v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    println!("opsets     {}", opsets.join(", "));
    for (n, f) in &inputs {
        println!("input      {n}: {f}");
    }
    for (n, f) in &outputs {
        println!("output     {n}: {f}");
    }
    println!("parameters {params} ({})", human_bytes(bytes));
    println!("nodes      {}", hist.values().sum::<usize>());
    let mut ops: Vec<_> = hist.into_iter().collect();
    ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (op, n) in ops {
        println!("  {n:>6}  {op}");
    }
    Ok(())
}

pub fn human_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
