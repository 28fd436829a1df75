//! Plans on the CPU backend (no GPU needed): build → bytes → load → run gives what the
//! reference gives; builds are byte-identical; profiles bound shapes; bad input and
//! damaged files are errors, never panics.

use std::path::PathBuf;

use bytes::Bytes;
use kiln_engine::format::{self, Container};
use kiln_engine::meta::BackendKind;
use kiln_engine::{Builder, BuilderConfig, EngineError, LoadOptions, ProfileShapes, Runtime};
use kiln_ir::{DType, Tensor};

fn digits_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/digits.onnx")
}

fn cpu_config() -> BuilderConfig {
    BuilderConfig { backend: BackendKind::Cpu, autotune: false, ..BuilderConfig::default() }
}

fn batch_config(min: usize, opt: usize, max: usize) -> BuilderConfig {
    let dims = |b: usize| vec![("image".to_string(), vec![b, 1, 8, 8])];
    let profile = ProfileShapes { min: dims(min), opt: dims(opt), max: dims(max) };
    BuilderConfig { profiles: vec![profile], ..cpu_config() }
}

/// Deterministic non-zero values (an LCG; no dependency for ten lines).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 1e-3
        })
        .collect()
}

fn image(batch: usize, seed: u64) -> Tensor {
    Tensor::from_vec(vec![batch, 1, 8, 8], values(batch * 64, seed)).unwrap()
}

#[test]
fn round_trip_matches_the_reference() {
    let built = Builder::new(batch_config(1, 4, 16)).build_onnx(&digits_model()).unwrap();
    let dir = tempdir();
    let path = dir.join("digits.kiln");
    std::fs::write(&path, &built.bytes).unwrap();
    let engine = Runtime::new(LoadOptions::default()).load(&path).unwrap();
    assert_eq!(engine.inputs()[0].name, "image");
    assert_eq!(engine.meta().backend, BackendKind::Cpu);
    let model = kiln_onnx::load(digits_model()).unwrap();
    let mut ctx = engine.create_context().unwrap();
    for batch in [1, 4, 16] {
        let x = image(batch, batch as u64);
        let got = ctx.run(std::slice::from_ref(&x)).unwrap();
        let want = kiln_cpu::run(&model.graph, &[x]).unwrap();
        assert_eq!(got.len(), want.len());
        let (g, w) = (got[0].to_f64_vec().unwrap(), want[0].to_f64_vec().unwrap());
        let err = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-4, "batch {batch}: max abs error {err}");
    }
    // Several contexts of one engine run side by side.
    let engine2 = engine.clone();
    let handle = std::thread::spawn(move || engine2.create_context().unwrap().run(&[image(2, 9)]).unwrap());
    let here = engine.create_context().unwrap().run(&[image(2, 9)]).unwrap();
    assert_eq!(handle.join().unwrap()[0].bytes(), here[0].bytes());
}

#[test]
fn builds_are_byte_identical() {
    let a = Builder::new(batch_config(1, 4, 16)).build_onnx(&digits_model()).unwrap();
    let b = Builder::new(batch_config(1, 4, 16)).build_onnx(&digits_model()).unwrap();
    assert!(a.bytes == b.bytes, "two builds of the same model with the same flags differ");
    let c = Builder::new(batch_config(1, 8, 16)).build_onnx(&digits_model()).unwrap();
    assert!(a.bytes != c.bytes);
}

#[test]
fn binding_errors_name_the_thing() {
    let built = Builder::new(batch_config(1, 4, 16)).build_onnx(&digits_model()).unwrap();
    let engine = Runtime::default().load_bytes(Bytes::from(built.bytes), "digits.kiln").unwrap();
    let mut ctx = engine.create_context().unwrap();
    let err = |r: kiln_engine::Result<()>| r.unwrap_err().to_string();
    assert!(err(ctx.set_input_shape("image", &[32, 1, 8, 8])).contains("outside profile 0"));
    assert!(err(ctx.set_input_shape("images", &[1, 1, 8, 8])).contains("no input named 'images'"));
    let wrong_dtype = Tensor::zeros(DType::F64, vec![1, 1, 8, 8]);
    assert!(ctx.run(&[wrong_dtype]).unwrap_err().to_string().contains("must be f32"));
    assert!(ctx.run(&[]).unwrap_err().to_string().contains("takes 1 inputs"));
    assert!(ctx.set_optimization_profile(3).is_err());
    let missing = ctx.run_named(&[]).unwrap_err().to_string();
    assert!(missing.contains("input 'image'"), "{missing}");
}

