//! The conv/pool family through the CUDA executor against `kiln_cpu::run` on random
//! non-zero inputs: Conv/ConvTranspose (cuDNN; grouped, depthwise, 1-D/3-D, auto_pad,
//! asymmetric pads, output_padding/output_shape), a fused Conv layer with an epilogue,
//! the pools (Max with Indices row- and column-major, Average, Lp, global, 8-bit Max),
//! MaxUnpool, Col2Im, Batch/Instance/Group normalisation, LRN, MVN, DepthToSpace and
//! SpaceToDepth. Tolerances (relative L2): FP32 1e-4, FP16 1e-2, integers exactly.
//! The host test checks that every graph plans and lowers without a GPU.

mod support;

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::{DepthToSpaceMode, MovementOp};
use kiln_ir::ops::nn::{AutoPad, Conv, ConvTranspose, NnOp, Pool, PoolKind, Window};
use kiln_ir::ops::reduce::{BatchNorm, GroupAffine, GroupNorm, InstanceNorm, Lrn, MeanVarianceNorm, ReduceOp};
use kiln_ir::ops::{Expr, ExprNode, FusedLayer, FusedOp, Op};
use kiln_ir::{DType, NetworkDefinition, Shape};
use support::*;

fn win(kernel: Option<&[usize]>, strides: &[usize], pads: &[usize], dil: &[usize], auto_pad: AutoPad) -> Window {
    let opt = |v: &[usize]| if v.is_empty() { None } else { Some(v.to_vec()) };
    Window {
        kernel_shape: kernel.map(|k| k.to_vec()),
        strides: opt(strides),
        pads: opt(pads),
        dilations: opt(dil),
        auto_pad,
    }
}

fn conv(w: Window, group: usize) -> Op {
    Op::Nn(NnOp::Conv(Conv { window: w, group }))
}

