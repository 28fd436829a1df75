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

// ---- channels-last layout ----

fn nhwc() -> Options<'static> {
    Options { layout: Layout::Nhwc, ..Options::default() }
}

/// Optimises at level 3 channels-last and checks equivalence; returns the graph.
fn check_nhwc(graph: &kiln_ir::Graph, seed: u64) -> kiln_ir::Graph {
    let eval = cpu_eval;
    let options = Options { evaluator: Some(&eval), ..nhwc() };
    let (after, report) = Optimizer::new(3).with_options(options).optimize(graph).expect("optimize");
    assert!(report.refused.is_empty(), "refused patches: {:#?}", report.refused);
    let inputs = random_inputs(graph, seed, 3, &|_| 3);
    assert_same_outputs(graph, &after, &inputs, 1e-5);
    after
}

fn transposes(g: &kiln_ir::Graph) -> usize {
    ops(g).iter().filter(|&&o| o == "Transpose").count()
}

fn conv_op(pads: usize) -> Op {
    Op::Nn(NnOp::Conv(Conv { window: Window { pads: Some(vec![pads; 4]), ..Window::default() }, group: 1 }))
}

/// A 3x3 convolution (pad 1) from `cin` to `cout` channels with random weights and bias.
fn conv(n: &mut NetworkDefinition, rng: &mut Rng, name: &str, x: OutletId, cin: usize, cout: usize) -> OutletId {
    let w = n.add_constant(&format!("{name}.w"), random(rng, &[cout, cin, 3, 3]));
    let b = n.add_constant(&format!("{name}.b"), random(rng, &[cout]));
    n.add(name, conv_op(1), &[x, w, b]).unwrap()
}

fn max_pool() -> Op {
    Op::Nn(NnOp::Pool(Pool {
        kind: PoolKind::Max { column_major_indices: false },
        window: Window { kernel_shape: Some(vec![2, 2]), strides: Some(vec![2, 2]), ..Window::default() },
        ceil_mode: false,
    }))
}

/// x → conv → relu → conv → maxpool.
fn conv_chain() -> kiln_ir::Graph {
    let mut rng = Rng(30);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3, 8, 8]));
    let c1 = conv(&mut n, &mut rng, "conv1", x, 3, 4);
    let r = n.add("relu1", un(UnaryOp::Relu), &[c1]).unwrap();
    let c2 = conv(&mut n, &mut rng, "conv2", r, 4, 5);
    let p = n.add("pool", max_pool(), &[c2]).unwrap();
    n.mark_output(p, "y").unwrap();
    n.build()
}

#[test]
fn conv_chain_goes_channels_last_with_two_transposes() {
    let g = conv_chain();
    let after = check_nhwc(&g, 31);
    // conv1 + relu1 is one fused layer by then.
    assert_eq!(ops(&after), ["Transpose", "FusedConvNhwc", "ConvNhwc", "MaxPoolNhwc", "Transpose"]);
    assert_eq!(transposes(&after), 2);
    assert_eq!(after.outlet_name(after.outputs[0]), "y");
}

#[test]
fn nchw_layout_leaves_convs_alone() {
    let g = conv_chain();
    let (after, _) = check_pass(&g, 3, 32);
    assert_eq!(ops(&after), ["FusedConv", "Conv", "MaxPool"]);
}

