//! The rewrite engine and patches: transactions, output names, dead-node removal.

mod support;

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::{DType, NetworkDefinition, Op, OutletId, Shape};
use kiln_opt::{Patch, Wire};
use support::*;

fn un(u: UnaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Unary(u))
}

fn add() -> Op {
    Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add))
}

#[test]
fn identity_chain_removed_and_output_keeps_its_name() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let r = n.add("relu", un(UnaryOp::Relu), &[x]).unwrap();
    let i1 = n.add("id1", Op::Elementwise(ElementwiseOp::Identity), &[r]).unwrap();
    let i2 = n.add("id2", Op::Elementwise(ElementwiseOp::Identity), &[i1]).unwrap();
    n.mark_output(i2, "y").unwrap();
    let g = n.build();
    let (after, report) = check_pass(&g, 1, 1);
    assert_eq!(ops(&after), ["Relu"]);
    assert_eq!(report.nodes_before, 3);
    assert_eq!(report.layers_after, 1);
    assert_eq!(after.outlet_name(after.outputs[0]), "y");
}

#[test]
fn identity_of_a_graph_input_to_an_output_stays_an_identity() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2]));
    let i = n.add("id", Op::Elementwise(ElementwiseOp::Identity), &[x]).unwrap();
    n.mark_output(i, "y").unwrap();
    let g = n.build();
    let (after, _) = check_pass(&g, 3, 2);
    assert_eq!(after.outlet_name(after.outputs[0]), "y");
    assert_eq!(after.outlet_name(after.inputs[0]), "x");
}

#[test]
fn a_patch_with_a_wrong_shape_changes_nothing() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let y = n.add_input("y", DType::F32, Shape::known(&[3]));
    let r = n.add("relu", un(UnaryOp::Relu), &[x]).unwrap();
    n.mark_output(r, "out").unwrap();
    let mut g = n.build();
    let before = format!("{:?}", g.nodes.iter().map(|n| &n.name).collect::<Vec<_>>());
    let mut p = Patch::new();
    let s = p.add("sig", un(UnaryOp::Sigmoid), &[Wire::Graph(y)]);
    p.shunt(OutletId::new(2, 0), s);
    assert!(p.apply(&mut g).is_err());
    assert_eq!(before, format!("{:?}", g.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()));
    assert_eq!(g.outlet_name(g.outputs[0]), "out");
}

#[test]
fn a_patch_with_an_invalid_node_changes_nothing() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let y = n.add_input("y", DType::F32, Shape::known(&[4]));
    let r = n.add("relu", un(UnaryOp::Relu), &[x]).unwrap();
    n.mark_output(r, "out").unwrap();
    let mut g = n.build();
    let count = g.nodes.len();
    let mut p = Patch::new();
    let s = p.add("bad_add", add(), &[Wire::Graph(x), Wire::Graph(y)]);
    p.shunt(r, s);
    assert!(p.apply(&mut g).is_err());
    assert_eq!(g.nodes.len(), count);
}

#[test]
fn dead_nodes_and_unused_constants_are_dropped_inputs_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2]));
    let unused = n.add_input("unused", DType::F32, Shape::known(&[2]));
    let _dead = n.add("dead", un(UnaryOp::Exp), &[unused]).unwrap();
    let r = n.add("relu", un(UnaryOp::Relu), &[x]).unwrap();
    n.mark_output(r, "y").unwrap();
    let g = n.build();
    let (after, _) = check_pass(&g, 0, 3);
    assert_eq!(ops(&after), ["Relu"]);
    assert_eq!(after.inputs.len(), 2);
}