/// Convolutions of `dtype`: plain with bias, strided asymmetric pads (pre-padded),
/// SAME_UPPER stride 2, grouped, depthwise, dilated 1-D, 3-D, and ConvTranspose with
/// output_padding, pads, output_shape, groups, 1-D.
fn convs(dtype: DType, name: &'static str, tol: f64) -> Case {
    let mut net = NetworkDefinition::new(name);
    let x = net.add_input("x", dtype, Shape::known(&[2, 4, 9, 8]));
    let x1 = net.add_input("x1", dtype, Shape::known(&[2, 4, 11]));
    let x3 = net.add_input("x3", dtype, Shape::known(&[1, 2, 5, 6, 4]));
    let c = |net: &mut NetworkDefinition, n: &str, s: &[usize], seed| net.add_constant(n, tensor(dtype, s, seed));
    let w = c(&mut net, "w", &[6, 4, 3, 3], 1);
    let b = c(&mut net, "b", &[6], 2);
    let y = net.add("conv", conv(win(None, &[], &[1, 1, 1, 1], &[], AutoPad::NotSet), 1), &[x, w, b]).unwrap();
    out(&mut net, y, "conv");
    let y = net.add("asym", conv(win(None, &[2, 2], &[1, 0, 0, 2], &[], AutoPad::NotSet), 1), &[x, w]).unwrap();
    out(&mut net, y, "asym");
    let y = net.add("same", conv(win(None, &[2, 2], &[], &[], AutoPad::SameUpper), 1), &[x, w, b]).unwrap();
    out(&mut net, y, "same");
    let wg = c(&mut net, "wg", &[6, 2, 3, 1], 3);
    let y = net.add("grouped", conv(win(None, &[1, 2], &[1, 0, 1, 0], &[], AutoPad::NotSet), 2), &[x, wg]).unwrap();
    out(&mut net, y, "grouped");
    let wd = c(&mut net, "wd", &[4, 1, 3, 3], 4);
    let y = net.add("depthwise", conv(win(None, &[], &[], &[2, 1], AutoPad::Valid), 4), &[x, wd]).unwrap();
    out(&mut net, y, "depthwise");
    let w1 = c(&mut net, "w1", &[3, 4, 3], 5);
    let y = net.add("conv1d", conv(win(None, &[], &[2, 2], &[2], AutoPad::NotSet), 1), &[x1, w1]).unwrap();
    out(&mut net, y, "conv1d");
    let w3 = c(&mut net, "w3", &[3, 2, 3, 3, 2], 6);
    let y = net.add("conv3d", conv(win(None, &[], &[1, 1, 0, 1, 1, 0], &[], AutoPad::NotSet), 1), &[x3, w3]).unwrap();
    out(&mut net, y, "conv3d");
    let ct = |w: Window, group, op: Option<Vec<usize>>, os: Option<Vec<usize>>| {
        Op::Nn(NnOp::ConvTranspose(ConvTranspose { window: w, group, output_padding: op, output_shape: os }))
    };
    let wt = c(&mut net, "wt", &[4, 3, 3, 3], 7);
    let bt = c(&mut net, "bt", &[3], 10);
    let y = net
        .add("convt", ct(win(None, &[2, 2], &[], &[], AutoPad::NotSet), 1, Some(vec![1, 1]), None), &[x, wt])
        .unwrap();
    out(&mut net, y, "convt");
    let y = net
        .add("convt_pads", ct(win(None, &[3, 2], &[1, 2, 0, 1], &[], AutoPad::NotSet), 1, None, None), &[x, wt, bt])
        .unwrap();
    out(&mut net, y, "convt_pads");
    let y = net
        .add("convt_shape", ct(win(None, &[3, 2], &[], &[], AutoPad::NotSet), 1, None, Some(vec![10, 8])), &[x, wt])
        .unwrap();
    out(&mut net, y, "convt_shape");
    let wtg = c(&mut net, "wtg", &[4, 2, 2, 3], 8);
    let y =
        net.add("convt_group", ct(win(None, &[], &[], &[2, 1], AutoPad::NotSet), 2, None, None), &[x, wtg]).unwrap();
    out(&mut net, y, "convt_group");
    let wt1 = c(&mut net, "wt1", &[4, 2, 3], 9);
    let y = net.add("convt1d", ct(win(None, &[2], &[], &[], AutoPad::SameUpper), 1, None, None), &[x1, wt1]).unwrap();
    out(&mut net, y, "convt1d");
    Case {
        name,
        graph: net.build(),
        inputs: vec![(dtype, vec![2, 4, 9, 8]), (dtype, vec![2, 4, 11]), (dtype, vec![1, 2, 5, 6, 4])],
        tol,
    }
}

/// A fused Conv layer (bias in the core) with a residual add and SiLU epilogue.
fn fused_conv(dtype: DType, name: &'static str, tol: f64) -> Case {
    let mut net = NetworkDefinition::new(name);
    let x = net.add_input("x", dtype, Shape::known(&[1, 3, 7, 7]));
    let r = net.add_input("r", dtype, Shape::known(&[1, 5, 7, 7]));
    let w = net.add_constant("w", tensor(dtype, &[5, 3, 3, 3], 11));
    let b = net.add_constant("b", tensor(dtype, &[5], 12));
    let epi = Expr {
        nodes: vec![
            ExprNode::Input(0),
            ExprNode::Input(1),
            ExprNode::Binary(BinaryOp::Add, 0, 1),
            ExprNode::Unary(UnaryOp::Sigmoid, 2),
            ExprNode::Binary(BinaryOp::Mul, 2, 3),
        ],
    };
    let core = conv(win(None, &[], &[1, 1, 1, 1], &[], AutoPad::NotSet), 1);
    let layer = FusedLayer { core: Box::new(core), core_inputs: 3, epilogue: epi };
    let y = net.add("conv_silu", Op::Fused(FusedOp::Layer(layer)), &[x, w, b, r]).unwrap();
    out(&mut net, y, "y");
    Case { name, graph: net.build(), inputs: vec![(dtype, vec![1, 3, 7, 7]), (dtype, vec![1, 5, 7, 7])], tol }
}

fn pool(kind: PoolKind, w: Window, ceil_mode: bool) -> Op {
    Op::Nn(NnOp::Pool(Pool { kind, window: w, ceil_mode }))
}

