//! `kiln build MODEL.onnx -o MODEL.kiln`: trtexec's `--saveEngine` as its own verb.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::meta::{BackendKind, PlanMeta, PrecisionFlags};
use kiln_engine::{Builder, BuilderConfig, BuiltPlan, ProfileShapes, parse_shapes};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Where to write the plan.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Print every stage and the optimiser's report.
    #[arg(long, short)]
    pub verbose: bool,
    /// Also write the summary as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The flags of a build (shared with `kiln bench MODEL.onnx`).
#[derive(clap::Args, Clone, Debug)]
pub struct BuildArgs {
    /// Backend the plan is for: cuda (GPU 0), cpu, or auto (CUDA when a GPU opens).
    #[arg(long, value_enum, default_value_t = crate::backend::BackendArg::Auto)]
    pub backend: crate::backend::BackendArg,
    /// Let FP32 layers compute in FP16 (inputs and outputs stay FP32).
    #[arg(long)]
    pub fp16: bool,
    /// Let FP32 layers compute in BF16.
    #[arg(long)]
    pub bf16: bool,
    /// Let FP32 matrix products use TF32 tensor cores.
    #[arg(long)]
    pub tf32: bool,
    /// INT8 with calibration (not supported yet).
    #[arg(long)]
    pub int8: bool,
    /// FP8 (not supported yet).
    #[arg(long)]
    pub fp8: bool,
    /// Every precision (not supported yet: needs INT8 and FP8).
    #[arg(long)]
    pub best: bool,
    /// Fixed input shapes: NAME:1x3x224x224[,NAME:...].
    #[arg(long)]
    pub shapes: Option<String>,
    /// Smallest shapes of an optimisation profile (repeat the three flags for more profiles).
    #[arg(long = "min-shapes")]
    pub min_shapes: Vec<String>,
    /// Shapes a profile is tuned for.
    #[arg(long = "opt-shapes")]
    pub opt_shapes: Vec<String>,
    /// Largest shapes of a profile.
    #[arg(long = "max-shapes")]
    pub max_shapes: Vec<String>,
    /// Timing cache file: read before tuning, written after (same cache, same plan).
    #[arg(long)]
    pub timing_cache: Option<PathBuf>,
    /// Most workspace one layer may use, MiB.
    #[arg(long)]
    pub workspace: Option<usize>,
    /// Optimisation level (0: as imported; 3: everything).
    #[arg(long, default_value_t = kiln_opt::pipeline::DEFAULT_LEVEL)]
    pub opt_level: u8,
    /// Take the libraries' first algorithm instead of timing the candidates.
    #[arg(long)]
    pub no_autotune: bool,
}

impl BuildArgs {
    /// The builder's configuration, or a clear error for what is not there yet.
    pub fn config(&self) -> anyhow::Result<BuilderConfig> {
        for (set, flag) in [(self.int8, "--int8"), (self.fp8, "--fp8"), (self.best, "--best")] {
            if set {
                bail!(
                    "{flag} is not supported yet (INT8 calibration and FP8 come with the precision work); use --fp16, --bf16 or --tf32"
                );
            }
        }
        if self.fp16 && self.bf16 {
            bail!("--fp16 and --bf16 together: choose one");
        }
        let backend = match self.backend {
            crate::backend::BackendArg::Cpu => BackendKind::Cpu,
            crate::backend::BackendArg::Cuda => BackendKind::Cuda,
            crate::backend::BackendArg::Auto => match kiln_cuda::Device::open(0) {
                Ok(_) => BackendKind::Cuda,
                Err(e) => {
                    eprintln!("backend auto: cpu (no CUDA GPU: {e})");
                    BackendKind::Cpu
                }
            },
        };
        let n = self.opt_shapes.len();
        if self.min_shapes.len() > n || self.max_shapes.len() > n {
            bail!("each profile needs --opt-shapes (--min-shapes and --max-shapes default to it)");
        }
        let list =
            |v: &[String], i: usize| v.get(i).map(|s| parse_shapes(s)).transpose().map(Option::unwrap_or_default);
        let profiles = (0..n)
            .map(|i| {
                Ok(ProfileShapes {
                    min: list(&self.min_shapes, i)?,
                    opt: list(&self.opt_shapes, i)?,
                    max: list(&self.max_shapes, i)?,
                })
            })
            .collect::<kiln_engine::Result<Vec<_>>>()?;
        Ok(BuilderConfig {
            backend,
            precision: PrecisionFlags { fp16: self.fp16, bf16: self.bf16, tf32: self.tf32 },
            opt_level: self.opt_level,
            shapes: self.shapes.as_deref().map(parse_shapes).transpose()?.unwrap_or_default(),
            profiles,
            workspace_limit: self.workspace.map(|m| m << 20),
            autotune: !self.no_autotune,
            timing_cache: self.timing_cache.clone(),
            device: 0,
        })
    }
}

