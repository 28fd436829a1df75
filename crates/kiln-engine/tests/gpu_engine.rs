//! Plans on the GPU (run by scripts/gpu-check on the device): build → save → load in a
//! fresh process gives outputs identical to the in-memory engine; a timing cache makes
//! builds byte-identical; contexts share weights across threads; shapes inside a
//! profile; FP16; a plan from another GPU is refused unless PTX fallback is allowed.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use kiln_engine::format::{self, Container};
use kiln_engine::{Builder, BuilderConfig, EngineError, LoadOptions, PrecisionFlags, ProfileShapes, Runtime};
use kiln_ir::Tensor;

/// The bundled model: beside the sources, or (on the device, where the binary runs in
/// a copy of the repository) under the working directory.
fn digits_model() -> PathBuf {
    let built_here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/digits.onnx");
    if built_here.exists() { built_here } else { PathBuf::from("models/digits/digits.onnx") }
}

fn config(precision: PrecisionFlags, cache: Option<PathBuf>) -> BuilderConfig {
    let dims = |b: usize| vec![("image".to_string(), vec![b, 1, 8, 8])];
    let profile = ProfileShapes { min: dims(1), opt: dims(8), max: dims(32) };
    BuilderConfig { precision, profiles: vec![profile], timing_cache: cache, ..BuilderConfig::default() }
}

fn image(batch: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_add(0x9e3779b97f4a7c15);
    let v: Vec<f32> = (0..batch * 64)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0 + 1e-3
        })
        .collect();
    Tensor::from_vec(vec![batch, 1, 8, 8], v).unwrap()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

