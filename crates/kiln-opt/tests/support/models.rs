//! Real models: the PyTorch fixtures in models/torch/ and the pip-installed ones that
//! python/locate.py finds (nudenet's YOLOv8n, PP-OCRv4 det and rec).

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_ir::{Graph, Tensor};

use super::{Rng, fixture};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path of a pip-installed model, or `None` (with a note) when the virtual
/// environment lacks it. With `KILN_REQUIRE_MODELS=1` (CI) a missing model fails.
pub fn locate(name: &str) -> Option<PathBuf> {
    let python = repo().join(".venv/bin/python");
    let out = Command::new(&python).arg(repo().join("python/locate.py")).arg(name).output();
    let found =
        out.ok().filter(|o| o.status.success()).map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(std::env::var("KILN_REQUIRE_MODELS").is_err(), "model '{name}' not found (run scripts/setup-venv)");
        eprintln!("skipping '{name}': not installed (run scripts/setup-venv)");
    }
    found
}

/// A real model with the inputs to test it on.
pub struct RealModel {
    pub name: &'static str,
    pub graph: Graph,
    pub inputs: Vec<Tensor>,
}

/// Inputs by name: floats in [-1, 1) of `shape`, or integers below a bound.
pub enum Feed {
    Floats(Vec<usize>),
    Ints(Vec<usize>, u64),
}

pub fn feed(graph: &Graph, feeds: &[(&str, Feed)], seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    graph
        .inputs
        .iter()
        .map(|&o| {
            let name = graph.outlet_name(o);
            let (_, f) = feeds.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no feed for input '{name}'"));
            match f {
                Feed::Floats(s) => {
                    let n = s.iter().product();
                    Tensor::from_vec(s.clone(), (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()).unwrap()
                }
                Feed::Ints(s, hi) => {
                    let n = s.iter().product();
                    Tensor::from_vec(s.clone(), (0..n).map(|_| rng.below(*hi) as i64).collect()).unwrap()
                }
            }
        })
        .collect()
}

fn bert_feeds(batch: usize, seq: usize) -> Vec<(&'static str, Feed)> {
    vec![
        ("input_ids", Feed::Ints(vec![batch, seq], 30000)),
        ("attention_mask", Feed::Ints(vec![batch, seq], 2)),
        ("token_type_ids", Feed::Ints(vec![batch, seq], 2)),
    ]
}

pub fn torch_model(name: &'static str) -> RealModel {
    let graph = fixture::load_torch_model(name).graph;
    let feeds = match name {
        "resnet50" | "mobilenetv2" => vec![("input", Feed::Floats(vec![1, 3, 224, 224]))],
        "bert-base-dynamic" => bert_feeds(2, 16),
        _ => bert_feeds(1, 128),
    };
    let inputs = feed(&graph, &feeds, 7);
    RealModel { name, graph, inputs }
}

/// A pip-installed model, when present.
pub fn pip_model(name: &'static str) -> Option<RealModel> {
    let path = locate(name)?;
    let graph = kiln_onnx::load(&path).expect("model imports").graph;
    let shape = match name {
        "ppocr-rec" => vec![1, 3, 48, 320],
        _ => vec![1, 3, 320, 320],
    };
    let input = graph.outlet_name(graph.inputs[0]).to_string();
    let inputs = feed(&graph, &[(input.as_str(), Feed::Floats(shape))], 7);
    Some(RealModel { name, graph, inputs })
}
