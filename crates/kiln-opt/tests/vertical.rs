//! BatchNorm and scale folding, epilogue (vertical) fusion and elementwise chains, with
//! the near misses each must leave alone.

mod support;

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};
use kiln_ir::ops::nn::{Conv, ConvTranspose, Gemm, Window};
use kiln_ir::ops::reduce::BatchNorm;
use kiln_ir::ops::{ElementwiseOp, FusedOp, NnOp, ReduceOp};
use kiln_ir::{DType, Graph, NetworkDefinition, Op, OutletId, Shape, Tensor};
use support::*;

fn rand(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(|_| rng.uniform(lo, hi)).collect()).unwrap()
}

fn cst(n: &mut NetworkDefinition, rng: &mut Rng, name: &str, shape: &[usize]) -> OutletId {
    let t = rand(rng, shape, -1.0, 1.0);
    n.add_constant(name, t)
}

fn un(u: UnaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Unary(u))
}

fn bin(b: BinaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Binary(b))
}

fn conv(group: usize) -> Op {
    Op::Nn(NnOp::Conv(Conv { window: Window { pads: Some(vec![1, 1, 1, 1]), ..Window::default() }, group }))
}

fn conv_t(group: usize) -> Op {
    Op::Nn(NnOp::ConvTranspose(ConvTranspose {
        window: Window { strides: Some(vec![2, 2]), ..Window::default() },
        group,
        output_padding: None,
        output_shape: None,
    }))
}

fn gemm(trans_b: bool) -> Op {
    Op::Nn(NnOp::Gemm(Gemm { alpha: 0.5, beta: 2.0, trans_a: false, trans_b }))
}

fn bn_op() -> Op {
    Op::Reduce(ReduceOp::BatchNorm(BatchNorm { epsilon: 1e-5, momentum: 0.9, training: false }))
}

/// A BatchNorm over `c` channels of `x`, with random statistics (positive variance).
fn bn(n: &mut NetworkDefinition, rng: &mut Rng, name: &str, x: OutletId, c: usize) -> OutletId {
    let scale = cst(n, rng, &format!("{name}.scale"), &[c]);
    let b = cst(n, rng, &format!("{name}.b"), &[c]);
    let mean = cst(n, rng, &format!("{name}.mean"), &[c]);
    let var = rand(rng, &[c], 0.2, 2.0);
    let var = n.add_constant(&format!("{name}.var"), var);
    n.add(name, bn_op(), &[x, scale, b, mean, var]).unwrap()
}

fn fused(g: &Graph) -> Vec<&FusedOp> {
    g.nodes.iter().filter_map(|n| if let Op::Fused(f) = &n.op { Some(f) } else { None }).collect()
}

/// x[1,4,6,6] -> conv(4->8, 3x3, bias) -> ...
fn conv_input(n: &mut NetworkDefinition, rng: &mut Rng, bias: bool) -> (OutletId, OutletId) {
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 6, 6]));
    let w = cst(n, rng, "w", &[8, 4, 3, 3]);
    let mut inputs = vec![x, w];
    if bias {
        inputs.push(cst(n, rng, "b", &[8]));
    }
    let y = n.add("conv", conv(1), &inputs).unwrap();
    (x, y)
}

// ---- BatchNorm ----

#[test]
fn conv_batchnorm_folds_into_the_conv() {
    for bias in [true, false] {
        let mut rng = Rng(1);
        let mut n = NetworkDefinition::new("g");
        let (_, y) = conv_input(&mut n, &mut rng, bias);
        let b = bn(&mut n, &mut rng, "bn", y, 8);
        n.mark_output(b, "out").unwrap();
        let (after, _) = check_pass(&n.build(), 2, 1);
        assert_eq!(ops(&after), ["Conv"]);
        assert_eq!(after.nodes.iter().find(|n| n.op.name() == "Conv").unwrap().name, "conv + bn");
    }
}

#[test]
fn depthwise_conv_batchnorm_folds() {
    let mut rng = Rng(2);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 4, 5, 5]));
    let w = cst(&mut n, &mut rng, "w", &[4, 1, 3, 3]);
    let y = n.add("dw", conv(4), &[x, w]).unwrap();
    let b = bn(&mut n, &mut rng, "bn", y, 4);
    n.mark_output(b, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 2);
    assert_eq!(ops(&after), ["Conv"]);
}