fn reference(x: &Tensor) -> Tensor {
    let model = kiln_onnx::load(digits_model()).unwrap();
    kiln_cpu::run(&model.graph, std::slice::from_ref(x)).unwrap().remove(0)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-gpu-engine-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_saved_plan_runs_identically_in_a_fresh_process() {
    let built = Builder::new(config(PrecisionFlags::default(), None)).build_onnx(&digits_model()).unwrap();
    let engine = Runtime::default().load_bytes(Bytes::from(built.bytes.clone()), "in memory").unwrap();
    let x = image(8, 1);
    let here = engine.create_context().unwrap().run(std::slice::from_ref(&x)).unwrap().remove(0);
    let err = rel_l2(&here, &reference(&x));
    assert!(err < 1e-4, "FP32 plan vs CPU reference: rel L2 {err}");

    let plan = temp("digits.kiln");
    let out = temp("child-output.bin");
    std::fs::write(&plan, &built.bytes).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_loads_and_runs_a_plan", "--nocapture"])
        .env("KILN_TEST_PLAN", &plan)
        .env("KILN_TEST_OUT", &out)
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed");
    let there = std::fs::read(&out).unwrap();
    assert!(there[..] == here.bytes()[..], "outputs differ between the in-memory engine and the fresh process");
    eprintln!("fresh process: {} output bytes identical; rel L2 vs CPU {err:.2e}", there.len());
}

/// The other half of the test above (does nothing unless it set the variables).
#[test]
#[ignore = "needs a CUDA GPU"]
fn child_loads_and_runs_a_plan() {
    let (Some(plan), Some(out)) = (std::env::var_os("KILN_TEST_PLAN"), std::env::var_os("KILN_TEST_OUT")) else {
        return;
    };
    // Opening the GPU (driver context, cuBLASLt and cuDNN handles) is most of a first
    // load; a second load in the same process shows the plan's own cost.
    for round in ["first", "second"] {
        let t0 = std::time::Instant::now();
        let engine = Runtime::default().load(Path::new(&plan)).unwrap();
        let t1 = std::time::Instant::now();
        drop(engine.create_context().unwrap());
        let (load, ctx) = ((t1 - t0).as_secs_f64() * 1e3, t1.elapsed().as_secs_f64() * 1e3);
        eprintln!("child: {round} load {load:.1} ms (GPU opened, plan checked), context {ctx:.1} ms");
    }
    let engine = Runtime::default().load(Path::new(&plan)).unwrap();
    let mut ctx = engine.create_context().unwrap();
    let y = ctx.run(&[image(8, 1)]).unwrap().remove(0);
    std::fs::write(out, y.bytes()).unwrap();
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_timing_cache_makes_builds_byte_identical() {
    let cache = temp("timing.cache");
    let _ = std::fs::remove_file(&cache);
    let build =
        || Builder::new(config(PrecisionFlags::default(), Some(cache.clone()))).build_onnx(&digits_model()).unwrap();
    let first = build();
    assert!(cache.exists(), "the timing cache was not written");
    let (second, third) = (build(), build());
    assert!(second.bytes == third.bytes, "two builds with one timing cache differ");
    assert!(first.bytes == second.bytes, "the build that filled the cache chose differently from its replay");
    let layers = &second.meta.profiles[0].layers;
    assert!(layers.iter().all(|l| !l.tactics.is_empty()), "a layer without a tactic: {layers:#?}");
    eprintln!("tactics: {:?}", layers.iter().map(|l| l.tactics.join("+")).collect::<Vec<_>>());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn contexts_share_weights_across_threads_and_shapes() {
    let built = Builder::new(config(PrecisionFlags::default(), None)).build_onnx(&digits_model()).unwrap();
    let engine = Runtime::default().load_bytes(Bytes::from(built.bytes), "digits").unwrap();
    let x = image(8, 2);
    let want = engine.create_context().unwrap().run(std::slice::from_ref(&x)).unwrap().remove(0);
    let weights = engine.device_weight_bytes();
    assert!(weights > 0);
    let outs: Vec<Tensor> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (engine, x) = (engine.clone(), x.clone());
                s.spawn(move || {
                    let mut ctx = engine.create_context().unwrap();
                    (0..20).map(|_| ctx.run(std::slice::from_ref(&x)).unwrap().remove(0)).last().unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(o.bytes() == want.bytes(), "a context on another thread computed something else");
    }
    assert_eq!(engine.device_weight_bytes(), weights, "contexts uploaded their own weights");
    // Other shapes inside the profile: planned on the host, same weights.
    let mut ctx = engine.create_context().unwrap();
    for batch in [1, 3, 32] {
        let x = image(batch, batch as u64);
        let y = ctx.run(std::slice::from_ref(&x)).unwrap().remove(0);
        let err = rel_l2(&y, &reference(&x));
        assert!(err < 1e-4, "batch {batch}: rel L2 {err}");
    }
    let outside = ctx.run(&[image(33, 0)]).unwrap_err().to_string();
    assert!(outside.contains("outside profile 0"), "{outside}");
    eprintln!("device weights {weights} B with 6 contexts; after other shapes {} B", engine.device_weight_bytes());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn fp16_and_bf16_plans_and_phase_times() {
    for (name, precision) in [
        ("fp16", PrecisionFlags { fp16: true, ..Default::default() }),
        ("bf16", PrecisionFlags { bf16: true, ..Default::default() }),
    ] {
        let built = Builder::new(config(precision, None)).build_onnx(&digits_model()).unwrap();
        let dtype = if name == "fp16" { "f16" } else { "bf16" };
        assert!(built.meta.profiles[0].layers.iter().any(|l| l.precision == dtype), "{name}: no {dtype} layer");
        let engine = Runtime::default().load_bytes(Bytes::from(built.bytes), name).unwrap();
        let mut ctx = engine.create_context().unwrap();
        let x = image(8, 5);
        let err = rel_l2(&ctx.run(std::slice::from_ref(&x)).unwrap()[0], &reference(&x));
        let tolerance = if name == "fp16" { 1e-2 } else { 3e-2 };
        assert!(err < tolerance, "{name}: rel L2 {err}");
        ctx.begin(Some(std::slice::from_ref(&x))).unwrap();
        let t = ctx.finish().unwrap();
        assert!(t.compute_ms > 0.0 && t.h2d_ms > 0.0 && t.d2h_ms > 0.0, "{name}: {t:?}");
        eprintln!("{name}: rel L2 {err:.2e}; phases {t:?}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_plan_for_another_gpu_is_refused_or_jit_compiled() {
    let built = Builder::new(config(PrecisionFlags::default(), None)).build_onnx(&digits_model()).unwrap();
    let c = Container::parse(Bytes::from(built.bytes), "t").unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&c.section("META").unwrap()).unwrap();
    meta["gpu"]["compute_capability"] = serde_json::json!([8, 0]);
    meta["gpu"]["name"] = "NVIDIA A100-SXM4-80GB".into();
    let other = format::replace_section(&c, "META", serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = Runtime::default().load_bytes(Bytes::from(other.clone()), "a100.kiln").err().unwrap();
    assert!(matches!(err, EngineError::Mismatch(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("A100") && msg.contains("sm_80") && msg.contains("--allow-ptx-fallback"), "{msg}");
    let fallback = LoadOptions { allow_ptx_fallback: true, ..LoadOptions::default() };
    let engine = Runtime::new(fallback).load_bytes(Bytes::from(other), "a100.kiln").unwrap();
    assert!(!engine.warnings().is_empty());
    let x = image(8, 7);
    let err = rel_l2(&engine.create_context().unwrap().run(std::slice::from_ref(&x)).unwrap()[0], &reference(&x));
    assert!(err < 1e-4, "with PTX fallback: rel L2 {err}");
    eprintln!("refused: {msg}\nwith fallback: {:?}", engine.warnings());
}
