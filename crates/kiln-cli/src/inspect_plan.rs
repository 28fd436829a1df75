//! `kiln inspect MODEL.kiln`: the engine summary and its layer table (trtexec's
//! `--dumpLayerInfo`), with `--profile` per-layer GPU time (`--dumpProfile`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use kiln_engine::meta::{Layer, LayerTensor, PlanMeta};
use kiln_engine::{LoadOptions, Runtime};
use serde_json::json;

/// Runs measured per layer with `--profile` (after as many warm-up runs).
const PROFILE_RUNS: usize = 10;

pub fn main(path: &Path, json_out: bool, profile: bool) -> anyhow::Result<()> {
    let engine =
        Runtime::new(LoadOptions::default()).load(path).with_context(|| format!("loading {}", path.display()))?;
    for w in engine.warnings() {
        eprintln!("warning: {w}");
    }
    let meta = engine.meta();
    let times = if profile { Some(layer_times(&engine)?) } else { None };
    if json_out {
        let layers: Vec<serde_json::Value> = meta.profiles[0]
            .layers
            .iter()
            .map(|l| {
                let mut v = json!(l);
                if let Some(t) = times.as_ref().and_then(|t| t.get(&l.name)) {
                    v["gpu_ms"] = json!(t);
                }
                v
            })
            .collect();
        let j = json!({"plan": path.display().to_string(), "plan_bytes": engine.file_bytes(), "meta": meta, "layers": layers});
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    print!("{}", summary(meta, engine.file_bytes()));
    print!("{}", table(&meta.profiles[0].layers, times.as_ref()));
    Ok(())
}

/// Mean GPU ms per layer (node name) over [`PROFILE_RUNS`] runs, launch by launch.
fn layer_times(engine: &kiln_engine::Engine) -> anyhow::Result<HashMap<String, f64>> {
    let mut ctx = engine.create_context()?;
    if !ctx.is_cuda() {
        anyhow::bail!("--profile times layers on the GPU; this is a CPU plan");
    }
    let inputs = ctx.zero_inputs()?;
    let mut total: HashMap<String, f64> = HashMap::new();
    for run in 0..2 * PROFILE_RUNS {
        let times = ctx.profile_layers(&inputs)?;
        if run >= PROFILE_RUNS {
            for t in times {
                *total.entry(t.node).or_default() += t.ms as f64 / PROFILE_RUNS as f64;
            }
        }
    }
    Ok(total)
}

fn summary(meta: &PlanMeta, file_bytes: usize) -> String {
    let mut s =
        format!("plan of {} ({:.2} MiB), Kiln {}\n", meta.model, file_bytes as f64 / 1048576.0, meta.kiln_version);
    match &meta.gpu {
        Some(g) => {
            s += &format!(
                "backend cuda: {} ({}), driver {}, NVRTC {}.{}, cuBLASLt {:?}, cuDNN {:?}\n",
                g.name,
                g.arch(),
                g.driver,
                g.nvrtc.0,
                g.nvrtc.1,
                g.cublaslt,
                g.cudnn
            )
        }
        None => s += "backend cpu\n",
    }
    s += &format!(
        "precision {}, opt level {}, algorithms timed: {}\n",
        meta.flags.precision.name(),
        meta.flags.opt_level,
        meta.flags.autotuned
    );
    let io = |v: &[kiln_engine::TensorDesc]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    s += &format!("inputs  {}\noutputs {}\n", io(&meta.inputs), io(&meta.outputs));
    for (i, p) in meta.profiles.iter().enumerate() {
        let shapes: Vec<String> = p.profile.inputs.iter().map(|r| r.to_string()).collect();
        s += &format!(
            "profile {i}: {}; {} layers, {} launches, arena {} B (unshared {} B), weights {} B, workspace {} B\n",
            shapes.join(", "),
            p.layers.len(),
            p.launches,
            p.memory.arena_bytes,
            p.memory.unshared_activation_bytes,
            p.memory.weight_bytes,
            p.memory.workspace_bytes
        );
    }
    if !meta.kernel_modules.is_empty() {
        s += &format!("kernel modules: {}\n", meta.kernel_modules.join(", "));
    }
    s
}

fn operands(v: &[LayerTensor]) -> String {
    v.iter()
        .map(|t| {
            let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            format!("{} {}[{}] {} {}", t.name, t.dtype, dims.join("x"), t.format, t.location)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn table(layers: &[Layer], times: Option<&HashMap<String, f64>>) -> String {
    let mut s = String::from("\nlayers (profile 0):\n");
    let total: f64 = times.map(|t| t.values().sum()).unwrap_or(0.0);
    for (i, l) in layers.iter().enumerate() {
        let time = times
            .and_then(|t| t.get(&l.name))
            .map(|ms| format!("  {:.4} ms ({:.1}%)", ms, 100.0 * ms / total.max(1e-12)))
            .unwrap_or_default();
        s += &format!("{i:>4}  {}  [{}] {}{time}\n", l.name, l.op, l.precision);
        s += &format!("        tactic: {}\n", l.tactics.join(" + "));
        s += &format!("        in:  {}\n", operands(&l.inputs));
        s += &format!("        out: {}\n", operands(&l.outputs));
        if l.weight_bytes > 0 {
            s += &format!("        weights: {} B\n", l.weight_bytes);
        }
    }
    if times.is_some() {
        s += &format!("total GPU time of the layers: {total:.4} ms (mean of {PROFILE_RUNS} runs, launch by launch)\n");
    }
    s
}