#[test]
fn grouped_conv_transpose_batchnorm_folds_per_output_channel() {
    for group in [1, 2] {
        let mut rng = Rng(3);
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 3, 3]));
        // [C_in, C_out/group, k, k]: 6 output channels in all.
        let w = cst(&mut n, &mut rng, "w", &[4, 6 / group, 2, 2]);
        let bias = cst(&mut n, &mut rng, "b", &[6]);
        let y = n.add("deconv", conv_t(group), &[x, w, bias]).unwrap();
        let b = bn(&mut n, &mut rng, "bn", y, 6);
        n.mark_output(b, "out").unwrap();
        let (after, _) = check_pass(&n.build(), 2, 3);
        assert_eq!(ops(&after), ["ConvTranspose"], "group {group}");
    }
}

#[test]
fn gemm_batchnorm_folds_with_either_weight_layout() {
    for trans_b in [false, true] {
        let mut rng = Rng(4);
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
        let w = cst(&mut n, &mut rng, "w", if trans_b { &[7, 5] } else { &[5, 7] });
        let c = cst(&mut n, &mut rng, "c", &[7]);
        let y = n.add("fc", gemm(trans_b), &[x, w, c]).unwrap();
        let b = bn(&mut n, &mut rng, "bn", y, 7);
        n.mark_output(b, "out").unwrap();
        let (after, _) = check_pass(&n.build(), 2, 4);
        assert_eq!(ops(&after), ["Gemm"]);
    }
}

#[test]
fn matmul_batchnorm_becomes_a_gemm() {
    let mut rng = Rng(5);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 7]);
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let b = bn(&mut n, &mut rng, "bn", y, 7);
    n.mark_output(b, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 5);
    assert_eq!(ops(&after), ["Gemm"]);
}

#[test]
fn batchnorm_over_another_axis_than_the_matmul_features_is_not_folded() {
    // MatMul [2,7,5] x [5,7] -> [2,7,7]: BatchNorm's channel axis 1 is not the feature axis.
    let mut rng = Rng(6);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 7, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 7]);
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let b = bn(&mut n, &mut rng, "bn", y, 7);
    n.mark_output(b, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 6);
    assert_eq!(ops(&after), ["MatMul", "FusedElementwise"]);
}

#[test]
fn batchnorm_after_a_conv_read_elsewhere_becomes_elementwise() {
    let mut rng = Rng(7);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let b = bn(&mut n, &mut rng, "bn", y, 8);
    n.mark_output(b, "out").unwrap();
    n.mark_output(y, "conv_out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 7);
    assert_eq!(ops(&after), ["Conv", "FusedElementwise"]);
}

#[test]
fn batchnorm_output_read_twice_still_folds() {
    let mut rng = Rng(8);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let b = bn(&mut n, &mut rng, "bn", y, 8);
    let r = n.add("relu", un(UnaryOp::Relu), &[b]).unwrap();
    n.mark_output(b, "out").unwrap();
    n.mark_output(r, "relu_out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 8);
    assert_eq!(ops(&after), ["Conv", "Relu"]);
}

#[test]
fn batchnorm_after_conv_with_runtime_weights_becomes_elementwise() {
    let mut rng = Rng(9);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 6, 6]));
    let w = n.add_input("w", DType::F32, Shape::known(&[8, 4, 3, 3]));
    let y = n.add("conv", conv(1), &[x, w]).unwrap();
    let b = bn(&mut n, &mut rng, "bn", y, 8);
    n.mark_output(b, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 9);
    assert_eq!(ops(&after), ["Conv", "FusedElementwise"]);
}

#[test]
fn batchnorm_of_a_graph_input_becomes_elementwise_and_fuses_with_relu() {
    let mut rng = Rng(10);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let b = bn(&mut n, &mut rng, "bn", x, 3);
    let r = n.add("relu", un(UnaryOp::Relu), &[b]).unwrap();
    n.mark_output(r, "out").unwrap();
    let g = n.build();
    let (after, _) = check_pass(&g, 2, 10);
    assert_eq!(ops(&after), ["FusedElementwise", "Relu"]);
    let (after, _) = check_pass(&g, 3, 10);
    assert_eq!(ops(&after), ["FusedElementwise"]);
    assert_eq!(after.nodes.iter().find(|n| n.op.name() == "FusedElementwise").unwrap().name, "bn + relu");
}

