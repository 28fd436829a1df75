//! `kiln bench MODEL.kiln|MODEL.onnx`: trtexec's performance report. Each of `--streams`
//! host threads drives `--contexts` execution contexts, each on its own CUDA stream:
//! every round enqueues one inference per context (inputs' copies, compute, outputs'
//! copies, with events between), then waits for them all.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::{Engine, ExecutionContext, LoadOptions, PhaseTimes, Runtime};
use kiln_ir::Tensor;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// A plan (.kiln) or an ONNX model (built in memory first, with the build flags).
    pub model: PathBuf,
    #[command(flatten)]
    pub build: crate::build::BuildArgs,
    /// Batch size: the first dim of every input (must lie in the plan's profile).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Warm-up time before measuring, ms.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Least measuring time, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Least number of measured inferences (per context).
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Host threads, each with its own contexts and streams (trtexec's --streams).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Execution contexts per thread, enqueued together from that thread.
    #[arg(long, default_value_t = 1)]
    pub contexts: usize,
    /// Launch kernel by kernel instead of replaying a CUDA graph.
    #[arg(long)]
    pub no_cuda_graph: bool,
    /// Leave the inputs' and outputs' copies out (device-resident data).
    #[arg(long)]
    pub no_data_transfers: bool,
    /// Load a plan built for another GPU architecture by JIT from its PTX.
    #[arg(long)]
    pub allow_ptx_fallback: bool,
    /// Also write the report as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, short)]
    pub verbose: bool,
}

/// One measured inference.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    latency_ms: f64,
    phases: PhaseTimes,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.streams == 0 || args.contexts == 0 {
        bail!("--streams and --contexts must be at least 1");
    }
    let engine = load_engine(&args)?;
    for w in engine.warnings() {
        eprintln!("warning: {w}");
    }
    let shapes = shapes_for(&engine, &args)?;
    let batch = shapes.first().and_then(|(_, d)| d.first().copied()).unwrap_or(1);
    let workers = args.streams;
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<Vec<Sample>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(|| worker(&engine, &args, &shapes))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a bench thread panicked"))))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64() - args.warmup as f64 / 1e3;
    let mut samples = Vec::new();
    for r in results {
        samples.extend(r?);
    }
    let report = Report::new(&engine, &args, batch, &samples, wall);
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn load_engine(args: &Args) -> anyhow::Result<Engine> {
    let options = LoadOptions {
        allow_ptx_fallback: args.allow_ptx_fallback,
        use_cuda_graph: !args.no_cuda_graph,
        ..LoadOptions::default()
    };
    let runtime = Runtime::new(options);
    if crate::inspect::is_plan(&args.model) {
        return runtime.load(&args.model).with_context(|| format!("loading {}", args.model.display()));
    }
    let (built, took) = crate::build::build(&args.model, &args.build, args.verbose)?;
    eprintln!("built {} in memory in {:.1} s", args.model.display(), took.as_secs_f64());
    let what = args.model.display().to_string();
    runtime.load_bytes(bytes::Bytes::from(built.bytes), &what).context("loading the plan just built")
}

/// The input shapes to run: the profile's optimal ones, with `--shapes` and `--batch`.
fn shapes_for(engine: &Engine, args: &Args) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
    let profile = &engine.meta().profiles[0].profile;
    let given = args.build.shapes.as_deref().map(kiln_engine::parse_shapes).transpose()?.unwrap_or_default();
    profile
        .inputs
        .iter()
        .map(|r| {
            let mut dims = given.iter().find(|(n, _)| *n == r.input).map(|(_, d)| d.clone()).unwrap_or(r.opt.clone());
            if let (Some(b), Some(first)) = (args.batch, dims.first_mut()) {
                *first = b;
            }
            if !r.contains(&dims) {
                bail!("input '{}': shape {dims:?} is outside the plan's profile ({r})", r.input);
            }
            Ok((r.input.clone(), dims))
        })
        .collect()
}

/// One host thread: its contexts, warmed up, then measured round by round.
fn worker(engine: &Engine, args: &Args, shapes: &[(String, Vec<usize>)]) -> anyhow::Result<Vec<Sample>> {
    let mut contexts = Vec::with_capacity(args.contexts);
    for _ in 0..args.contexts {
        let mut ctx = engine.create_context()?;
        for (name, dims) in shapes {
            ctx.set_input_shape(name, dims)?;
        }
        contexts.push(ctx);
    }
    let inputs = contexts[0].zero_inputs()?;
    let warmup = Duration::from_millis(args.warmup);
    let t0 = Instant::now();
    while t0.elapsed() < warmup {
        round(&mut contexts, &inputs, args)?;
    }
    let mut samples = Vec::new();
    let t1 = Instant::now();
    let least = Duration::from_secs_f64(args.duration.max(0.0));
    while t1.elapsed() < least || samples.len() < args.iterations * args.contexts {
        samples.extend(round(&mut contexts, &inputs, args)?);
    }
    Ok(samples)
}

/// One inference per context, enqueued together, then waited for.
fn round(contexts: &mut [ExecutionContext], inputs: &[Tensor], args: &Args) -> anyhow::Result<Vec<Sample>> {
    let t0 = Instant::now();
    if !contexts[0].is_cuda() {
        let out = contexts.iter_mut().map(|c| c.run(inputs).map(|_| ())).collect::<kiln_engine::Result<Vec<_>>>();
        out?;
        let ms = t0.elapsed().as_secs_f64() * 1e3 / contexts.len() as f64;
        let phases = PhaseTimes { compute_ms: ms as f32, ..PhaseTimes::default() };
        return Ok(vec![Sample { latency_ms: ms, phases }; contexts.len()]);
    }
    let data = if args.no_data_transfers { None } else { Some(inputs) };
    for c in contexts.iter_mut() {
        c.begin(data)?;
    }
    let mut samples = Vec::with_capacity(contexts.len());
    for c in contexts.iter_mut() {
        let phases = c.finish()?;
        samples.push(Sample { latency_ms: t0.elapsed().as_secs_f64() * 1e3, phases });
    }
    Ok(samples)
}