#[test]
fn residual_block_with_channel_constants_and_global_pool() {
    let mut rng = Rng(33);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 4, 6, 6]));
    let c1 = conv(&mut n, &mut rng, "conv1", x, 4, 4);
    let scale = n.add_constant("scale", random(&mut rng, &[4, 1, 1]));
    let s = n.add("scale", bin(BinaryOp::Mul), &[c1, scale]).unwrap();
    let half = n.add_constant("half", Tensor::from_vec(vec![], vec![0.5f32]).unwrap());
    let h = n.add("half", bin(BinaryOp::Mul), &[s, half]).unwrap();
    let r1 = n.add("relu1", un(UnaryOp::Relu), &[h]).unwrap();
    let c2 = conv(&mut n, &mut rng, "conv2", r1, 4, 4);
    let add = n.add("add", bin(BinaryOp::Add), &[c2, x]).unwrap();
    let r2 = n.add("relu2", un(UnaryOp::Relu), &[add]).unwrap();
    let gp = n.add("gap", Op::Nn(NnOp::GlobalPool(PoolKind::Average { count_include_pad: false })), &[r2]).unwrap();
    let f = n.add("flatten", Op::Movement(MovementOp::Flatten { axis: 1 }), &[gp]).unwrap();
    n.mark_output(f, "y").unwrap();
    let g = n.build();
    let after = check_nhwc(&g, 34);
    // x enters once (read by conv1 and the residual add), the pooled value leaves once.
    assert_eq!(transposes(&after), 2, "{:?}", ops(&after));
    assert!(ops(&after).contains(&"GlobalAveragePoolNhwc"));
    assert_eq!(ops(&after).last(), Some(&"Flatten"));
}

#[test]
fn channel_concat_moves_to_axis_three() {
    let mut rng = Rng(35);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3, 5, 5]));
    let a = conv(&mut n, &mut rng, "a", x, 3, 2);
    let b = conv(&mut n, &mut rng, "b", x, 3, 4);
    let c = n.add("cat", concat(1), &[a, b]).unwrap();
    let d = conv(&mut n, &mut rng, "d", c, 6, 3);
    n.mark_output(d, "y").unwrap();
    let g = n.build();
    let after = check_nhwc(&g, 36);
    assert_eq!(transposes(&after), 2, "{:?}", ops(&after));
    let cat = after.nodes.iter().find(|n| n.name == "cat").unwrap();
    assert!(matches!(cat.op, Op::Movement(MovementOp::Concat { axis: 3 })), "{:?}", cat.op);
}

#[test]
fn fused_conv_with_a_residual_is_channels_last() {
    use kiln_ir::ops::{Expr, ExprNode, FusedLayer, FusedOp};
    let mut rng = Rng(37);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 3, 6, 6]));
    let c1 = conv(&mut n, &mut rng, "conv1", x, 3, 4);
    let w = n.add_constant("conv2.w", random(&mut rng, &[4, 4, 3, 3]));
    let b = n.add_constant("conv2.b", random(&mut rng, &[4]));
    let mut e = Expr::default();
    let (acc, res) = (e.push(ExprNode::Input(0)), e.push(ExprNode::Input(1)));
    let sum = e.push(ExprNode::Binary(BinaryOp::Add, acc, res));
    e.push(ExprNode::Unary(UnaryOp::Relu, sum));
    let layer = FusedLayer { core: Box::new(conv_op(1)), core_inputs: 3, epilogue: e };
    let f = n.add("conv2 + add + relu", Op::Fused(FusedOp::Layer(layer)), &[c1, w, b, c1]).unwrap();
    n.mark_output(f, "y").unwrap();
    let g = n.build();
    let after = check_nhwc(&g, 38);
    assert_eq!(ops(&after), ["Transpose", "ConvNhwc", "FusedConvNhwc", "Transpose"]);
}

#[test]
fn region_values_read_outside_leave_through_one_transpose_each() {
    let mut rng = Rng(39);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 2, 4, 4]));
    let c1 = conv(&mut n, &mut rng, "conv1", x, 2, 2);
    let r = n.add("relu", un(UnaryOp::Relu), &[c1]).unwrap();
    let shape = n.add_constant("shape", i64s(&[1, -1]));
    let flat = n.add("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[r, shape]).unwrap();
    let sm = n.add("softmax_like", un(UnaryOp::Exp), &[flat]).unwrap();
    let c2 = conv(&mut n, &mut rng, "conv2", r, 2, 2);
    n.mark_output(sm, "a").unwrap();
    n.mark_output(c2, "b").unwrap();
    n.mark_output(r, "r").unwrap();
    let g = n.build();
    let after = check_nhwc(&g, 40);
    // In: x; out: relu (for the reshape and the output r), conv2.
    assert_eq!(transposes(&after), 3, "{:?}", ops(&after));
}