// ---- scale folding ----

fn conv_then(op: Op, c: Tensor, conv_first: bool, seed: u64) -> Graph {
    let mut rng = Rng(seed);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, seed.is_multiple_of(2));
    let c = n.add_constant("k", c);
    let ins = if conv_first { [y, c] } else { [c, y] };
    let z = n.add("op", op, &ins).unwrap();
    n.mark_output(z, "out").unwrap();
    n.build()
}

#[test]
fn per_channel_constants_fold_into_the_conv() {
    let mut rng = Rng(11);
    let per_channel = rand(&mut rng, &[8, 1, 1], 0.5, 1.5);
    let scalar = Tensor::from_vec(vec![], vec![1.7f32]).unwrap();
    let rank4 = rand(&mut rng, &[1, 8, 1, 1], 0.5, 1.5);
    for (op, conv_first) in [
        (BinaryOp::Mul, true),
        (BinaryOp::Mul, false),
        (BinaryOp::Div, true),
        (BinaryOp::Add, true),
        (BinaryOp::Add, false),
        (BinaryOp::Sub, true),
        (BinaryOp::Sub, false),
    ] {
        for c in [&per_channel, &scalar, &rank4] {
            for seed in [12, 13] {
                let g = conv_then(bin(op), c.clone(), conv_first, seed);
                let (after, _) = check_pass(&g, 2, seed);
                assert_eq!(ops(&after), ["Conv"], "{op:?} conv_first={conv_first} {:?}", c.shape());
            }
        }
    }
}

#[test]
fn constants_that_are_not_per_channel_are_not_folded() {
    let mut rng = Rng(13);
    // Along the width, a constant divided by the conv, and one that grows the output.
    let along_w = rand(&mut rng, &[1, 1, 6], 0.5, 1.5);
    let along_h = rand(&mut rng, &[6, 1], 0.5, 1.5);
    let grows = rand(&mut rng, &[2, 8, 1, 1], 0.5, 1.5);
    for (op, c, conv_first) in [
        (BinaryOp::Mul, along_w.clone(), true),
        (BinaryOp::Add, along_w, true),
        (BinaryOp::Mul, along_h, true),
        (BinaryOp::Div, rand(&mut rng, &[8, 1, 1], 0.5, 1.5), false),
        (BinaryOp::Mul, grows.clone(), true),
        (BinaryOp::Add, grows, false),
    ] {
        let g = conv_then(bin(op), c, conv_first, 14);
        let (after, _) = check_pass(&g, 2, 14);
        assert_eq!(ops(&after), ["Conv", op.name()]);
    }
}

#[test]
fn a_conv_read_twice_keeps_its_scale() {
    let mut rng = Rng(15);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let c = cst(&mut n, &mut rng, "k", &[8, 1, 1]);
    let z = n.add("mul", bin(BinaryOp::Mul), &[y, c]).unwrap();
    let r = n.add("relu", un(UnaryOp::Relu), &[y]).unwrap();
    n.mark_output(z, "out").unwrap();
    n.mark_output(r, "out2").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 15);
    assert_eq!(ops(&after), ["Conv", "Mul", "Relu"]);
}

#[test]
fn matmul_and_gemm_scale_and_bias_fold() {
    let mut rng = Rng(16);
    // MatMul [2,3,5] x [5,7] then * [7]: folded (no bias needed).
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 7]);
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let c = cst(&mut n, &mut rng, "k", &[7]);
    let z = n.add("mul", bin(BinaryOp::Mul), &[y, c]).unwrap();
    n.mark_output(z, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 16);
    assert_eq!(ops(&after), ["MatMul"]);

    // Gemm [3,5] x [7,5]^T + [7], then + [1,7] and / 3.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[7, 5]);
    let b = cst(&mut n, &mut rng, "b", &[7]);
    let y = n.add("fc", gemm(true), &[x, w, b]).unwrap();
    let c = cst(&mut n, &mut rng, "k", &[1, 7]);
    let z = n.add("add", bin(BinaryOp::Add), &[c, y]).unwrap();
    let three = n.add_constant("three", Tensor::from_vec(vec![1], vec![3.0f32]).unwrap());
    let z = n.add("div", bin(BinaryOp::Div), &[z, three]).unwrap();
    n.mark_output(z, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 17);
    assert_eq!(ops(&after), ["Gemm"]);
}