#[test]
fn build_flags_are_checked() {
    let bad =
        |c: BuilderConfig| Builder::new(c).build_onnx(&digits_model()).err().map(|e| e.to_string()).unwrap_or_default();
    let mut fp16 = cpu_config();
    fp16.precision.fp16 = true;
    assert!(bad(fp16).contains("CPU backend"));
    let mut shapes = cpu_config();
    shapes.shapes = vec![("nope".into(), vec![1])];
    assert!(bad(shapes).contains("no input named 'nope'"));
    assert!(bad(batch_config(8, 4, 16)).contains("min ≤ opt ≤ max"));
    let mut rank = cpu_config();
    rank.shapes = vec![("image".into(), vec![1, 64])];
    assert!(bad(rank).contains("does not fit"));
}

#[test]
fn not_a_plan_and_wrong_versions() {
    let rt = Runtime::default();
    let onnx = std::fs::read(digits_model()).unwrap();
    assert!(matches!(rt.load_bytes(Bytes::from(onnx), "digits.onnx"), Err(EngineError::NotAPlan(_))));
    let dir = tempdir();
    let empty = dir.join("empty.kiln");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(rt.load(&empty), Err(EngineError::NotAPlan(_))));
    assert!(matches!(rt.load(dir.join("missing.kiln")), Err(EngineError::Io { .. })));

    let built = Builder::new(cpu_config()).build_onnx(&digits_model()).unwrap();
    // Another Kiln: the metadata names the version that built it.
    let c = Container::parse(Bytes::from(built.bytes.clone()), "t").unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&c.section("META").unwrap()).unwrap();
    meta["kiln_version"] = "0.0.1 (someone else)".into();
    let file = format::replace_section(&c, "META", serde_json::to_vec(&meta).unwrap()).unwrap();
    let e = rt.load_bytes(Bytes::from(file), "old.kiln").err().unwrap().to_string();
    assert!(e.contains("built by Kiln 0.0.1"), "{e}");
}

/// Every truncation and 400 random corruptions (some with the checksum made to match, to
/// reach the decoders behind it) are errors: never a panic, never a plan that loads.
#[test]
fn damaged_plans_are_errors() {
    let built = Builder::new(batch_config(1, 2, 4)).build_onnx(&digits_model()).unwrap();
    let good = built.bytes;
    let rt = Runtime::default();
    for cut in (0..good.len()).step_by(good.len() / 97 + 1) {
        assert!(rt.load_bytes(Bytes::copy_from_slice(&good[..cut]), "cut").is_err(), "truncated at {cut} loads");
    }
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut loaded_after_reseal, mut runs) = (0, 0);
    for i in 0..400 {
        let mut bad = good.clone();
        let flips = 1 + next() % 8;
        for _ in 0..flips {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] ^= 1 << (next() % 8);
        }
        let resealed = i % 2 == 1;
        if resealed {
            format::reseal(&mut bad);
        }
        match rt.load_bytes(Bytes::from(bad), "fuzzed") {
            Err(_) => {}
            Ok(engine) if resealed => {
                // The flips landed where the graph stays valid (names, unused bytes):
                // running it must still return, not crash.
                loaded_after_reseal += 1;
                if let Ok(mut ctx) = engine.create_context() {
                    runs += 1;
                    let _ = ctx.run(&[image(2, 3)]);
                }
            }
            Ok(_) => panic!("a corrupted plan (no reseal) loaded: mutation {i}"),
        }
    }
    eprintln!("{loaded_after_reseal} resealed mutations still loaded, {runs} ran");
}

fn tempdir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kiln-engine-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