/// Summary statistics of one quantity, ms.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        // Nearest rank, as trtexec reports percentiles.
        let pct = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            min: v[0],
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: pct(50.0),
            p90: pct(90.0),
            p95: pct(95.0),
            p99: pct(99.0),
        }
    }

    fn line(&self) -> String {
        format!(
            "min = {:.4} ms, max = {:.4} ms, mean = {:.4} ms, median = {:.4} ms, percentile(90%) = {:.4} ms, percentile(95%) = {:.4} ms, percentile(99%) = {:.4} ms",
            self.min, self.max, self.mean, self.median, self.p90, self.p95, self.p99
        )
    }
}

struct Report {
    engine: String,
    backend: String,
    batch: usize,
    streams: usize,
    contexts: usize,
    cuda: bool,
    cuda_graph: bool,
    transfers: bool,
    inferences: usize,
    wall_s: f64,
    throughput_qps: f64,
    latency: Stats,
    enqueue: Stats,
    h2d: Stats,
    compute: Stats,
    d2h: Stats,
    warnings: Vec<String>,
}

impl Report {
    fn new(engine: &Engine, args: &Args, batch: usize, samples: &[Sample], wall_s: f64) -> Report {
        let stats = |f: &dyn Fn(&Sample) -> f64| Stats::of(samples.iter().map(f).collect());
        let compute = stats(&|s| s.phases.compute_ms as f64);
        let enqueue = stats(&|s| s.phases.enqueue_ms);
        let (h2d, d2h) = (stats(&|s| s.phases.h2d_ms as f64), stats(&|s| s.phases.d2h_ms as f64));
        let cuda = engine.meta().backend == kiln_engine::BackendKind::Cuda;
        let mut warnings = Vec::new();
        if cuda && enqueue.mean >= 0.8 * compute.mean {
            warnings.push(format!(
                "enqueue-bound: enqueueing takes {:.3} ms for {:.3} ms of GPU compute; the GPU waits on the host \
                 (use CUDA graphs, more --contexts or --streams)",
                enqueue.mean, compute.mean
            ));
        }
        if cuda && !args.no_data_transfers && h2d.mean + d2h.mean >= compute.mean {
            warnings.push(format!(
                "transfer-bound: copies take {:.3} ms (H2D {:.3} + D2H {:.3}) for {:.3} ms of compute \
                 (--no-data-transfers measures compute alone)",
                h2d.mean + d2h.mean,
                h2d.mean,
                d2h.mean,
                compute.mean
            ));
        }
        Report {
            engine: args.model.display().to_string(),
            backend: engine.meta().gpu.as_ref().map_or("cpu".into(), |g| format!("cuda ({})", g.name)),
            batch,
            streams: args.streams,
            contexts: args.contexts,
            cuda,
            cuda_graph: cuda && !args.no_cuda_graph,
            transfers: !args.no_data_transfers,
            inferences: samples.len(),
            wall_s,
            throughput_qps: samples.len() as f64 / wall_s.max(1e-9),
            latency: stats(&|s| s.latency_ms),
            enqueue,
            h2d,
            compute,
            d2h,
            warnings,
        }
    }

    fn text(&self) -> String {
        let mut s = String::from("=== Performance summary ===\n");
        s += &format!(
            "Engine: {} on {}; batch {}, {} stream(s) x {} context(s), CUDA graph {}, data transfers {}\n",
            self.engine,
            self.backend,
            self.batch,
            self.streams,
            self.contexts,
            if self.cuda_graph { "on" } else { "off" },
            if self.transfers { "on" } else { "off" }
        );
        s += &format!(
            "Throughput: {:.2} qps ({:.1} items/s; {} inferences in {:.2} s)\n",
            self.throughput_qps,
            self.throughput_qps * self.batch as f64,
            self.inferences,
            self.wall_s
        );
        s += &format!("Latency: {}\n", self.latency.line());
        if !self.cuda {
            // The CPU backend runs synchronously: compute is the latency.
            return s;
        }
        s += &format!("Enqueue Time: {}\n", self.enqueue.line());
        if self.transfers {
            s += &format!("H2D Latency: {}\n", self.h2d.line());
        }
        s += &format!("GPU Compute Time: {}\n", self.compute.line());
        if self.transfers {
            s += &format!("D2H Latency: {}\n", self.d2h.line());
        }
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "engine": self.engine,
            "backend": self.backend,
            "batch": self.batch,
            "streams": self.streams,
            "contexts": self.contexts,
            "cuda_graph": self.cuda_graph,
            "data_transfers": self.transfers,
            "inferences": self.inferences,
            "wall_s": self.wall_s,
            "throughput_qps": self.throughput_qps,
            "throughput_items_per_s": self.throughput_qps * self.batch as f64,
            "latency_ms": self.latency,
            "enqueue_ms": self.enqueue,
            "h2d_ms": self.h2d,
            "gpu_compute_ms": self.compute,
            "d2h_ms": self.d2h,
            "warnings": self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = Stats::of((1..=100).map(f64::from).collect());
        assert_eq!((s.min, s.max, s.median, s.p90, s.p95, s.p99), (1.0, 100.0, 50.0, 90.0, 95.0, 99.0));
        assert!((s.mean - 50.5).abs() < 1e-12);
        assert_eq!(Stats::of(vec![]).max, 0.0);
    }
}
