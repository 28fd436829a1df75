//! `kiln build`, `kiln run PLAN`, `kiln inspect PLAN` and `kiln bench` on the CPU backend
//! (the CUDA path is the same code with a GPU; scripts/gpu-check runs it there).

mod support;
use support::{kiln, temp_dir};

use std::path::PathBuf;

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path).display().to_string()
}

fn build_digits(dir: &std::path::Path, extra: &[&str]) -> String {
    let plan = dir.join("digits.kiln").display().to_string();
    let model = repo("models/digits/digits.onnx");
    let mut args = vec!["build", model.as_str(), "-o", plan.as_str(), "--backend", "cpu"];
    args.extend(extra);
    let (ok, out, err) = kiln(&args);
    assert!(ok, "build failed: {err}");
    assert!(out.contains("built digits.onnx") && out.contains("profile 0"), "{out}");
    plan
}

#[test]
fn build_run_inspect_bench_a_cpu_plan() {
    let dir = temp_dir("digits");
    let json = dir.join("build.json").display().to_string();
    let plan = build_digits(&dir, &["--shapes", "image:360x1x8x8", "--json", &json]);
    let build: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(build["meta"]["backend"], "cpu");
    assert_eq!(build["precision_mix"]["f32"], 7);

    // The plan scores the held-out digits as the model does (99.44%).
    let (images, labels) = (repo("models/digits/heldout_images.npy"), repo("models/digits/heldout_labels.npy"));
    let (ok, out, err) = kiln(&["run", &plan, "--input", &format!("image={images}"), "--labels", &labels]);
    assert!(ok, "{err}");
    assert!(out.contains("accuracy 99.44% (358/360)"), "{out}");

    let (ok, out, err) = kiln(&["inspect", &plan]);
    assert!(ok, "{err}");
    assert!(out.contains("backend cpu") && out.contains("FusedConv") && out.contains("[360x16x8x8]"), "{out}");
    let (ok, out, _) = kiln(&["inspect", &plan, "--json"]);
    assert!(ok);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["layers"].as_array().unwrap().len(), 7);

    let bench_json = dir.join("bench.json").display().to_string();
    let (ok, out, err) = kiln(&["bench", &plan, "--duration", "0.2", "--warmup", "10", "--json", &bench_json]);
    assert!(ok, "{err}");
    assert!(out.contains("Throughput:") && out.contains("percentile(99%)"), "{out}");
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bench_json).unwrap()).unwrap();
    assert_eq!(b["batch"], 360);
    assert!(b["throughput_qps"].as_f64().unwrap() > 0.0 && b["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_builds_an_onnx_model_in_memory_with_profiles_and_threads() {
    let model = repo("models/digits/digits.onnx");
    let (ok, out, err) = kiln(&[
        "bench",
        &model,
        "--backend",
        "cpu",
        "--min-shapes",
        "image:1x1x8x8",
        "--opt-shapes",
        "image:4x1x8x8",
        "--max-shapes",
        "image:16x1x8x8",
        "--batch",
        "16",
        "--streams",
        "2",
        "--contexts",
        "2",
        "--duration",
        "0.1",
        "--warmup",
        "0",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("batch 16, 2 stream(s) x 2 context(s)"), "{out}");
    let (ok, _, err) = kiln(&["bench", &model, "--backend", "cpu", "--batch", "2", "--shapes", "image:1x1x8x8"]);
    assert!(!ok && err.contains("outside the plan's profile"), "{err}");
}

#[test]
fn plan_errors_are_named() {
    let dir = temp_dir("errors");
    let model = repo("models/digits/digits.onnx");
    let out_path = dir.join("x.kiln").display().to_string();
    for (flag, want) in [("--int8", "--int8 is not supported yet"), ("--fp16", "on the CPU backend")] {
        let (ok, _, err) = kiln(&["build", &model, "-o", &out_path, "--backend", "cpu", flag]);
        assert!(!ok && err.contains(want), "{flag}: {err}");
    }
    let (ok, _, err) = kiln(&["build", &model, "-o", &out_path, "--backend", "cpu", "--shapes", "img:1x1x8x8"]);
    assert!(!ok && err.contains("no input named 'img'") && err.contains("image"), "{err}");

    let plan = build_digits(&dir, &[]);
    let bytes = std::fs::read(&plan).unwrap();
    let truncated = dir.join("truncated.kiln");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = kiln(&["run", truncated.to_str().unwrap()]);
    assert!(!ok && err.contains("corrupt plan") && err.contains("truncated"), "{err}");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x10;
    let flipped_path = dir.join("flipped.kiln");
    std::fs::write(&flipped_path, &flipped).unwrap();
    let (ok, _, err) = kiln(&["inspect", flipped_path.to_str().unwrap()]);
    assert!(!ok && err.contains("checksum mismatch"), "{err}");
    let (ok, _, err) = kiln(&["bench", &plan, "--streams", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = kiln(&["run", &plan, "--shapes", "image:2x1x8x8"]);
    assert!(!ok && err.contains("outside profile 0"), "{err}");
}