#[test]
fn matrix_times_weights_plus_bias_becomes_a_gemm_but_not_for_batched_matmul() {
    for (shape, want) in [(&[3, 5][..], "Gemm"), (&[2, 3, 5][..], "MatMul")] {
        let mut rng = Rng(19);
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(shape));
        let w = cst(&mut n, &mut rng, "w", &[5, 7]);
        let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
        let c = cst(&mut n, &mut rng, "b", &[7]);
        let z = n.add("add", bin(BinaryOp::Add), &[y, c]).unwrap();
        n.mark_output(z, "out").unwrap();
        let g = n.build();
        let (after, _) = check_pass(&g, 2, 19);
        let expected: &[&str] = if want == "Gemm" { &["Gemm"] } else { &["MatMul", "Add"] };
        assert_eq!(ops(&after), expected);
        let (after, _) = check_pass(&g, 3, 19);
        let expected: &[&str] = if want == "Gemm" { &["Gemm"] } else { &["FusedMatMul"] };
        assert_eq!(ops(&after), expected);
    }
}

#[test]
fn matmul_scale_along_rows_is_not_folded() {
    let mut rng = Rng(18);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 3]);
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let c = cst(&mut n, &mut rng, "k", &[3, 1]);
    let z = n.add("mul", bin(BinaryOp::Mul), &[y, c]).unwrap();
    n.mark_output(z, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 18);
    assert_eq!(ops(&after), ["MatMul", "Mul"]);
}

// ---- epilogue fusion ----

/// ResNet's bottleneck tail: conv + bn + add(residual) + relu, plus a bias-add-relu conv.
#[test]
fn resnet_block_becomes_fused_convs() {
    let mut rng = Rng(20);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 8, 6, 6]));
    let w1 = cst(&mut n, &mut rng, "w1", &[8, 8, 3, 3]);
    let c1 = n.add("conv1", conv(1), &[x, w1]).unwrap();
    let b1 = bn(&mut n, &mut rng, "bn1", c1, 8);
    let r1 = n.add("relu1", un(UnaryOp::Relu), &[b1]).unwrap();
    let w2 = cst(&mut n, &mut rng, "w2", &[8, 8, 3, 3]);
    let c2 = n.add("conv2", conv(1), &[r1, w2]).unwrap();
    let b2 = bn(&mut n, &mut rng, "bn2", c2, 8);
    let a = n.add("add", bin(BinaryOp::Add), &[x, b2]).unwrap();
    let r2 = n.add("relu2", un(UnaryOp::Relu), &[a]).unwrap();
    n.mark_output(r2, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 20);
    assert_eq!(ops(&after), ["FusedConv", "FusedConv"]);
    let names: Vec<&str> = after.nodes.iter().filter(|n| n.op.name() == "FusedConv").map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["conv1 + bn1 + relu1", "conv2 + bn2 + add + relu2"]);
}

#[test]
fn matmul_bias_gelu_and_residual_fuse() {
    let mut rng = Rng(21);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 5]);
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let b = cst(&mut n, &mut rng, "b", &[5]);
    let y = n.add("bias", bin(BinaryOp::Add), &[b, y]).unwrap();
    let y = n.add("gelu", un(UnaryOp::Gelu { tanh: false }), &[y]).unwrap();
    let y = n.add("res", bin(BinaryOp::Add), &[y, x]).unwrap();
    n.mark_output(y, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 21);
    assert_eq!(ops(&after), ["FusedMatMul"]);
}