/// Pools of `dtype`: MaxPool with Indices (row- and column-major), dilated, ceil_mode,
/// 1-D and 3-D; AveragePool with and without counting pads; LpPool; the global pools.
fn pools(dtype: DType, name: &'static str, tol: f64) -> Case {
    let mut net = NetworkDefinition::new(name);
    let x = net.add_input("x", dtype, Shape::known(&[2, 3, 9, 10]));
    let x1 = net.add_input("x1", dtype, Shape::known(&[1, 2, 13]));
    let x3 = net.add_input("x3", dtype, Shape::known(&[1, 2, 5, 6, 7]));
    let max = PoolKind::Max { column_major_indices: false };
    let k3 = Some(&[3usize, 3][..]);
    let o = net
        .add_layer("max_idx", pool(max, win(k3, &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet), false), &[x], 2)
        .unwrap();
    out(&mut net, o[0], "max");
    out(&mut net, o[1], "max_indices");
    let cm = PoolKind::Max { column_major_indices: true };
    let o = net
        .add_layer("max_cm", pool(cm, win(Some(&[2, 3]), &[2, 1], &[], &[], AutoPad::NotSet), false), &[x], 2)
        .unwrap();
    out(&mut net, o[1], "max_cm_indices");
    let y = net
        .add("max_dil_ceil", pool(max, win(Some(&[2, 2]), &[2, 2], &[], &[2, 2], AutoPad::NotSet), true), &[x])
        .unwrap();
    out(&mut net, y, "max_dil_ceil");
    let y = net.add("max1d", pool(max, win(Some(&[3]), &[2], &[], &[], AutoPad::SameLower), false), &[x1]).unwrap();
    out(&mut net, y, "max1d");
    let y = net.add("max3d", pool(max, win(Some(&[2, 2, 2]), &[], &[], &[], AutoPad::NotSet), false), &[x3]).unwrap();
    out(&mut net, y, "max3d");
    let avg = |c| PoolKind::Average { count_include_pad: c };
    let y = net
        .add("avg_pad", pool(avg(false), win(k3, &[2, 2], &[1, 2, 2, 1], &[], AutoPad::NotSet), true), &[x])
        .unwrap();
    out(&mut net, y, "avg_pad");
    let y = net
        .add("avg_incl", pool(avg(true), win(k3, &[1, 1], &[1, 1, 1, 1], &[], AutoPad::NotSet), false), &[x])
        .unwrap();
    out(&mut net, y, "avg_incl");
    let y = net
        .add("avg3d", pool(avg(false), win(Some(&[3, 2, 2]), &[], &[], &[1, 2, 1], AutoPad::NotSet), false), &[x3])
        .unwrap();
    out(&mut net, y, "avg3d");
    let y = net
        .add("lp", pool(PoolKind::Lp { p: 3.0 }, win(k3, &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet), false), &[x])
        .unwrap();
    out(&mut net, y, "lp");
    let y = net.add("gap", Op::Nn(NnOp::GlobalPool(avg(false))), &[x]).unwrap();
    out(&mut net, y, "gap");
    let y = net.add("gmp", Op::Nn(NnOp::GlobalPool(max)), &[x3]).unwrap();
    out(&mut net, y, "gmp");
    Case {
        name,
        graph: net.build(),
        inputs: vec![(dtype, vec![2, 3, 9, 10]), (dtype, vec![1, 2, 13]), (dtype, vec![1, 2, 5, 6, 7])],
        tol,
    }
}

/// MaxPool of 8-bit integers (exact), then MaxUnpool of its values.
fn int_pools(dtype: DType, name: &'static str) -> Case {
    let mut net = NetworkDefinition::new(name);
    let x = net.add_input("x", dtype, Shape::known(&[1, 3, 8, 8]));
    let max = PoolKind::Max { column_major_indices: false };
    let w = win(Some(&[2, 2]), &[2, 2], &[], &[], AutoPad::NotSet);
    let o = net.add_layer("max", pool(max, w.clone(), false), &[x], 2).unwrap();
    out(&mut net, o[0], "max");
    let u = net.add("unpool", Op::Nn(NnOp::MaxUnpool(w)), &[o[0], o[1]]).unwrap();
    out(&mut net, u, "unpool");
    Case { name, graph: net.build(), inputs: vec![(dtype, vec![1, 3, 8, 8])], tol: 0.0 }
}

