//! Memory and layout passes: concat elision, slice views, channels-last regions.

mod support;

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::SliceAttrs;
use kiln_ir::ops::nn::{Conv, Pool, PoolKind, Window};
use kiln_ir::ops::{ElementwiseOp, MovementOp, NnOp};
use kiln_ir::{DType, NetworkDefinition, Op, OutletId, Shape, Tensor};
use kiln_opt::{Layout, Optimizer, Options};
use support::*;

fn un(u: UnaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Unary(u))
}

fn bin(b: BinaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Binary(b))
}

fn concat(axis: i64) -> Op {
    Op::Movement(MovementOp::Concat { axis })
}

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>()).unwrap()
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

// ---- concat elision ----

/// concat(axis)(exp(x), tanh(y)) with x, y of `shape` (and the concat read by `extra`).
fn concat_graph(shape: &[usize], axis: i64) -> NetworkDefinition {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(shape));
    let y = n.add_input("y", DType::F32, Shape::known(shape));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let b = n.add("tanh", un(UnaryOp::Tanh), &[y]).unwrap();
    let c = n.add("cat", concat(axis), &[a, b]).unwrap();
    n.mark_output(c, "out").unwrap();
    n
}

#[test]
fn concat_of_computed_slices_is_in_place() {
    let g = concat_graph(&[1, 3, 4, 4], 1).build();
    let (after, _) = check_pass(&g, 3, 1);
    assert_eq!(ops(&after), ["Exp", "Tanh", "ConcatInPlace"]);
    // Axis 0 has nothing before it; a negative axis is normalised.
    let g = concat_graph(&[2, 3], 0).build();
    assert_eq!(ops(&check_pass(&g, 3, 2).0), ["Exp", "Tanh", "ConcatInPlace"]);
    let g = concat_graph(&[1, 1, 5], -1).build();
    assert_eq!(ops(&check_pass(&g, 3, 3).0), ["Exp", "Tanh", "ConcatInPlace"]);
}

#[test]
fn concat_with_outer_dims_above_one_is_kept() {
    let g = concat_graph(&[2, 3, 4], 1).build();
    let (after, _) = check_pass(&g, 3, 4);
    assert_eq!(ops(&after), ["Exp", "Tanh", "Concat"]);
}

#[test]
fn concat_of_a_value_read_elsewhere_is_kept() {
    let mut n = concat_graph(&[1, 3, 4], 1);
    let exp = OutletId::new(2, 0);
    assert_eq!(n.graph().nodes[2].name, "exp");
    let s = n.add("sig", un(UnaryOp::Sigmoid), &[exp]).unwrap();
    n.mark_output(s, "other").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 5);
    assert!(ops(&after).contains(&"Concat"));
    // A value that is also a graph output.
    let mut n = concat_graph(&[1, 3, 4], 1);
    n.mark_output(exp, "exp_out").unwrap();
    assert!(ops(&check_pass(&n.build(), 3, 6).0).contains(&"Concat"));
}

#[test]
fn concat_reading_one_value_twice_is_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3]));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let c = n.add("cat", concat(1), &[a, a]).unwrap();
    n.mark_output(c, "out").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 3, 7).0), ["Exp", "Concat"]);
}

#[test]
fn concat_of_a_constant_or_an_input_is_kept() {
    let mut rng = Rng(8);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3]));
    let k = n.add_constant("k", random(&mut rng, &[1, 2]));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let c = n.add("cat", concat(1), &[a, k]).unwrap();
    n.mark_output(c, "out").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 3, 8).0), ["Exp", "Concat"]);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3]));
    let y = n.add_input("y", DType::F32, Shape::known(&[1, 3]));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let c = n.add("cat", concat(1), &[a, y]).unwrap();
    n.mark_output(c, "out").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 3, 9).0), ["Exp", "Concat"]);
}

#[test]
fn concat_of_a_view_is_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 6]));
    let shape = n.add_constant("shape", i64s(&[1, 2, 3]));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let r = n.add("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[a, shape]).unwrap();
    let b = n.add("tanh", un(UnaryOp::Tanh), &[a]).unwrap();
    let r2 = n.add("reshape2", Op::Movement(MovementOp::Reshape { allowzero: false }), &[b, shape]).unwrap();
    let t = n.add("neg", un(UnaryOp::Neg), &[r2]).unwrap();
    let c = n.add("cat", concat(1), &[r, t]).unwrap();
    n.mark_output(c, "out").unwrap();
    assert!(ops(&check_pass(&n.build(), 3, 10).0).contains(&"Concat"));
}

// ---- views ----

fn slice_graph(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: Option<&[i64]>,
) -> NetworkDefinition {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(shape));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let s = n.add_constant("starts", i64s(starts));
    let e = n.add_constant("ends", i64s(ends));
    let ax = n.add_constant("axes", i64s(axes));
    let mut inputs = vec![a, s, e, ax];
    if let Some(st) = steps {
        inputs.push(n.add_constant("steps", i64s(st)));
    }
    let y = n.add("slice", Op::Movement(MovementOp::Slice { attrs: None }), &inputs).unwrap();
    let r = n.add("relu", un(UnaryOp::Relu), &[y]).unwrap();
    n.mark_output(r, "out").unwrap();
    n
}

