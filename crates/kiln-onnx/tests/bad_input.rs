//! Bad models give errors that name the thing, never panics.

use bytes::Bytes;
use kiln_onnx::proto::*;
use kiln_onnx::{OnnxError, load_bytes};
use prost::Message;

fn f32_input(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), denotation: String::new() })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorTypeProto {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: &[&str], opset: i64) -> Bytes {
    let graph = GraphProto {
        name: "g".into(),
        node: nodes,
        input: inputs,
        output: outputs.iter().map(|o| ValueInfoProto { name: o.to_string(), ..Default::default() }).collect(),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        ..Default::default()
    };
    Bytes::from(m.encode_to_vec())
}

fn err_of(bytes: Bytes) -> String {
    load_bytes(bytes, None).expect_err("should fail").to_string()
}

#[test]
fn a_good_model_loads() {
    let m = model(vec![node("Relu", "r", &["x"], &["y"])], vec![f32_input("x", &[2, 3])], &["y"], 17);
    let g = load_bytes(m, None).unwrap().graph;
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.fact(g.outputs[0]).unwrap().to_string(), "f32[2,3]");
}

#[test]
fn garbage_and_truncated_files_are_decode_errors() {
    assert!(matches!(load_bytes(Bytes::from_static(b"\xff\xff\xff\xff garbage"), None), Err(OnnxError::Decode { .. })));
    let m = model(vec![node("Relu", "r", &["x"], &["y"])], vec![f32_input("x", &[2, 3])], &["y"], 17);
    for cut in [1, m.len() / 2, m.len() - 1] {
        assert!(load_bytes(m.slice(..cut), None).is_err());
    }
}

#[test]
fn a_cycle_is_named() {
    let nodes = vec![node("Relu", "a", &["x", "c"], &["b"]), node("Neg", "b_node", &["b"], &["c"])];
    let e = err_of(model(nodes, vec![f32_input("x", &[2])], &["c"], 17));
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn a_dangling_input_names_node_and_value() {
    let e =
        err_of(model(vec![node("Add", "adder", &["x", "nowhere"], &["y"])], vec![f32_input("x", &[2])], &["y"], 17));
    assert!(e.contains("adder") && e.contains("nowhere"), "{e}");
}

#[test]
fn a_missing_output_is_named() {
    let e = err_of(model(vec![node("Relu", "r", &["x"], &["y"])], vec![f32_input("x", &[2])], &["zz"], 17));
    assert!(e.contains("zz"), "{e}");
}

#[test]
fn an_unsupported_op_names_node_op_and_opset() {
    let e = err_of(model(vec![node("FancyOp", "f1", &["x"], &["y"])], vec![f32_input("x", &[2])], &["y"], 17));
    assert!(e.contains("f1") && e.contains("FancyOp") && e.contains("17"), "{e}");
}

#[test]
fn an_unsupported_opset_is_named() {
    let e = err_of(model(vec![node("Relu", "r", &["x"], &["y"])], vec![f32_input("x", &[2])], &["y"], 3));
    assert!(e.contains("opset 3"), "{e}");
}

#[test]
fn an_attribute_of_the_wrong_type_is_named() {
    // Constant's `value_float` given as a string.
    let mut n = node("Constant", "k", &[], &["y"]);
    n.attribute.push(AttributeProto {
        name: "value_float".into(),
        r#type: AttributeType::String as i32,
        s: Bytes::from_static(b"1.0"),
        ..Default::default()
    });
    let mut n2 = node("Add", "add", &["x", "y"], &["z"]);
    n2.attribute.clear();
    let e = err_of(model(vec![n, n2], vec![f32_input("x", &[1])], &["z"], 17));
    assert!(e.contains("value_float") && e.contains('k'), "{e}");
}

#[test]
fn a_wrong_size_initializer_is_named() {
    let init = TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: 1,
        raw_data: Bytes::from(vec![0u8; 8]),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        graph: Some(GraphProto {
            node: vec![node("Add", "add", &["x", "w"], &["y"])],
            input: vec![f32_input("x", &[4])],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            initializer: vec![init],
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    };
    let e = err_of(Bytes::from(m.encode_to_vec()));
    assert!(e.contains("'w'") && e.contains("bytes"), "{e}");
}

#[test]
fn external_data_cannot_escape_the_model_folder() {
    let t = TensorProto {
        name: "w".into(),
        dims: vec![1],
        data_type: 1,
        data_location: DataLocation::External as i32,
        external_data: vec![StringStringEntryProto { key: "location".into(), value: "../../etc/passwd".into() }],
        ..Default::default()
    };
    let e = kiln_onnx::tensor_from_proto(&t, None).unwrap_err().to_string();
    assert!(e.contains("relative path"), "{e}");
}

/// SplitMix64, for reproducible mutations.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn a_thousand_mutations_of_a_real_model_never_panic() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/digits/digits.onnx");
    let original = std::fs::read(path).expect("the bundled digits model");
    let mut state = 42u64;
    let (mut ok, mut err) = (0, 0);
    for _ in 0..1000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next(&mut state) % 8 {
            let at = (next(&mut state) as usize) % bytes.len();
            match next(&mut state) % 4 {
                0 => bytes[at] ^= 1 << (next(&mut state) % 8),
                1 => bytes[at] = next(&mut state) as u8,
                2 => bytes.truncate(at.max(1)),
                _ => bytes.insert(at, next(&mut state) as u8),
            }
        }
        match load_bytes(Bytes::from(bytes), None) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert_eq!(ok + err, 1000);
}
