//! `kiln run`: import a model, run it on a backend (CPU, CUDA or auto), and summarise
//! its outputs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use kiln_ir::Tensor;
use serde_json::json;

use crate::inputs::{make_inputs, parse_input_arg, parse_shape_arg};

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model, or a plan (.kiln) from `kiln build`.
    model: PathBuf,
    /// An input from a .npy file (repeatable): NAME=FILE.npy.
    #[arg(long = "input", value_parser = parse_input_arg)]
    inputs: Vec<(String, PathBuf)>,
    /// Shape of a random input with dynamic dims (repeatable): NAME:1x3x224x224.
    #[arg(long = "shapes", value_parser = parse_shape_arg)]
    shapes: Vec<(String, Vec<usize>)>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write every output to DIR/<name>.npy.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Labels (.npy of integers) to score the first output against: accuracy of
    /// its argmax over the last axis.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Backend to run on: cpu, cuda (GPU 0), or auto (CUDA when a GPU opens, else CPU).
    #[arg(long, value_enum, default_value_t = crate::backend::BackendArg::Cpu)]
    backend: crate::backend::BackendArg,
    /// Optimisation level (0: run the graph as imported).
    #[arg(long, default_value_t = kiln_opt::pipeline::DEFAULT_LEVEL)]
    opt_level: u8,
    /// Layout of convolution regions (with the optimiser on).
    #[arg(long, value_enum, default_value_t = crate::LayoutArg::Nchw)]
    layout: crate::LayoutArg,
    /// Build in FP16 where the model computes in FP32 (CUDA backend; inputs and outputs
    /// stay FP32).
    #[arg(long)]
    fp16: bool,
    /// Also print the build: memory plan (arena vs. all activations), launches, CUDA graph.
    #[arg(long, short)]
    verbose: bool,
    /// With `--backend cuda`: bind, plan and lower on the host only (no GPU is opened,
    /// nothing runs) — checks that the CUDA executor accepts the model.
    #[arg(long)]
    lower_only: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    /// With a plan built for another GPU architecture: JIT its PTX instead of refusing it.
    #[arg(long)]
    allow_ptx_fallback: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if crate::inspect::is_plan(&args.model) {
        return run_plan(&args);
    }
    let (backend, why) = match (args.lower_only, args.backend) {
        (true, crate::backend::BackendArg::Cuda) => {
            (crate::backend::Backend::CudaLowering, "cuda lowering on the host (nothing runs)".to_string())
        }
        (true, _) => bail!("--lower-only needs --backend cuda"),
        (false, b) => crate::backend::Backend::select(b)?,
    };
    if args.backend == crate::backend::BackendArg::Auto {
        eprintln!("backend {why}");
    }
    let t0 = Instant::now();
    let model = kiln_onnx::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t_opt = Instant::now();
    let optimized;
    let (graph, layers) = if args.opt_level == 0 {
        (&model.graph, kiln_opt::layer_count(&model.graph))
    } else {
        let (g, report) = crate::optimize(&model.graph, args.opt_level, args.layout)
            .with_context(|| format!("optimising {} at level {}", args.model.display(), args.opt_level))?;
        optimized = g;
        (&optimized, report.layers_after)
    };
    let opt_ms = t_opt.elapsed().as_secs_f64() * 1e3;
    let mut notes = Vec::new();
    let inputs = make_inputs(graph, &args.inputs, &args.shapes, args.seed, &mut notes)?;
    let t1 = Instant::now();
    let build = crate::backend::BuildOptions { fp16: args.fp16, opt_level: args.opt_level };
    let (outputs, info) = crate::backend::run_or_fail(&backend, graph, &inputs, build)
        .with_context(|| format!("running {}", args.model.display()))?;
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;
    let names: Vec<String> = graph.outputs.iter().map(|o| graph.outlet_name(*o).to_string()).collect();
    let accuracy = save_and_score(&args, &names, &outputs)?;
    if args.json {
        let outs: Vec<_> = names.iter().zip(&outputs).map(|(n, t)| summary_json(n, t)).collect();
        let report = json!({
            "model": args.model.display().to_string(), "backend": backend.name(),
            "load_ms": load_ms, "opt_level": args.opt_level, "optimize_ms": opt_ms,
            "nodes": kiln_opt::layer_count(&model.graph), "layers": layers, "run_ms": run_ms, "notes": notes, "outputs": outs,
            "accuracy": accuracy.map(|(c, n)| json!({"correct": c, "total": n, "accuracy": c as f64 / n as f64})),
            "build": info.as_ref().map(build_json),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    println!("model   {} ({} nodes, loaded in {load_ms:.1} ms)", args.model.display(), model.graph.nodes.len());
    if args.opt_level > 0 {
        println!(
            "opt     level {} ({} nodes → {layers} layers, in {opt_ms:.1} ms)",
            args.opt_level,
            kiln_opt::layer_count(&model.graph)
        );
    }
    println!("backend {why} (built and ran in {run_ms:.1} ms)");
    if let (true, Some(i)) = (args.verbose, &info) {
        println!(
            "build   {}, {} launches, CUDA graph {}",
            i.precision,
            i.launches,
            if i.cuda_graph { "on" } else { "off" }
        );
        println!("memory  {}; workspace {}", i.memory, mib(i.workspace_bytes));
    }
    for (name, t) in names.iter().zip(&outputs) {
        println!("output  {name}: {} {:?}  {}", t.dtype(), t.shape(), summary_text(t));
    }
    if let Some((c, n)) = accuracy {
        println!(
            "accuracy {:.2}% ({c}/{n}) of the argmax of '{}' against {}",
            100.0 * c as f64 / n as f64,
            names.first().map_or("?", String::as_str),
            args.labels.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(())
}

/// `--output-dir` and `--labels`: the outputs written, the first one scored.
fn save_and_score(args: &Args, names: &[String], outputs: &[Tensor]) -> anyhow::Result<Option<(usize, usize)>> {
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, t) in names.iter().zip(outputs) {
            crate::npy::write(&dir.join(format!("{}.npy", file_stem(name))), t)?;
        }
    }
    match (&args.labels, outputs.first()) {
        (Some(p), Some(first)) => Ok(Some(accuracy(first, &crate::npy::read(p)?)?)),
        (Some(_), None) => bail!("--labels needs a model with an output to score"),
        (None, _) => Ok(None),
    }
}

/// `kiln run MODEL.kiln`: a plan loaded and run once (trtexec's `--loadEngine`).
fn run_plan(args: &Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let options = kiln_engine::LoadOptions { allow_ptx_fallback: args.allow_ptx_fallback, ..Default::default() };
    let engine = kiln_engine::Runtime::new(options)
        .load(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    for w in engine.warnings() {
        eprintln!("warning: {w}");
    }
    let mut notes = Vec::new();
    let inputs = make_inputs(engine.graph(), &args.inputs, &args.shapes, args.seed, &mut notes)?;
    let t1 = Instant::now();
    let mut ctx = engine.create_context()?;
    let outputs = ctx.run(&inputs).with_context(|| format!("running {}", args.model.display()))?;
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;
    let names: Vec<String> = engine.outputs().iter().map(|d| d.name.clone()).collect();
    let accuracy = save_and_score(args, &names, &outputs)?;
    let backend = engine.meta().gpu.as_ref().map_or("cpu".to_string(), |g| format!("cuda ({})", g.name));
    if args.json {
        let outs: Vec<_> = names.iter().zip(&outputs).map(|(n, t)| summary_json(n, t)).collect();
        let report = json!({
            "plan": args.model.display().to_string(), "backend": backend, "load_ms": load_ms,
            "run_ms": run_ms, "notes": notes, "outputs": outs,
            "accuracy": accuracy.map(|(c, n)| json!({"correct": c, "total": n, "accuracy": c as f64 / n as f64})),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    println!(
        "plan    {} ({:.2} MiB, loaded in {load_ms:.1} ms)",
        args.model.display(),
        engine.file_bytes() as f64 / 1048576.0
    );
    println!("backend {backend} (context made and ran in {run_ms:.1} ms)");
    for (name, t) in names.iter().zip(&outputs) {
        println!("output  {name}: {} {:?}  {}", t.dtype(), t.shape(), summary_text(t));
    }
    if let Some((c, n)) = accuracy {
        println!("accuracy {:.2}% ({c}/{n})", 100.0 * c as f64 / n as f64);
    }
    Ok(())
}

/// An output name as a file stem: anything outside [A-Za-z0-9_.-] becomes '_'.
pub fn file_stem(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    head: Vec<f64>,
}

fn stats(t: &Tensor) -> Option<Stats> {
    let v = t.to_f64_vec().ok()?;
    if v.is_empty() {
        return None;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some(Stats { min, max, mean, head: v.iter().take(5).copied().collect() })
}

fn summary_text(t: &Tensor) -> String {
    match stats(t) {
        None => "(empty)".into(),
        Some(s) => {
            let head: Vec<String> = s.head.iter().map(|v| format!("{v:.5}")).collect();
            format!(
                "min {:.5} max {:.5} mean {:.5}  [{}{}]",
                s.min,
                s.max,
                s.mean,
                head.join(", "),
                if t.len() > 5 { ", …" } else { "" }
            )
        }
    }
}

fn summary_json(name: &str, t: &Tensor) -> serde_json::Value {
    let s = stats(t);
    json!({
        "name": name, "dtype": t.dtype().name(), "shape": t.shape(),
        "min": s.as_ref().map(|s| s.min), "max": s.as_ref().map(|s| s.max),
        "mean": s.as_ref().map(|s| s.mean), "head": s.map(|s| s.head),
    })
}

/// (correct, total) of the argmax over the last axis of `scores` against `labels`.
fn accuracy(scores: &Tensor, labels: &Tensor) -> anyhow::Result<(usize, usize)> {
    let classes = *scores.shape().last().context("the first output is a scalar; cannot score it")?;
    let v = scores.to_f64_vec()?;
    let labels = labels.to_i64_vec().context("labels must be integers")?;
    if classes == 0 || v.len() / classes != labels.len() {
        bail!("{} labels for {} rows of scores {:?}", labels.len(), v.len() / classes.max(1), scores.shape());
    }
    let correct = v
        .chunks(classes)
        .zip(&labels)
        .filter(|&(row, &l)| {
            let best = row.iter().enumerate().fold(0, |b, (i, x)| if *x > row[b] { i } else { b });
            best as i64 == l
        })
        .count();
    Ok((correct, labels.len()))
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn build_json(i: &crate::backend::BuildInfo) -> serde_json::Value {
    json!({
        "precision": i.precision, "launches": i.launches, "cuda_graph": i.cuda_graph,
        "arena_bytes": i.memory.arena_bytes, "activation_bytes": i.memory.unshared_activation_bytes,
        "weight_bytes": i.memory.weight_bytes, "workspace_bytes": i.workspace_bytes,
    })
}