#[test]
fn conv_relu6_with_clip_inputs_and_gemm_activations_fuse() {
    let mut rng = Rng(22);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let lo = n.add_constant("lo", Tensor::scalar(0.0f32));
    let hi = n.add_constant("hi", Tensor::scalar(0.1f32));
    let y = n.add("relu6", Op::Elementwise(ElementwiseOp::Clip { min: None, max: None }), &[y, lo, hi]).unwrap();
    n.mark_output(y, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 22);
    assert_eq!(ops(&after), ["FusedConv"]);

    for act in [
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::HardSwish,
        UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
        UnaryOp::Elu { alpha: 1.0 },
        UnaryOp::Softplus,
        UnaryOp::Swish { alpha: 1.0 },
    ] {
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
        let w = n.add_input("w", DType::F32, Shape::known(&[5, 4]));
        let y = n.add("fc", gemm(false), &[x, w]).unwrap();
        let y = n.add("act", un(act), &[y]).unwrap();
        n.mark_output(y, "out").unwrap();
        let (after, _) = check_pass(&n.build(), 3, 23);
        assert_eq!(ops(&after), ["FusedGemm"], "{act:?}");
    }
}

#[test]
fn conv_read_twice_is_not_fused() {
    let mut rng = Rng(24);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let r = n.add("relu", un(UnaryOp::Relu), &[y]).unwrap();
    let s = n.add("sig", un(UnaryOp::Sigmoid), &[y]).unwrap();
    n.mark_output(r, "a").unwrap();
    n.mark_output(s, "b").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 24);
    assert_eq!(ops(&after), ["Conv", "Relu", "Sigmoid"]);
}

#[test]
fn residual_add_that_broadcasts_is_not_fused() {
    let mut rng = Rng(25);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let big = n.add_input("big", DType::F32, Shape::known(&[2, 8, 6, 6]));
    let a = n.add("add", bin(BinaryOp::Add), &[y, big]).unwrap();
    n.mark_output(a, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 25);
    assert_eq!(ops(&after), ["Conv", "Add"]);

    // A bias along the width is not per channel: left alone; one per channel fuses.
    for (shape, fuses) in [(&[6][..], false), (&[1, 6, 1][..], false), (&[8, 1, 1][..], true), (&[1][..], true)] {
        let mut n = NetworkDefinition::new("g");
        let (_, y) = conv_input(&mut n, &mut rng, true);
        let c = n.add_input("k", DType::F32, Shape::known(shape));
        let a = n.add("add", bin(BinaryOp::Add), &[y, c]).unwrap();
        n.mark_output(a, "out").unwrap();
        let (after, _) = check_pass(&n.build(), 3, 26);
        let want: &[&str] = if fuses { &["FusedConv"] } else { &["Conv", "Add"] };
        assert_eq!(ops(&after), want, "{shape:?}");
    }
}

#[test]
fn int_matmul_is_not_fused() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::I32, Shape::known(&[3, 4]));
    let w = n.add_input("w", DType::I32, Shape::known(&[4, 2]));
    let y = n.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let z = n.add("relu", un(UnaryOp::Relu), &[y]).unwrap();
    let z = n.add("abs", un(UnaryOp::Abs), &[z]).unwrap();
    n.mark_output(z, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 27);
    assert_eq!(ops(&after), ["MatMul", "Relu", "Abs"]);
}

// ---- elementwise chains ----

#[test]
fn silu_chain_and_scalar_constants_fuse_into_the_conv() {
    // YOLO: conv -> sigmoid, conv -> mul(conv, sigmoid); then * 0.5 + 1.
    let mut rng = Rng(30);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let s = n.add("sig", un(UnaryOp::Sigmoid), &[y]).unwrap();
    let m = n.add("mul", bin(BinaryOp::Mul), &[y, s]).unwrap();
    n.mark_output(m, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 30);
    assert_eq!(ops(&after), ["FusedConv"]);
}

#[test]
fn elementwise_chain_becomes_one_node_with_scalars() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let y = n.add_input("y", DType::F32, Shape::known(&[3]));
    let half = n.add_constant("half", Tensor::from_vec(vec![1], vec![0.5f32]).unwrap());
    let a = n.add("add", bin(BinaryOp::Add), &[x, y]).unwrap();
    let t = n.add("tanh", un(UnaryOp::Tanh), &[a]).unwrap();
    let s = n.add("sig", un(UnaryOp::Sigmoid), &[a]).unwrap();
    let m = n.add("max", Op::Elementwise(ElementwiseOp::Variadic(VariadicOp::Max)), &[t, s]).unwrap();
    let h = n.add("scale", bin(BinaryOp::Mul), &[m, half]).unwrap();
    n.mark_output(h, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 31);
    assert_eq!(ops(&after), ["FusedElementwise"]);
    let Some(FusedOp::Elementwise(e)) = fused(&after).first().copied() else { panic!() };
    assert!(e.nodes.contains(&kiln_ir::ops::ExprNode::Scalar(0.5)), "{}", e.describe());
    assert_eq!(after.nodes.iter().find(|n| n.op.name() == "FusedElementwise").unwrap().inputs.len(), 2);
}

