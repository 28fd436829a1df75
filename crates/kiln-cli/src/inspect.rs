//! `kiln inspect`: what a model is made of, and with `--optimized` what the optimiser
//! makes of it.

use std::path::PathBuf;

use anyhow::Context;
use kiln_ir::ops::FusedOp;
use kiln_ir::{Graph, Op};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model, or a plan (.kiln).
    model: PathBuf,
    /// With a plan: time each layer on the GPU.
    #[arg(long)]
    profile: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    /// Show the optimised graph: its layers and the node counts before and after.
    #[arg(long)]
    optimized: bool,
    /// Optimisation level for `--optimized` (0: as imported; 3: everything).
    #[arg(long, default_value_t = kiln_opt::pipeline::DEFAULT_LEVEL)]
    opt_level: u8,
    /// Write a Graphviz (DOT) picture of the graph shown (the original without --optimized).
    #[arg(long)]
    dot: Option<PathBuf>,
    /// Layout of convolution regions (with the optimiser on).
    #[arg(long, value_enum, default_value_t = crate::LayoutArg::Nchw)]
    layout: crate::LayoutArg,
    /// With --optimized: also print every rewrite applied (and any refused).
    #[arg(long, short)]
    verbose: bool,
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

/// An op for tables: its name, with the formula of fused elementwise ops and epilogues.
pub fn describe_op(op: &Op) -> String {
    match op {
        Op::Fused(f) => match f {
            FusedOp::Elementwise(e) => format!("FusedElementwise {}", e.describe()),
            FusedOp::Layer(l) if l.epilogue.is_identity() => op.name().to_string(),
            FusedOp::Layer(l) => format!("{} → {}", op.name(), l.epilogue.describe()),
            FusedOp::ConcatInPlace { axis } => format!("ConcatInPlace axis={axis}"),
            FusedOp::SliceView { axis, windows } => {
                let w: Vec<String> = windows.iter().map(|(s, l)| format!("{s}..{}", s + l)).collect();
                format!("SliceView axis={axis} [{}]", w.join(", "))
            }
            FusedOp::ChannelsLast { op, .. } => format!("{} (NHWC)", describe_op(op)),
        },
        op => op.name().to_string(),
    }
}

/// One row of the layer table.
struct Layer {
    name: String,
    op: String,
    inputs: Vec<String>,
    output: String,
}

/// The layers of `graph` (not its inputs and constants), with the shapes of the
/// activations they read (constant inputs, i.e. weights, are left out).
fn layers(graph: &Graph) -> Vec<Layer> {
    let shape = |o: kiln_ir::OutletId| {
        graph.fact(o).ok().and_then(|f| f.shape.as_ref()).map_or_else(|| "?".to_string(), |s| s.to_string())
    };
    graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !matches!(n.op, Op::Input | Op::Constant(_)))
        .map(|(id, n)| {
            let inputs = n
                .inputs
                .iter()
                .flatten()
                .filter(|o| !matches!(graph.nodes.get(o.node).map(|p| &p.op), Some(Op::Constant(_))))
                .map(|&o| shape(o))
                .collect();
            let outs: Vec<String> = (0..n.outputs.len()).map(|s| shape(kiln_ir::OutletId::new(id, s))).collect();
            Layer { name: n.name.clone(), op: describe_op(&n.op), inputs, output: outs.join(", ") }
        })
        .collect()
}

fn write_dot(path: &std::path::Path, graph: &Graph) -> anyhow::Result<()> {
    std::fs::write(path, crate::dot::to_dot(graph)).with_context(|| format!("writing {}", path.display()))
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if is_plan(&args.model) {
        return crate::inspect_plan::main(&args.model, args.json, args.profile);
    }
    let model = kiln_onnx::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if args.optimized {
        return optimized(&args, &model.graph);
    }
    let g = &model.graph;
    if let Some(p) = &args.dot {
        write_dot(p, g)?;
    }
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

/// `--optimized`: the optimised graph's layers, the counts, and (verbose) the rewrites.
fn optimized(args: &Args, graph: &Graph) -> anyhow::Result<()> {
    let (g, report) = crate::optimize(graph, args.opt_level, args.layout)
        .with_context(|| format!("optimising {} at level {}", args.model.display(), args.opt_level))?;
    if let Some(p) = &args.dot {
        write_dot(p, &g)?;
    }
    let layers = layers(&g);
    if args.json {
        let out = json!({
            "model": args.model.display().to_string(),
            "opt_level": args.opt_level,
            "layout": format!("{:?}", args.layout).to_lowercase(),
            "nodes_before": report.nodes_before,
            "layers_after": report.layers_after,
            "layers": layers.iter().enumerate().map(|(i, l)| json!({
                "index": i, "name": l.name, "op": l.op, "inputs": l.inputs, "output": l.output,
            })).collect::<Vec<_>>(),
            "by_pass": report.by_pass().into_iter().map(|(p, n)| json!({"pass": p, "count": n})).collect::<Vec<_>>(),
            "rewrites": report.rewrites.iter().map(|r| json!({
                "pass": r.pass, "anchor": r.anchor, "removed": r.removed, "added": r.added,
            })).collect::<Vec<_>>(),
            "refused": report.refused.iter().map(|r| json!({
                "pass": r.pass, "anchor": r.anchor, "reason": r.reason,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model      {}", args.model.display());
    println!("opt level  {}", args.opt_level);
    println!("nodes      {} before, {} layers after", report.nodes_before, report.layers_after);
    let w_idx = layers.len().to_string().len().max(1);
    let w_name = layers.iter().map(|l| l.name.chars().count()).max().unwrap_or(4).clamp(4, 60);
    let w_op = layers.iter().map(|l| l.op.chars().count()).max().unwrap_or(2).clamp(2, 60);
    println!();
    println!("{:>w_idx$}  {:<w_name$}  {:<w_op$}  shapes", "#", "name", "op");
    for (i, l) in layers.iter().enumerate() {
        println!("{i:>w_idx$}  {:<w_name$}  {:<w_op$}  {} → {}", l.name, l.op, l.inputs.join(", "), l.output);
    }
    if args.verbose {
        println!();
        let passes: Vec<String> = report.by_pass().iter().map(|(p, n)| format!("{p} ×{n}")).collect();
        println!("rewrites   {} ({})", report.rewrites.len(), passes.join(", "));
        for r in &report.rewrites {
            println!("  {r}");
        }
        if !report.refused.is_empty() {
            println!("refused    {}", report.refused.len());
            for r in &report.refused {
                println!("  [{}] at '{}': {}", r.pass, r.anchor, r.reason);
            }
        }
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

/// Whether `path` starts with a plan's magic.
pub fn is_plan(path: &std::path::Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && &magic == kiln_engine::format::MAGIC
}