fn red(r: ReduceOp) -> Op {
    Op::Reduce(r)
}

/// BatchNormalization (inference, training with running statistics), Instance and
/// Group normalisation, LRN, MVN, Col2Im, DepthToSpace, SpaceToDepth.
fn norms(dtype: DType, name: &'static str, tol: f64) -> Case {
    let mut net = NetworkDefinition::new(name);
    let x = net.add_input("x", dtype, Shape::known(&[2, 4, 5, 6]));
    let c = |net: &mut NetworkDefinition, n: &str, s: &[usize], seed| net.add_constant(n, tensor(dtype, s, seed));
    let scale = c(&mut net, "scale", &[4], 1);
    let bias = c(&mut net, "bias", &[4], 2);
    let mean = c(&mut net, "mean", &[4], 3);
    // Variances must be positive.
    let var = net.add_constant("var", kiln_ir::Tensor::from_vec(vec![4], vec![0.5f32, 1.0, 1.5, 2.0]).unwrap());
    let var = net
        .add("var_cast", Op::Elementwise(kiln_ir::ops::ElementwiseOp::Cast { to: dtype, saturate: true }), &[var])
        .unwrap();
    let bn = |training| red(ReduceOp::BatchNorm(BatchNorm { epsilon: 1e-3, momentum: 0.8, training }));
    let y = net.add("bn", bn(false), &[x, scale, bias, mean, var]).unwrap();
    out(&mut net, y, "bn");
    let o = net.add_layer("bn_train", bn(true), &[x, scale, bias, mean, var], 3).unwrap();
    out(&mut net, o[0], "bn_train");
    out(&mut net, o[1], "running_mean");
    out(&mut net, o[2], "running_var");
    let y =
        net.add("instance", red(ReduceOp::InstanceNorm(InstanceNorm { epsilon: 1e-5 })), &[x, scale, bias]).unwrap();
    out(&mut net, y, "instance");
    let gs = c(&mut net, "gs", &[2], 4);
    let gb = c(&mut net, "gb", &[2], 5);
    let gn =
        |affine| red(ReduceOp::GroupNorm(GroupNorm { num_groups: 2, epsilon: 1e-5, stash_type: DType::F32, affine }));
    let y = net.add("group", gn(GroupAffine::PerGroup), &[x, gs, gb]).unwrap();
    out(&mut net, y, "group");
    let y = net.add("group_c", gn(GroupAffine::PerChannel), &[x, scale, bias]).unwrap();
    out(&mut net, y, "group_c");
    let y = net.add("lrn", red(ReduceOp::Lrn(Lrn { size: 3, alpha: 1e-2, beta: 0.75, bias: 1.0 })), &[x]).unwrap();
    out(&mut net, y, "lrn");
    let y = net.add("mvn", red(ReduceOp::MeanVarianceNorm(MeanVarianceNorm { axes: vec![0, 2, 3] })), &[x]).unwrap();
    out(&mut net, y, "mvn");
    let y = net
        .add("d2s", Op::Movement(MovementOp::DepthToSpace { blocksize: 2, mode: DepthToSpaceMode::Crd }), &[x])
        .unwrap();
    out(&mut net, y, "d2s");
    let y = net
        .add("d2s_dcr", Op::Movement(MovementOp::DepthToSpace { blocksize: 2, mode: DepthToSpaceMode::Dcr }), &[x])
        .unwrap();
    out(&mut net, y, "d2s_dcr");
    let y = net.add("s2d", Op::Movement(MovementOp::SpaceToDepth { blocksize: 2 }), &[y]).unwrap();
    out(&mut net, y, "s2d");
    // Col2Im of [2, 4·(2·3), L] into 2 planes of 5×6 with pads and strides.
    let cols = net.add_input("cols", dtype, Shape::known(&[2, 24, 9]));
    let image = net.add_constant("image", ints(&[5, 6]));
    let block = net.add_constant("block", ints(&[2, 3]));
    let w = win(None, &[2, 2], &[1, 1, 0, 1], &[], AutoPad::NotSet);
    let y = net.add("col2im", Op::Nn(NnOp::Col2Im(w)), &[cols, image, block]).unwrap();
    out(&mut net, y, "col2im");
    Case { name, graph: net.build(), inputs: vec![(dtype, vec![2, 4, 5, 6]), (dtype, vec![2, 24, 9])], tol }
}