#[test]
fn one_dimensional_convs_and_broadcast_ranks_are_not_channels_last() {
    let mut rng = Rng(41);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 2, 9]));
    let w = n.add_constant("w", random(&mut rng, &[3, 2, 3]));
    let c = n.add("conv", Op::Nn(NnOp::Conv(Conv { window: Window::default(), group: 1 })), &[x, w]).unwrap();
    n.mark_output(c, "y").unwrap();
    let after = check_nhwc(&n.build(), 42);
    assert_eq!(ops(&after), ["Conv"]);
    // A rank-2 activation added to the conv output stops the region at the Add.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 2, 4, 4]));
    let y = n.add_input("y", DType::F32, Shape::known(&[4, 4]));
    let c = conv(&mut n, &mut rng, "conv", x, 2, 2);
    let a = n.add("add", bin(BinaryOp::Add), &[c, y]).unwrap();
    n.mark_output(a, "out").unwrap();
    let after = check_nhwc(&n.build(), 43);
    assert_eq!(ops(&after), ["Transpose", "ConvNhwc", "Transpose", "Add"]);
}

// ---- real models channels-last ----

/// Level 3 channels-last on a real model: same outputs, and the transposes it took.
fn real_nhwc(model: support::models::RealModel) -> (kiln_ir::Graph, usize) {
    let eval = cpu_eval;
    let options = Options { evaluator: Some(&eval), ..nhwc() };
    let (after, report) = Optimizer::new(3).with_options(options).optimize(&model.graph).expect("optimize");
    assert!(report.refused.is_empty(), "refused patches: {:#?}", report.refused);
    let err = assert_same_outputs(&model.graph, &after, &model.inputs, 1e-5);
    let t = transposes(&after);
    let before = model.graph.nodes.iter().filter(|n| n.op.name() == "Transpose").count();
    let nhwc = after.nodes.iter().filter(|n| n.op.name().ends_with("Nhwc")).count();
    eprintln!(
        "{} NHWC: {} -> {} layers, {nhwc} channels-last layers, transposes {before} -> {t}, rel_l2 {err:.1e}",
        model.name, report.nodes_before, report.layers_after
    );
    (after, t - before)
}

#[test]
fn resnet50_channels_last_has_two_transposes() {
    let (after, added) = real_nhwc(support::models::torch_model("resnet50"));
    assert_eq!(added, 2);
    assert_eq!(after.nodes.iter().filter(|n| n.op.name() == "Conv").count(), 0);
}

#[test]
fn mobilenetv2_channels_last_has_two_transposes() {
    let (_, added) = real_nhwc(support::models::torch_model("mobilenetv2"));
    assert_eq!(added, 2);
}

#[test]
fn pip_models_channels_last() {
    for name in ["nudenet-320n", "ppocr-det", "ppocr-rec"] {
        if let Some(m) = support::models::pip_model(name) {
            real_nhwc(m);
        }
    }
}

#[test]
fn real_models_memory_passes() {
    for m in [support::models::torch_model("resnet50"), support::models::torch_model("bert-base")] {
        let (after, report) = optimize(&m.graph, 3);
        assert_same_outputs(&m.graph, &after, &m.inputs, 1e-5);
        eprintln!("{}: memory rewrites {:?}", m.name, report.by_pass());
    }
}