#[test]
fn slice_of_one_axis_after_unit_dims_is_a_view() {
    let g = slice_graph(&[1, 8, 4], &[2], &[6], &[1], None).build();
    let (after, _) = check_pass(&g, 3, 11);
    assert_eq!(ops(&after), ["Exp", "SliceView", "Relu"]);
    // Negative bounds and a step of one, on the first axis.
    let g = slice_graph(&[8, 4], &[-5], &[-1], &[0], Some(&[1])).build();
    assert_eq!(ops(&check_pass(&g, 3, 12).0), ["Exp", "SliceView", "Relu"]);
    // A slice that covers other axes fully still slices one axis.
    let g = slice_graph(&[1, 8, 4], &[0, 1], &[i64::MAX, 3], &[2, 1], None).build();
    assert_eq!(ops(&check_pass(&g, 3, 13).0), ["Exp", "SliceView", "Relu"]);
}

#[test]
fn slice_attribute_form_is_a_view() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 8]));
    let attrs = SliceAttrs { starts: vec![1], ends: vec![5], axes: Some(vec![1]) };
    let y = n.add("slice", Op::Movement(MovementOp::Slice { attrs: Some(attrs) }), &[x]).unwrap();
    n.mark_output(y, "out").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 3, 14).0), ["SliceView"]);
}

#[test]
fn strided_multi_axis_or_outer_slices_are_kept() {
    // Step 2.
    let g = slice_graph(&[1, 8, 4], &[0], &[8], &[1], Some(&[2])).build();
    assert_eq!(ops(&check_pass(&g, 3, 15).0), ["Exp", "Slice", "Relu"]);
    // Two sliced axes.
    let g = slice_graph(&[1, 8, 4], &[1, 1], &[5, 3], &[1, 2], None).build();
    assert_eq!(ops(&check_pass(&g, 3, 16).0), ["Exp", "Slice", "Relu"]);
    // A dim above one before the axis.
    let g = slice_graph(&[2, 8, 4], &[1], &[5], &[1], None).build();
    assert_eq!(ops(&check_pass(&g, 3, 17).0), ["Exp", "Slice", "Relu"]);
}

#[test]
fn slice_with_runtime_bounds_is_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 8]));
    let s = n.add_input("starts", DType::I64, Shape::known(&[1]));
    let e = n.add_constant("ends", i64s(&[8]));
    let ax = n.add_constant("axes", i64s(&[1]));
    let y = n.add("slice", Op::Movement(MovementOp::Slice { attrs: None }), &[x, s, e, ax]).unwrap();
    n.mark_output(y, "out").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 3, 18).0), ["Slice"]);
}

fn split_graph(shape: &[usize], axis: i64, split: Option<&[i64]>, outputs: usize) -> NetworkDefinition {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(shape));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let mut inputs = vec![a];
    if let Some(s) = split {
        inputs.push(n.add_constant("split", i64s(s)));
    }
    let op = Op::Movement(MovementOp::Split { axis, split: None, num_outputs: None });
    let outs = n.add_layer("split", op, &inputs, outputs).unwrap();
    for (i, o) in outs.into_iter().enumerate() {
        let r = n.add(&format!("neg{i}"), un(UnaryOp::Neg), &[o]).unwrap();
        n.mark_output(r, &format!("out{i}")).unwrap();
    }
    n
}

#[test]
fn split_after_unit_dims_is_a_view() {
    let g = split_graph(&[1, 6, 2], 1, Some(&[1, 2, 3]), 3).build();
    let (after, _) = check_pass(&g, 3, 19);
    assert_eq!(ops(&after), ["Exp", "SliceView", "Neg", "Neg", "Neg"]);
    let g = split_graph(&[1, 1, 7], -1, None, 2).build();
    assert_eq!(ops(&check_pass(&g, 3, 20).0), ["Exp", "SliceView", "Neg", "Neg"]);
}

#[test]
fn split_with_outer_dims_above_one_is_kept() {
    let g = split_graph(&[2, 6], 1, None, 2).build();
    assert_eq!(ops(&check_pass(&g, 3, 21).0), ["Exp", "Split", "Neg", "Neg"]);
}

#[test]
fn split_into_a_concat_keeps_the_concat() {
    // The views read the Exp's buffer, so the Concat cannot be computed in place.
    let mut n = split_graph(&[1, 6], 1, None, 2);
    let outs: Vec<OutletId> = n.graph().outputs.clone();
    let c = n.add("cat", concat(1), &outs).unwrap();
    n.mark_output(c, "cat").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 22);
    assert!(ops(&after).contains(&"SliceView"));
    assert!(ops(&after).contains(&"Concat"));
}