#[test]
fn a_scalar_that_sets_the_rank_stays_an_input() {
    // x [3] * c [1,1]: the output is [1,3]; c must stay an input.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3]));
    let c = n.add_constant("c", Tensor::from_vec(vec![1, 1], vec![2.0f32]).unwrap());
    let a = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let m = n.add("mul", bin(BinaryOp::Mul), &[a, c]).unwrap();
    n.mark_output(m, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 32);
    assert_eq!(ops(&after), ["FusedElementwise"]);
    assert_eq!(after.nodes.iter().find(|n| n.op.name() == "FusedElementwise").unwrap().inputs.len(), 2);
}

#[test]
fn intermediates_read_elsewhere_and_int_ops_are_not_fused() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let e = n.add("exp", un(UnaryOp::Exp), &[x]).unwrap();
    let r = n.add("relu", un(UnaryOp::Relu), &[e]).unwrap();
    n.mark_output(e, "e").unwrap();
    n.mark_output(r, "r").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 33);
    assert_eq!(ops(&after), ["Exp", "Relu"]);

    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::I64, Shape::known(&[2, 3]));
    let a = n.add("abs", un(UnaryOp::Abs), &[x]).unwrap();
    let b = n.add("add", bin(BinaryOp::Add), &[a, x]).unwrap();
    n.mark_output(b, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 34);
    assert_eq!(ops(&after), ["Abs", "Add"]);
}

#[test]
fn elementwise_after_a_fused_layer_joins_its_epilogue() {
    // conv -> relu (epilogue); then a chain mul(·, y) + exp that keeps the shape.
    let mut rng = Rng(35);
    let mut n = NetworkDefinition::new("g");
    let (x, y) = conv_input(&mut n, &mut rng, true);
    let _ = x;
    let other = n.add_input("other", DType::F32, Shape::known(&[1, 8, 6, 6]));
    let r = n.add("relu", un(UnaryOp::Relu), &[y]).unwrap();
    let e = n.add("exp", un(UnaryOp::Exp), &[other]).unwrap();
    let m = n.add("mul", bin(BinaryOp::Mul), &[e, r]).unwrap();
    n.mark_output(m, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 35);
    assert_eq!(ops(&after), ["Exp", "FusedConv"]);
}

// ---- dtypes ----

fn to_f16(t: Tensor) -> Tensor {
    let v: Vec<half::f16> = t.to_f64_vec().unwrap().into_iter().map(half::f16::from_f64).collect();
    Tensor::from_vec(t.shape().to_vec(), v).unwrap()
}

#[test]
fn f16_conv_batchnorm_folds_into_f16_weights() {
    let mut rng = Rng(40);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 6, 6]));
    let cast = |to| Op::Elementwise(ElementwiseOp::Cast { to, saturate: false });
    let xh = n.add("to_f16", cast(DType::F16), &[x]).unwrap();
    let mut c16 = |n: &mut NetworkDefinition, name: &str, shape: &[usize], lo: f32, hi: f32| {
        let t = to_f16(rand(&mut rng, shape, lo, hi));
        n.add_constant(name, t)
    };
    let w = c16(&mut n, "w", &[8, 4, 3, 3], -1.0, 1.0);
    let b = c16(&mut n, "b", &[8], -1.0, 1.0);
    let y = n.add("conv", conv(1), &[xh, w, b]).unwrap();
    let params: Vec<OutletId> = [("s", -1.0, 1.0), ("t", -1.0, 1.0), ("m", -1.0, 1.0), ("v", 0.2, 2.0)]
        .iter()
        .map(|&(name, lo, hi)| c16(&mut n, name, &[8], lo, hi))
        .collect();
    let z = n.add("bn", bn_op(), &[y, params[0], params[1], params[2], params[3]]).unwrap();
    let z = n.add("to_f32", cast(DType::F32), &[z]).unwrap();
    n.mark_output(z, "out").unwrap();
    let g = n.build();
    let (after, _) = optimize(&g, 2);
    assert_eq!(ops(&after), ["Cast", "Conv", "Cast"]);
    let conv_node = after.nodes.iter().find(|n| n.op.name() == "Conv").unwrap();
    let w = conv_node.inputs[1].unwrap();
    assert_eq!(after.fact(w).unwrap().dtype, Some(DType::F16));
    let inputs = random_inputs(&g, 40, 3, &|_| 3);
    assert_same_outputs(&g, &after, &inputs, 5e-3);
}