#[test]
fn channel_split_and_views_join_the_region() {
    let mut rng = Rng(44);
    for batch in [1, 2] {
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(&[batch, 2, 5, 5]));
        let c = conv(&mut n, &mut rng, "conv", x, 2, 4);
        let op = Op::Movement(MovementOp::Split { axis: 1, split: None, num_outputs: None });
        let parts = n.add_layer("split", op, &[c], 2).unwrap();
        let a = conv(&mut n, &mut rng, "a", parts[0], 2, 2);
        let r = n.add("relu", un(UnaryOp::Relu), &[parts[1]]).unwrap();
        let cat = n.add("cat", concat(1), &[a, r]).unwrap();
        n.mark_output(cat, "y").unwrap();
        let after = check_nhwc(&n.build(), 45);
        assert_eq!(transposes(&after), 2, "batch {batch}: {:?}", ops(&after));
        assert!(ops(&after).contains(&"Split"), "{:?}", ops(&after));
    }
    // A channel Slice becomes a view before the region reaches it, then a Slice of axis 3.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 5, 5]));
    let e = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let attrs = SliceAttrs { starts: vec![1], ends: vec![3], axes: Some(vec![1]) };
    let s = n.add("slice", Op::Movement(MovementOp::Slice { attrs: Some(attrs) }), &[e]).unwrap();
    let c = conv(&mut n, &mut rng, "conv", s, 2, 3);
    n.mark_output(c, "y").unwrap();
    let after = check_nhwc(&n.build(), 46);
    assert_eq!(ops(&after), ["Transpose", "Exp", "Slice", "ConvNhwc", "Transpose"]);
}

#[test]
fn an_in_place_concat_in_a_region_becomes_a_channel_concat() {
    let mut rng = Rng(47);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 2, 4, 4]));
    let y = n.add_input("y", DType::F32, Shape::known(&[1, 3, 4, 4]));
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let b = n.add("tanh", un(UnaryOp::Tanh), &[y]).unwrap();
    let c = n.add("cat", concat(1), &[a, b]).unwrap();
    let d = conv(&mut n, &mut rng, "conv", c, 5, 2);
    n.mark_output(d, "out").unwrap();
    let g = n.build();
    assert!(ops(&check_pass(&g, 3, 48).0).contains(&"ConcatInPlace"));
    let after = check_nhwc(&g, 49);
    assert_eq!(ops(&after).iter().filter(|&&o| o == "Concat").count(), 1, "{:?}", ops(&after));
    assert_eq!(transposes(&after), 3);
}

#[test]
fn fused_elementwise_with_channel_constants_is_carried() {
    use kiln_ir::ops::{Expr, ExprNode, FusedOp};
    let mut rng = Rng(50);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 4, 4]));
    let a = conv(&mut n, &mut rng, "a", x, 3, 3);
    let b = conv(&mut n, &mut rng, "b", x, 3, 3);
    let k = n.add_constant("k", random(&mut rng, &[1, 3, 1, 1]));
    // relu(x0 * x2 + x1) * 0.5
    let mut e = Expr::default();
    let (i0, i1, i2) = (e.push(ExprNode::Input(0)), e.push(ExprNode::Input(1)), e.push(ExprNode::Input(2)));
    let m = e.push(ExprNode::Binary(BinaryOp::Mul, i0, i2));
    let s = e.push(ExprNode::Binary(BinaryOp::Add, m, i1));
    let r = e.push(ExprNode::Unary(UnaryOp::Relu, s));
    let h = e.push(ExprNode::Scalar(0.5));
    e.push(ExprNode::Binary(BinaryOp::Mul, r, h));
    let f = n.add("a + b + k", Op::Fused(FusedOp::Elementwise(e)), &[a, b, k]).unwrap();
    let c = conv(&mut n, &mut rng, "c", f, 3, 2);
    n.mark_output(c, "y").unwrap();
    let after = check_nhwc(&n.build(), 51);
    assert_eq!(transposes(&after), 2, "{:?}", ops(&after));
    assert!(ops(&after).contains(&"FusedElementwise"));
}

#[test]
#[ignore]
fn debug_transposes() {
    for name in ["nudenet-320n", "ppocr-det", "ppocr-rec"] {
        let Some(m) = support::models::pip_model(name) else { continue };
        let (after, _) = real_nhwc(m);
        for (id, n) in after.nodes.iter().enumerate() {
            if n.op.name() != "Transpose" {
                continue;
            }
            let from = n.inputs[0].map(|o| after.nodes[o.node].op.name()).unwrap_or("-");
            let to: Vec<&str> = after
                .nodes
                .iter()
                .filter(|c| c.inputs.iter().flatten().any(|o| o.node == id))
                .map(|c| c.op.name())
                .collect();
            eprintln!("{name}: {from} -> T({}) -> {to:?}", n.name);
        }
    }
}
