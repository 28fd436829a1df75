//! The `kiln` binary on bad input: clear errors naming the thing, non-zero exit, no panic.

mod support;
use support::{kiln, temp_dir};

use std::path::{Path, PathBuf};

use kiln_onnx::proto::*;
use prost::Message;

/// y = relu(x) with x: f32[batch, 3].
fn relu_model(dir: &Path) -> PathBuf {
    chain_model(dir, "relu", &[("Relu", "r")])
}

/// x: f32[batch, 3] through a chain of one-input ops `(op_type, name)` to y.
fn chain_model(dir: &Path, file: &str, chain: &[(&str, &str)]) -> PathBuf {
    let dims = vec![
        Dimension { value: Some(dimension::Value::DimParam("batch".into())), denotation: String::new() },
        Dimension { value: Some(dimension::Value::DimValue(3)), denotation: String::new() },
    ];
    let x = ValueInfoProto {
        name: "x".into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorTypeProto {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            name: "relu".into(),
            node: chain
                .iter()
                .enumerate()
                .map(|(i, (op, name))| NodeProto {
                    op_type: op.to_string(),
                    name: name.to_string(),
                    input: vec![if i == 0 { "x".into() } else { format!("t{i}") }],
                    output: vec![if i + 1 == chain.len() { "y".into() } else { format!("t{}", i + 1) }],
                    ..Default::default()
                })
                .collect(),
            input: vec![x],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = dir.join(format!("{file}.onnx"));
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn write_npy_f64(path: &Path, shape: &str, values: &[f64]) {
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn run_and_inspect_a_small_model() {
    let dir = temp_dir("ok");
    let m = relu_model(&dir);
    let m = m.to_str().unwrap();
    let (ok, out, err) = kiln(&["run", m, "--shapes", "x:4x3", "--output-dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("output  y: f32 [4, 3]"), "{out}");
    assert!(dir.join("y.npy").exists());
    let (ok, out, _) = kiln(&["inspect", m, "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ops"]["Relu"], 1);
    assert_eq!(v["inputs"][0]["type"], "f32[batch,3]");
}

#[test]
fn a_wrong_input_dtype_is_named() {
    let dir = temp_dir("dtype");
    let m = relu_model(&dir);
    let x = dir.join("x.npy");
    write_npy_f64(&x, "(2, 3)", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let (ok, _, err) = kiln(&["run", m.to_str().unwrap(), "--input", &format!("x={}", x.display())]);
    assert!(!ok);
    assert!(err.contains("input 'x'") && err.contains("f32") && err.contains("f64"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_wrong_input_shape_is_named() {
    let dir = temp_dir("shape");
    let m = relu_model(&dir);
    let (ok, _, err) = kiln(&["run", m.to_str().unwrap(), "--shapes", "x:2x5"]);
    assert!(!ok);
    assert!(err.contains("input 'x'") && err.contains("[batch,3]"), "{err}");
}

#[test]
fn an_unknown_input_name_is_named() {
    let dir = temp_dir("name");
    let m = relu_model(&dir);
    let (ok, _, err) = kiln(&["run", m.to_str().unwrap(), "--shapes", "nope:2x3"]);
    assert!(!ok);
    assert!(err.contains("no input 'nope'"), "{err}");
}

#[test]
fn garbage_and_missing_files_are_named() {
    let dir = temp_dir("garbage");
    let g = dir.join("garbage.onnx");
    std::fs::write(&g, b"\xff\xfe this is not a model").unwrap();
    for args in [vec!["run", g.to_str().unwrap()], vec!["inspect", "/no/such/model.onnx"]] {
        let (ok, _, err) = kiln(&args);
        assert!(!ok);
        assert!(err.contains(".onnx") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn inspect_optimized_shows_layers_counts_and_rewrites() {
    let dir = temp_dir("optimized");
    let m = chain_model(&dir, "chain", &[("Identity", "id1"), ("Relu", "relu1"), ("Identity", "id2")]);
    let m = m.to_str().unwrap();
    let (ok, out, err) = kiln(&["inspect", m, "--optimized", "--verbose"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 before, 1 layers after"), "{out}");
    assert!(out.contains("relu1") && out.contains("Relu") && out.contains("[batch,3] → [batch,3]"), "{out}");
    assert!(out.contains("remove-identity"), "{out}");
    let (ok, out, err) = kiln(&["inspect", m, "--optimized", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes_before"], 3);
    assert_eq!(v["layers_after"], 1);
    assert_eq!(v["layers"][0]["name"], "relu1");
    assert_eq!(v["layers"][0]["op"], "Relu");
    assert_eq!(v["rewrites"].as_array().unwrap().len(), 2);
    // Level 0 keeps every node.
    let (ok, out, _) = kiln(&["inspect", m, "--optimized", "--opt-level", "0", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers_after"], 3);
    assert_eq!(v["rewrites"].as_array().unwrap().len(), 0);
    let (ok, out, err) = kiln(&["inspect", m, "--optimized", "--layout", "nhwc", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layout"], "nhwc");
    assert_eq!(v["layers_after"], 1);
}

#[test]
fn inspect_writes_a_dot_picture() {
    let dir = temp_dir("dot");
    let m = chain_model(&dir, "chain", &[("Identity", "id1"), ("Relu", "relu1")]);
    let m = m.to_str().unwrap();
    let original = dir.join("original.dot");
    let (ok, _, err) = kiln(&["inspect", m, "--dot", original.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&original).unwrap();
    assert!(text.starts_with("digraph") && text.contains("id1") && text.contains("relu1"), "{text}");
    assert!(text.contains("Relu\\nrelu1") && !text.contains("\\\\n"), "labels break lines with \\n: {text}");
    let optimized = dir.join("optimized.dot");
    let (ok, _, err) = kiln(&["inspect", m, "--optimized", "--dot", optimized.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&optimized).unwrap();
    assert!(text.contains("relu1") && !text.contains("id1"), "{text}");
    assert!(text.trim_end().ends_with('}'));
}

#[test]
fn run_at_opt_level_zero_and_three_agree() {
    let dir = temp_dir("levels");
    let m = chain_model(&dir, "chain", &[("Identity", "id1"), ("Sigmoid", "sig"), ("Identity", "id2")]);
    let m = m.to_str().unwrap();
    let mut outs = vec![];
    for level in ["0", "3"] {
        let (ok, out, err) = kiln(&["run", m, "--shapes", "x:2x3", "--opt-level", level, "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["outputs"][0]["name"], "y");
        outs.push((v["layers"].clone(), v["outputs"][0]["head"].clone()));
    }
    assert_eq!(outs[0].0, 3);
    assert_eq!(outs[1].0, 1);
    assert_eq!(outs[0].1, outs[1].1);
}

/// Whether this machine has a usable GPU (the no-GPU tests below then say nothing).
fn has_gpu() -> bool {
    kiln_cuda::Device::open(0).is_ok()
}

#[test]
fn cuda_without_a_gpu_is_an_error_naming_what_is_missing() {
    if has_gpu() {
        return;
    }
    let dir = temp_dir("cuda");
    let model = relu_model(&dir);
    let m = model.to_str().unwrap();
    let (ok, _, err) = kiln(&["run", m, "--backend", "cuda", "--shapes", "x:2x3"]);
    assert!(!ok, "{err}");
    assert!(err.contains("backend cuda is not available"), "{err}");
    // The library (or the GPU) that is missing is named.
    assert!(err.contains("libcuda") || err.contains("no CUDA GPU"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (ok, _, err) = kiln(&["conformance", "--backend", "cuda", "--data", dir.to_str().unwrap()]);
    assert!(!ok && err.contains("backend cuda is not available"), "{err}");
    // An unknown backend is refused by the argument parser, listing the choices.
    let (ok, _, err) = kiln(&["run", m, "--backend", "tpu"]);
    assert!(!ok && err.contains("cpu") && err.contains("cuda") && err.contains("auto"), "{err}");
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why() {
    if has_gpu() {
        return;
    }
    let dir = temp_dir("auto");
    let model = relu_model(&dir);
    let (ok, out, err) = kiln(&["run", model.to_str().unwrap(), "--backend", "auto", "--shapes", "x:2x3"]);
    assert!(ok, "{err}");
    assert!(err.contains("backend auto: cpu (no CUDA GPU:"), "{err}");
    assert!(out.contains("backend auto: cpu"), "{out}");
    assert!(out.contains("output  y: f32 [2, 3]"), "{out}");
}