#[test]
fn weight_scaling_follows_each_layout() {
    use kiln_opt::passes::weights::{WeightLayout, scale_weights};
    // ConvTranspose [C_in=4, C_out/group=1, 1, 1] with 2 groups: output channel of
    // input channel i is i / 2.
    let w = Tensor::from_vec(vec![4, 1, 1, 1], vec![1.0f32; 4]).unwrap();
    let s = scale_weights(&w, WeightLayout::ConvTranspose { group: 2 }, &[2.0, 3.0]).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), [2.0, 2.0, 3.0, 3.0]);
    let w = Tensor::from_vec(vec![2, 3], vec![1.0f64; 6]).unwrap();
    let s = scale_weights(&w, WeightLayout::Cols, &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(s.to_vec::<f64>().unwrap(), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let s = scale_weights(&w, WeightLayout::Rows, &[2.0, 3.0]).unwrap();
    assert_eq!(s.to_vec::<f64>().unwrap(), [2.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
    assert!(scale_weights(&w, WeightLayout::Rows, &[2.0]).is_none());
}

#[test]
fn gemm_with_a_full_bias_matrix_keeps_its_scale() {
    let mut rng = Rng(41);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3, 5]));
    let w = cst(&mut n, &mut rng, "w", &[5, 7]);
    let c = cst(&mut n, &mut rng, "c", &[3, 7]);
    let y = n.add("fc", gemm(false), &[x, w, c]).unwrap();
    let k = cst(&mut n, &mut rng, "k", &[7]);
    let z = n.add("mul", bin(BinaryOp::Mul), &[y, k]).unwrap();
    n.mark_output(z, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 2, 41);
    assert_eq!(ops(&after), ["Gemm", "Mul"]);
}

#[test]
fn clip_with_runtime_bounds_is_not_fused() {
    let mut rng = Rng(42);
    let mut n = NetworkDefinition::new("g");
    let (_, y) = conv_input(&mut n, &mut rng, true);
    let lo = n.add_input("lo", DType::F32, Shape::known(&[]));
    let y = n.add("clip", Op::Elementwise(ElementwiseOp::Clip { min: None, max: None }), &[y, lo]).unwrap();
    let y = n.add("exp", un(UnaryOp::Exp), &[y]).unwrap();
    n.mark_output(y, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 42);
    assert_eq!(ops(&after), ["Conv", "Clip", "Exp"]);
}

#[test]
fn conv_transpose_epilogue_and_min_of_two_fuse() {
    let mut rng = Rng(43);
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 4, 3, 3]));
    let w = cst(&mut n, &mut rng, "w", &[4, 3, 2, 2]);
    let y = n.add("deconv", conv_t(2), &[x, w]).unwrap();
    let r = n.add_input("r", DType::F32, Shape::known(&[1, 6, 6, 6]));
    let m = n.add("min", Op::Elementwise(ElementwiseOp::Variadic(VariadicOp::Min)), &[r, y]).unwrap();
    let s = n.add("sig", un(UnaryOp::Sigmoid), &[m]).unwrap();
    n.mark_output(s, "out").unwrap();
    let (after, _) = check_pass(&n.build(), 3, 43);
    assert_eq!(ops(&after), ["FusedConvTranspose"]);
    assert_eq!(after.nodes.iter().find(|n| n.op.name() == "FusedConvTranspose").unwrap().name, "deconv + min + sig");
}
