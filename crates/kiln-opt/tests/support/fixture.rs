//! The PyTorch exports in models/torch/ keep their graphs but not their weights (see
//! python/export_torch_models.py): this fills every external initializer with seeded
//! random values of a sensible scale and imports the result.

use std::path::{Path, PathBuf};

use kiln_onnx::proto::{ModelProto, TensorProto};
use prost::Message;

use super::Rng;

pub fn torch_model_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/torch").join(format!("{name}.onnx"))
}

/// Imports `models/torch/<name>.onnx` with random weights.
pub fn load_torch_model(name: &str) -> kiln_onnx::Model {
    let bytes = std::fs::read(torch_model_path(name)).expect("fixture exists");
    let mut model = ModelProto::decode(bytes.as_slice()).expect("fixture decodes");
    let mut rng = Rng(0x5eed);
    let graph = model.graph.as_mut().expect("graph");
    for t in &mut graph.initializer {
        if !t.external_data.is_empty() {
            fill(t, &mut rng);
        }
    }
    kiln_onnx::load_bytes(model.encode_to_vec().into(), None).expect("fixture imports")
}

fn fill(t: &mut TensorProto, rng: &mut Rng) {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n: usize = dims.iter().product();
    let (lo, hi) = range(&t.name, &dims);
    let values: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
    t.raw_data = match t.data_type {
        1 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        10 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        d => panic!("initializer '{}': external data of type {d}", t.name),
    };
    t.external_data.clear();
    t.data_location = 0;
}

/// Weights keep activations near unit scale (variance 1/fan-in); scales and variances
/// are positive.
fn range(name: &str, dims: &[usize]) -> (f32, f32) {
    let lower = name.to_lowercase();
    if lower.contains("running_var") || (dims.len() == 1 && lower.ends_with("weight")) {
        return (0.5, 1.5);
    }
    if dims.len() == 1 {
        return (-0.1, 0.1);
    }
    let fan_in = if lower.starts_with("onnx::matmul") { dims[0] } else { dims[1..].iter().product() };
    let a = (3.0 / fan_in.max(1) as f32).sqrt();
    (-a, a)
}
