//! `kiln conformance`: the ONNX backend node test cases (model.onnx plus
//! test_data_set_*/input_*.pb and output_*.pb) run on a backend and compared with
//! the expected outputs under the ONNX runner's tolerances.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_ir::{DType, Tensor};
use kiln_onnx::OnnxError;

use crate::backend::{Backend, BackendArg, RunError};
use rayon::prelude::*;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Backend to run the cases on: cpu, cuda (GPU 0; a graph the CUDA executor refuses
    /// when built counts as unsupported), or auto (CUDA when a GPU opens, else CPU).
    #[arg(long, value_enum, default_value_t = crate::backend::BackendArg::Cpu)]
    backend: crate::backend::BackendArg,
    /// Folder of the node test cases (default: the one in the Python `onnx` package
    /// found by `python3`, or $KILN_PYTHON).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Only run cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// A list of cases (one per line) that must pass; any that does not fails the run.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Write the names of the passing cases to this file.
    #[arg(long)]
    write_passing: Option<PathBuf>,
    /// Write a per-op report as Markdown.
    #[arg(long)]
    report_md: Option<PathBuf>,
    /// Write a per-case and per-op report as JSON.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Optimise each case's graph at this level before running it (0: as imported).
    #[arg(long, default_value_t = kiln_opt::pipeline::DEFAULT_LEVEL)]
    opt_level: u8,
    /// Layout of convolution regions (with the optimiser on).
    #[arg(long, value_enum, default_value_t = crate::LayoutArg::Nchw)]
    layout: crate::LayoutArg,
    /// With `--backend cuda`: plan and lower each case on the host only (no GPU is
    /// opened, nothing runs); "passed" then means the CUDA executor accepts the graph.
    #[arg(long)]
    lower_only: bool,
    /// Print every case, not only failures.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Passed,
    Failed,
    Unsupported,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    name: String,
    status: Status,
    ops: Vec<String>,
    detail: String,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let (backend, why) = match (args.lower_only, args.backend) {
        (true, BackendArg::Cuda) => (Backend::CudaLowering, "cuda lowering on the host".to_string()),
        (true, _) => bail!("--lower-only needs --backend cuda"),
        (false, b) => Backend::select(b)?,
    };
    if args.backend == BackendArg::Auto {
        eprintln!("backend {why}");
    }
    let data = match &args.data {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .filter(|p| args.filter.as_ref().is_none_or(|f| name_of(p).contains(f.as_str())))
        .collect();
    cases.sort();
    let run = |c: &PathBuf| run_case_guarded(c, &backend, args.opt_level, args.layout);
    // One GPU: its cases run one after another; the CPU's in parallel.
    let results: Vec<CaseResult> = match backend {
        Backend::Cpu | Backend::CudaLowering => cases.par_iter().map(run).collect(),
        Backend::Cuda(_) => cases.iter().map(run).collect(),
    };
    for r in &results {
        if r.status == Status::Failed || args.verbose {
            println!("{:<11} {}: {}", format!("{:?}", r.status).to_uppercase(), r.name, r.detail);
        }
    }
    let count = |s| results.iter().filter(|r| r.status == s).count();
    let passing: BTreeSet<&str> =
        results.iter().filter(|r| r.status == Status::Passed).map(|r| r.name.as_str()).collect();
    if let Some(p) = &args.write_passing {
        let text: String = passing.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.report_md {
        std::fs::write(p, markdown_report(backend.name(), &results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.report_json {
        let json = serde_json::json!({ "backend": backend.name(), "cases": results, "ops": per_op(&results) });
        std::fs::write(p, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", p.display()))?;
    }
    let mut ok = true;
    if let Some(p) = &args.expected {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let ran: BTreeSet<&str> = results.iter().map(|r| r.name.as_str()).collect();
        for want in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if args.filter.as_ref().is_some_and(|f| !want.contains(f.as_str())) {
                continue;
            }
            if !passing.contains(want) {
                let why = if ran.contains(want) { "did not pass" } else { "was not found" };
                println!("EXPECTED    {want}: listed in {} but {why}", p.display());
                ok = false;
            }
        }
    }
    println!(
        "conformance {}: {} passed, {} failed, {} unsupported (of {})",
        backend.name(),
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Unsupported),
        results.len()
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn name_of(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend', 'test', 'data', 'node'))";
    let out = std::process::Command::new(&python).args(["-c", script]).output();
    match out {
        Ok(o) if o.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        _ => bail!(
            "could not find the ONNX node test cases with {python} (is the onnx package installed?); pass --data DIR"
        ),
    }
}

fn run_case_guarded(dir: &Path, backend: &Backend, opt_level: u8, layout: crate::LayoutArg) -> CaseResult {
    let name = name_of(dir);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(dir, backend, opt_level, layout))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            CaseResult {
                name,
                status: Status::Failed,
                ops: vec![],
                detail: format!("PANIC: {}", msg.unwrap_or_default()),
            }
        }
    }
}

fn run_case(dir: &Path, backend: &Backend, opt_level: u8, layout: crate::LayoutArg) -> CaseResult {
    let name = name_of(dir);
    let model = match kiln_onnx::load(dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => {
            let status = if is_unsupported_import(&e) { Status::Unsupported } else { Status::Failed };
            return CaseResult { name, status, ops: vec![], detail: format!("import: {e}") };
        }
    };
    let ops: Vec<String> = model.graph.op_histogram().into_keys().collect();
    let result = |status, detail: String| CaseResult { name: name.clone(), status, ops: ops.clone(), detail };
    let graph = if opt_level == 0 {
        model.graph
    } else {
        match crate::optimize(&model.graph, opt_level, layout) {
            Ok((g, _)) => g,
            Err(e) => return result(Status::Failed, format!("optimize (level {opt_level}): {e}")),
        }
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| name_of(p).starts_with("test_data_set_")).collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return result(Status::Failed, "no test data sets".into());
    }
    for set in &sets {
        if let Err((status, msg)) = run_data_set(backend, &graph, set, opt_level) {
            return result(status, format!("{}: {msg}", name_of(set)));
        }
    }
    result(Status::Passed, String::new())
}

fn is_unsupported_import(e: &OnnxError) -> bool {
    match e {
        OnnxError::UnsupportedOp { .. } | OnnxError::UnsupportedOpset { .. } => true,
        OnnxError::Tensor { msg, .. } => msg.contains("not supported"),
        _ => false,
    }
}

fn read_numbered(set: &Path, prefix: &str) -> Result<Vec<Tensor>, (Status, String)> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = set.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        let (_, t) = kiln_onnx::read_tensor_file(&p).map_err(|e| {
            let status = if e.to_string().contains("not supported") { Status::Unsupported } else { Status::Failed };
            (status, format!("{prefix}_{i}.pb: {e}"))
        })?;
        out.push(t);
    }
    Ok(out)
}

