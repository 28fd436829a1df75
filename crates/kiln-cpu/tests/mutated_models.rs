//! Mutated models that still import must run to an `Ok` or an `Err`, never a panic:
//! byte-level mutations of the bundled model reach kernels with odd attributes,
//! shapes and weights.

use bytes::Bytes;
use kiln_ir::{DType, Dim, Tensor};

/// SplitMix64, for reproducible mutations.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random f32 inputs for the graph's inputs (symbolic and unknown dims set to 2), or
/// `None` when an input is not a small f32 tensor.
fn inputs(graph: &kiln_ir::Graph, state: &mut u64) -> Option<Vec<Tensor>> {
    graph
        .inputs
        .iter()
        .map(|o| {
            let fact = graph.fact(*o).ok()?;
            let shape: Vec<usize> =
                fact.shape.as_ref()?.0.iter().map(|d| if let Dim::Known(n) = d { *n } else { 2 }).collect();
            let n: usize = shape.iter().product();
            if fact.dtype != Some(DType::F32) || n > 1 << 16 {
                return None;
            }
            let v = (0..n).map(|_| (next(state) % 1000) as f32 / 500.0 - 1.0).collect();
            Tensor::from_vec(shape, v).ok()
        })
        .collect()
}

#[test]
fn mutated_models_that_import_run_without_panicking() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/digits/digits.onnx");
    let original = std::fs::read(path).expect("the bundled digits model");
    let mut state = 7u64;
    let (mut ran, mut panics) = (0, Vec::new());
    for case in 0..400 {
        let mut bytes = original.clone();
        for _ in 0..1 + next(&mut state) % 3 {
            let at = (next(&mut state) as usize) % bytes.len();
            bytes[at] = if next(&mut state).is_multiple_of(2) {
                bytes[at] ^ (1 << (next(&mut state) % 8))
            } else {
                next(&mut state) as u8
            };
        }
        let Ok(model) = kiln_onnx::load_bytes(Bytes::from(bytes), None) else { continue };
        let Some(inputs) = inputs(&model.graph, &mut state) else { continue };
        ran += 1;
        if std::panic::catch_unwind(|| kiln_cpu::run(&model.graph, &inputs)).is_err() {
            panics.push(case);
        }
    }
    eprintln!("{ran} mutated models imported and ran");
    assert!(ran > 50, "only {ran} mutated models imported; the test exercises too little");
    assert!(panics.is_empty(), "mutations {panics:?} panicked (of {ran} that ran)");
}

/// Attribute-level mutations: every node attribute number of the bundled model set to
/// small odd values (negative axes, zero strides, huge pads…).
#[test]
fn models_with_mutated_attributes_run_without_panicking() {
    use kiln_onnx::proto::ModelProto;
    use prost::Message;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/digits/digits.onnx");
    let original = ModelProto::decode(Bytes::from(std::fs::read(path).expect("the bundled digits model"))).unwrap();
    let mut state = 11u64;
    let (mut ran, mut panics) = (0, Vec::new());
    for case in 0..600 {
        let mut m = original.clone();
        let Some(graph) = m.graph.as_mut() else { continue };
        let n = (next(&mut state) as usize) % graph.node.len();
        let node = &mut graph.node[n];
        if node.attribute.is_empty() {
            continue;
        }
        let a = (next(&mut state) as usize) % node.attribute.len();
        let attr = &mut node.attribute[a];
        let value = (next(&mut state) % 13) as i64 - 3;
        if attr.ints.is_empty() {
            attr.i = value;
            attr.f = value as f32 / 2.0;
        } else {
            let k = (next(&mut state) as usize) % attr.ints.len();
            attr.ints[k] = value;
        }
        let Ok(model) = kiln_onnx::load_bytes(Bytes::from(m.encode_to_vec()), None) else { continue };
        let Some(inputs) = inputs(&model.graph, &mut state) else { continue };
        ran += 1;
        if std::panic::catch_unwind(|| kiln_cpu::run(&model.graph, &inputs)).is_err() {
            panics.push(format!("case {case}: node {} attribute {}", graph_node_name(&original, n), a));
        }
    }
    eprintln!("{ran} models with a mutated attribute imported and ran");
    assert!(ran > 50, "only {ran} mutated models imported; the test exercises too little");
    assert!(panics.is_empty(), "panicked: {panics:?} (of {ran} that ran)");
}

fn graph_node_name(m: &kiln_onnx::proto::ModelProto, n: usize) -> String {
    m.graph.as_ref().map(|g| g.node[n].name.clone()).unwrap_or_default()
}