/// Builds `model` with `args`, showing the stages on stderr.
pub fn build(model: &Path, args: &BuildArgs, verbose: bool) -> anyhow::Result<(BuiltPlan, Duration)> {
    let config = args.config()?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let stage_bar = bar.clone();
    let builder = Builder::new(config).on_stage(move |s| {
        if verbose {
            stage_bar.println(format!("[kiln build] {s}"));
        }
        stage_bar.set_message(s.to_string());
    });
    let t0 = Instant::now();
    let built = builder.build_onnx(model);
    bar.finish_and_clear();
    let built = built.with_context(|| format!("building {}", model.display()))?;
    for w in &built.warnings {
        eprintln!("warning: {w}");
    }
    Ok((built, t0.elapsed()))
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let (built, took) = build(&args.model, &args.build, args.verbose)?;
    std::fs::write(&args.output, &built.bytes).with_context(|| format!("writing {}", args.output.display()))?;
    if args.verbose {
        let o = &built.optimizer;
        eprintln!("optimiser: {} nodes → {} layers, {} rewrites", o.nodes_before, o.layers_after, o.rewrites.len());
    }
    print!("{}", summary(&built.meta, built.bytes.len(), took, &args.output));
    if let Some(path) = &args.json {
        let j = summary_json(&built.meta, built.bytes.len(), took, &args.output);
        std::fs::write(path, serde_json::to_string_pretty(&j)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Layers per precision, e.g. "f16 120, f32 3".
pub fn precision_mix(meta: &PlanMeta) -> Vec<(String, usize)> {
    let mut mix = std::collections::BTreeMap::new();
    for l in &meta.profiles[0].layers {
        *mix.entry(l.precision.clone()).or_insert(0) += 1;
    }
    mix.into_iter().collect()
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn summary(meta: &PlanMeta, file_bytes: usize, took: Duration, path: &Path) -> String {
    let mut s =
        format!("built {} → {} ({}) in {:.1} s\n", meta.model, path.display(), mib(file_bytes), took.as_secs_f64());
    let target = match &meta.gpu {
        Some(g) => format!(
            "cuda on {} ({}), driver {}, cuBLASLt {:?}, cuDNN {:?}",
            g.name,
            g.arch(),
            g.driver,
            g.cublaslt,
            g.cudnn
        ),
        None => "cpu".into(),
    };
    s += &format!("  backend    {target}\n");
    let tuned = if meta.flags.autotuned { ", algorithms timed" } else { "" };
    s += &format!("  precision  {} (opt level {}{tuned})\n", meta.flags.precision.name(), meta.flags.opt_level);
    let mix: Vec<String> = precision_mix(meta).iter().map(|(p, n)| format!("{p} {n}")).collect();
    for (i, p) in meta.profiles.iter().enumerate() {
        let shapes: Vec<String> = p.profile.inputs.iter().map(|r| r.to_string()).collect();
        s += &format!("  profile {i}  {}\n", shapes.join(", "));
        s += &format!(
            "             {} layers ({}), {} launches; arena {} (activations unshared {}), weights {}, workspace {}\n",
            p.layers.len(),
            mix.join(", "),
            p.launches,
            mib(p.memory.arena_bytes),
            mib(p.memory.unshared_activation_bytes),
            mib(p.memory.weight_bytes),
            mib(p.memory.workspace_bytes)
        );
    }
    if !meta.kernel_modules.is_empty() {
        s += &format!("  kernels    {} modules: {}\n", meta.kernel_modules.len(), meta.kernel_modules.join(", "));
    }
    s
}

fn summary_json(meta: &PlanMeta, file_bytes: usize, took: Duration, path: &Path) -> serde_json::Value {
    json!({
        "plan": path.display().to_string(),
        "plan_bytes": file_bytes,
        "build_seconds": took.as_secs_f64(),
        "precision_mix": precision_mix(meta).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "meta": meta,
    })
}