/// ConvInteger (u8 · i8 with zero points, padded, grouped) and QLinearConv (u8, per-channel
/// weight scales, bias): exact.
fn int_convs() -> Case {
    use kiln_ir::ops::quant::{AutoPad as QPad, ConvGeometry, QuantOp};
    let mut net = NetworkDefinition::new("int_convs");
    let x = net.add_input("x", DType::U8, Shape::known(&[1, 4, 7, 6]));
    let geom = |group, pads: Option<Vec<usize>>, strides: Option<Vec<usize>>| ConvGeometry {
        auto_pad: QPad::NotSet,
        dilations: None,
        group,
        kernel_shape: None,
        pads,
        strides,
    };
    let w = net.add_constant("w", tensor(DType::I8, &[6, 2, 3, 3], 21));
    let xz = net.add_constant("xz", kiln_ir::Tensor::from_vec(vec![], vec![7u8]).unwrap());
    let wz = net.add_constant("wz", kiln_ir::Tensor::from_vec(vec![6], vec![1i8, -2, 0, 3, 0, -1]).unwrap());
    let ci = Op::Quant(QuantOp::ConvInteger(geom(2, Some(vec![1, 0, 2, 1]), Some(vec![1, 2]))));
    let y = net.add("conv_integer", ci, &[x, w, xz, wz]).unwrap();
    out(&mut net, y, "conv_integer");
    let wq = net.add_constant("wq", tensor(DType::U8, &[3, 4, 2, 2], 22));
    let f = |v: Vec<f32>| kiln_ir::Tensor::from_vec(vec![v.len()], v).unwrap();
    let xs = net.add_constant("xs", kiln_ir::Tensor::from_vec(vec![], vec![0.02f32]).unwrap());
    let ws = net.add_constant("ws", f(vec![0.01, 0.015, 0.005]));
    let ys = net.add_constant("ys", kiln_ir::Tensor::from_vec(vec![], vec![0.3f32]).unwrap());
    let yz = net.add_constant("yz", kiln_ir::Tensor::from_vec(vec![], vec![100u8]).unwrap());
    let wqz = net.add_constant("wqz", kiln_ir::Tensor::from_vec(vec![], vec![50u8]).unwrap());
    let b = net.add_constant("b", kiln_ir::Tensor::from_vec(vec![3], vec![100i32, -2000, 50]).unwrap());
    let q = Op::Quant(QuantOp::QLinearConv(geom(1, Some(vec![1, 1, 1, 1]), None)));
    let y = net.add("qlinear_conv", q, &[x, xs, xz, wq, ws, wqz, ys, yz, b]).unwrap();
    out(&mut net, y, "qlinear_conv");
    Case { name: "int_convs", graph: net.build(), inputs: vec![(DType::U8, vec![1, 4, 7, 6])], tol: 0.0 }
}

fn cases() -> Vec<Case> {
    vec![
        convs(DType::F32, "convs_f32", 1e-4),
        convs(DType::F16, "convs_f16", 1e-2),
        fused_conv(DType::F32, "fused_conv_f32", 1e-4),
        fused_conv(DType::F16, "fused_conv_f16", 1e-2),
        pools(DType::F32, "pools_f32", 1e-4),
        pools(DType::F16, "pools_f16", 1e-2),
        int_pools(DType::U8, "pools_u8"),
        int_pools(DType::I8, "pools_i8"),
        norms(DType::F32, "norms_f32", 1e-4),
        norms(DType::F16, "norms_f16", 1e-2),
        int_convs(),
    ]
}

#[test]
fn conv_pool_norm_graphs_plan_and_lower_on_the_host() {
    check_lowers(cases());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn conv_pool_norm_graphs_match_the_cpu_with_and_without_a_cuda_graph() {
    check_on_gpu(cases());
}