fn run_data_set(backend: &Backend, graph: &kiln_ir::Graph, set: &Path, opt_level: u8) -> Result<(), (Status, String)> {
    let inputs = read_numbered(set, "input")?;
    let expected = read_numbered(set, "output")?;
    if inputs.len() != graph.inputs.len() {
        return Err((Status::Failed, format!("{} inputs given, the model takes {}", inputs.len(), graph.inputs.len())));
    }
    let options = crate::backend::BuildOptions { fp16: false, opt_level };
    let outputs = crate::backend::run_with(backend, graph, &inputs, options).map(|(o, _)| o).map_err(|e| match e {
        RunError::Unsupported(m) => (Status::Unsupported, m),
        RunError::Failed(m) => (Status::Failed, m),
    })?;
    if matches!(backend, Backend::CudaLowering) {
        return Ok(());
    }
    if outputs.len() != expected.len() {
        return Err((Status::Failed, format!("{} outputs, expected {}", outputs.len(), expected.len())));
    }
    for (i, (got, want)) in outputs.iter().zip(&expected).enumerate() {
        let name = graph.outlet_name(graph.outputs[i]);
        compare(got, want).map_err(|m| (Status::Failed, format!("output '{name}': {m}")))?;
    }
    Ok(())
}

/// The ONNX runner's check: same dtype and shape; floats within
/// |got - want| <= atol + rtol * |want| (rtol 1e-3, atol 1e-7), NaN where NaN;
/// everything else exactly equal.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} but expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} but expected {:?}", got.shape(), want.shape()));
    }
    if !got.dtype().is_float() || matches!(got.dtype(), DType::F8E4M3FN | DType::F8E5M2) {
        if got.bytes() != want.bytes() {
            let g = got.to_f64_vec().unwrap_or_default();
            let w = want.to_f64_vec().unwrap_or_default();
            let first = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "values differ (first at flat index {first}: {:?} vs {:?})",
                g.get(first),
                w.get(first)
            ));
        }
        return Ok(());
    }
    let (g, w) = (got.to_f64_vec().map_err(|e| e.to_string())?, want.to_f64_vec().map_err(|e| e.to_string())?);
    let (rtol, atol) = (1e-3, 1e-7);
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= atol + rtol * b.abs()
        };
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, x, y)| (a - b).abs() > (x - y).abs()) {
                worst = Some((i, a, b));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, a, b)) => Err(format!("{bad} of {} values out of tolerance (worst at {i}: {a} vs {b})", g.len())),
    }
}

#[derive(Default, Serialize)]
struct OpCount {
    passed: usize,
    failed: usize,
    unsupported: usize,
}

fn per_op(results: &[CaseResult]) -> BTreeMap<String, OpCount> {
    let mut m: BTreeMap<String, OpCount> = BTreeMap::new();
    for r in results {
        let ops = if r.ops.is_empty() { vec![op_from_name(&r.name)] } else { r.ops.clone() };
        for op in ops {
            let c = m.entry(op).or_default();
            match r.status {
                Status::Passed => c.passed += 1,
                Status::Failed => c.failed += 1,
                Status::Unsupported => c.unsupported += 1,
            }
        }
    }
    m
}

/// A guess at the op of a case that did not import ("test_reduce_sum_..." → "reduce").
fn op_from_name(name: &str) -> String {
    name.trim_start_matches("test_").split('_').next().unwrap_or("?").to_string()
}

fn markdown_report(backend: &str, results: &[CaseResult]) -> String {
    let mut s = format!(
        "# Conformance: {backend} backend\n\n| op | passed | failed | unsupported |\n| --- | ---: | ---: | ---: |\n"
    );
    for (op, c) in per_op(results) {
        s += &format!("| {op} | {} | {} | {} |\n", c.passed, c.failed, c.unsupported);
    }
    s += "\n## Failing cases\n\n";
    for r in results.iter().filter(|r| r.status == Status::Failed) {
        s += &format!("- `{}`: {}\n", r.name, r.detail.replace('\n', " "));
    }
    s
}
