//! The reduce family (reductions, arg/top-k, softmax, normalizations) against
//! hand-computed values, plus error cases.

use half::f16;
use kiln_ir::ops::ReduceOp;
use kiln_ir::ops::reduce::*;
use kiln_ir::{DType, NetworkDefinition, Op, Shape, Tensor};

/// Runs one op on `inputs` (all fed as graph inputs; `None` = omitted optional input).
fn run(op: ReduceOp, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>, String> {
    let mut net = NetworkDefinition::new("t");
    let ins: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| t.as_ref().map(|t| net.add_input(&format!("in{i}"), t.dtype(), Shape::known(t.shape()))))
        .collect();
    let outs = net.add_layer_opt("op", Op::Reduce(op), ins, n_outputs).map_err(|e| e.to_string())?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("out{i}")).map_err(|e| e.to_string())?;
    }
    let given: Vec<Tensor> = inputs.iter().flatten().cloned().collect();
    kiln_cpu::run(&net.build(), &given).map_err(|e| e.to_string())
}

fn run1(op: ReduceOp, inputs: &[Option<Tensor>]) -> Result<Tensor, String> {
    run(op, inputs, 1).map(|mut v| v.remove(0))
}

fn f32s(shape: &[usize], v: &[f32]) -> Option<Tensor> {
    Some(Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap())
}

fn i64s(v: &[i64]) -> Option<Tensor> {
    Some(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
}

fn assert_close(t: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-5 + 1e-4 * w.abs();
        assert!(ok, "element {i}: got {g}, want {w} (all: {got:?})");
    }
}

fn reduce(kind: ReduceKind, keepdims: bool) -> ReduceOp {
    ReduceOp::Reduce(Reduce { kind, axes: None, keepdims, noop_with_empty_axes: false })
}

// x = [[1, -2, 3], [4, 5, -6]]
fn x23() -> Option<Tensor> {
    f32s(&[2, 3], &[1.0, -2.0, 3.0, 4.0, 5.0, -6.0])
}

#[test]
fn reductions_over_axis_1() {
    let cases = [
        (ReduceKind::Sum, [2.0, 3.0]),
        (ReduceKind::Mean, [2.0 / 3.0, 1.0]),
        (ReduceKind::Max, [3.0, 5.0]),
        (ReduceKind::Min, [-2.0, -6.0]),
        (ReduceKind::Prod, [-6.0, -120.0]),
        (ReduceKind::L1, [6.0, 15.0]),
        (ReduceKind::L2, [14f64.sqrt(), 77f64.sqrt()]),
        (ReduceKind::SumSquare, [14.0, 77.0]),
        (ReduceKind::LogSum, [2f64.ln(), 3f64.ln()]),
        (
            ReduceKind::LogSumExp,
            [(1f64.exp() + (-2f64).exp() + 3f64.exp()).ln(), (4f64.exp() + 5f64.exp() + (-6f64).exp()).ln()],
        ),
    ];
    for (kind, want) in cases {
        let y = run1(reduce(kind, true), &[x23(), i64s(&[-1])]).unwrap();
        assert_close(&y, &[2, 1], &want);
    }
}

#[test]
fn reduce_axes_forms_and_noop() {
    // Attribute form (old opsets), all axes when none given, noop with empty axes.
    let attr = ReduceOp::Reduce(Reduce {
        kind: ReduceKind::Sum,
        axes: Some(vec![0]),
        keepdims: false,
        noop_with_empty_axes: false,
    });
    assert_close(&run1(attr, &[x23()]).unwrap(), &[3], &[5.0, 3.0, -3.0]);
    assert_close(&run1(reduce(ReduceKind::Sum, false), &[x23()]).unwrap(), &[], &[5.0]);
    assert_close(&run1(reduce(ReduceKind::Max, true), &[x23(), i64s(&[])]).unwrap(), &[1, 1], &[5.0]);
    let noop =
        ReduceOp::Reduce(Reduce { kind: ReduceKind::Sum, axes: None, keepdims: true, noop_with_empty_axes: true });
    assert_close(&run1(noop, &[x23(), i64s(&[])]).unwrap(), &[2, 3], &[1.0, -2.0, 3.0, 4.0, 5.0, -6.0]);
}

#[test]
fn reduce_empty_sets() {
    let x = f32s(&[2, 0, 2], &[]);
    let want = [
        (ReduceKind::Sum, 0.0),
        (ReduceKind::Prod, 1.0),
        (ReduceKind::Max, f64::NEG_INFINITY),
        (ReduceKind::Min, f64::INFINITY),
        (ReduceKind::LogSumExp, f64::NEG_INFINITY),
        (ReduceKind::Mean, f64::NAN),
    ];
    for (kind, v) in want {
        let y = run1(reduce(kind, true), &[x.clone(), i64s(&[1])]).unwrap();
        assert_close(&y, &[2, 1, 2], &[v; 4]);
    }
}

#[test]
fn reduce_integers_bools_and_halves() {
    let x = Some(Tensor::from_vec(vec![2, 2], vec![100i8, 100, -7, 3]).unwrap());
    // Sums wrap like fixed-width arithmetic: 200 → -56.
    let y = run1(reduce(ReduceKind::Sum, false), &[x.clone(), i64s(&[1])]).unwrap();
    assert_eq!(y.to_vec::<i8>().unwrap(), vec![-56, -4]);
    let y = run1(reduce(ReduceKind::Mean, false), &[x, i64s(&[1])]).unwrap();
    assert_eq!(y.to_vec::<i8>().unwrap(), vec![100, -2]);
    let b = Some(Tensor::from_bools(vec![2, 2], vec![true, false, true, true]).unwrap());
    let y = run1(reduce(ReduceKind::Min, false), &[b.clone(), i64s(&[1])]).unwrap();
    assert_eq!(y.to_bools().unwrap(), vec![false, true]);
    let y = run1(reduce(ReduceKind::Max, false), &[b, i64s(&[0])]).unwrap();
    assert_eq!(y.to_bools().unwrap(), vec![true, true]);
    let h: Vec<f16> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|&v| f16::from_f32(v)).collect();
    let y = run1(reduce(ReduceKind::Mean, false), &[Some(Tensor::from_vec(vec![4], h).unwrap())]).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_close(&y, &[], &[f16::from_f32(0.25).to_f64()]);
}

#[test]
fn reduce_bad_axes_are_errors() {
    assert!(run1(reduce(ReduceKind::Sum, true), &[x23(), i64s(&[2])]).is_err());
    assert!(run1(reduce(ReduceKind::Sum, true), &[x23(), i64s(&[1, -1])]).is_err());
    let attr = ReduceOp::Reduce(Reduce {
        kind: ReduceKind::Sum,
        axes: Some(vec![-3]),
        keepdims: true,
        noop_with_empty_axes: false,
    });
    assert!(run1(attr, &[x23()]).is_err());
}

#[test]
fn argmax_argmin() {
    let x = f32s(&[2, 3], &[2.0, 7.0, 7.0, -1.0, -1.0, 0.5]);
    let arg = |kind, axis, keepdims, last| ReduceOp::Arg(ArgReduce { kind, axis, keepdims, select_last_index: last });
    let y = run1(arg(ArgKind::Max, 1, true, false), std::slice::from_ref(&x)).unwrap();
    assert_eq!((y.shape(), y.to_vec::<i64>().unwrap()), (&[2usize, 1][..], vec![1, 2]));
    let y = run1(arg(ArgKind::Max, -1, false, true), std::slice::from_ref(&x)).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![2, 2]);
    let y = run1(arg(ArgKind::Min, 1, false, true), std::slice::from_ref(&x)).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![0, 1]);
    let y = run1(arg(ArgKind::Min, 0, false, false), std::slice::from_ref(&x)).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![1, 1, 1]);
    assert!(run1(arg(ArgKind::Max, 2, true, false), &[x]).is_err());
    assert!(run1(arg(ArgKind::Max, 0, true, false), &[f32s(&[0, 2], &[])]).is_err());
}

#[test]
fn topk_orders_ties_and_nans() {
    let x = f32s(&[2, 4], &[3.0, 1.0, 3.0, f32::NAN, 0.0, -1.0, 5.0, 5.0]);
    let topk = |largest| ReduceOp::TopK(TopK { axis: -1, largest, sorted: true, k: None });
    let out = run(topk(true), &[x.clone(), i64s(&[3])], 2).unwrap();
    assert_close(&out[0], &[2, 3], &[f64::NAN, 3.0, 3.0, 5.0, 5.0, 0.0]);
    assert_eq!(out[1].to_vec::<i64>().unwrap(), vec![3, 0, 2, 2, 3, 0]);
    let out = run(topk(false), &[x.clone(), i64s(&[2])], 2).unwrap();
    assert_close(&out[0], &[2, 2], &[1.0, 3.0, -1.0, 0.0]);
    assert_eq!(out[1].to_vec::<i64>().unwrap(), vec![1, 0, 1, 0]);
    // Axis 0 with an integer type and the opset-1 attribute k.
    let xi = Some(Tensor::from_vec(vec![3, 2], vec![1u64, 9, 7, 9, 4, 2]).unwrap());
    let out = run(ReduceOp::TopK(TopK { axis: 0, largest: true, sorted: true, k: Some(2) }), &[xi], 2).unwrap();
    assert_eq!(out[0].to_vec::<u64>().unwrap(), vec![7, 9, 4, 9]);
    assert_eq!(out[1].to_vec::<i64>().unwrap(), vec![1, 0, 2, 1]);
    assert!(run(topk(true), &[x, i64s(&[5])], 2).is_err());
}

#[test]
fn softmax_family() {
    let sm = |kind, axis, coerce_2d| ReduceOp::Softmax(Softmax { kind, axis, coerce_2d });
    let e = |v: f64| v.exp();
    let (s1, s2) = (e(1.0) + e(-2.0) + e(3.0), e(4.0) + e(5.0) + e(-6.0));
    let y = run1(sm(SoftmaxKind::Softmax, -1, false), &[x23()]).unwrap();
    assert_close(&y, &[2, 3], &[e(1.0) / s1, e(-2.0) / s1, e(3.0) / s1, e(4.0) / s2, e(5.0) / s2, e(-6.0) / s2]);
    let y = run1(sm(SoftmaxKind::LogSoftmax, 1, false), &[x23()]).unwrap();
    assert_close(
        &y,
        &[2, 3],
        &[1.0 - s1.ln(), -2.0 - s1.ln(), 3.0 - s1.ln(), 4.0 - s2.ln(), 5.0 - s2.ln(), -6.0 - s2.ln()],
    );
    // Along axis 0: pairs (1,4), (-2,5), (3,-6).
    let y = run1(sm(SoftmaxKind::Softmax, 0, false), &[x23()]).unwrap();
    let p = |a: f64, b: f64| e(a) / (e(a) + e(b));
    assert_close(&y, &[2, 3], &[p(1.0, 4.0), p(-2.0, 5.0), p(3.0, -6.0), p(4.0, 1.0), p(5.0, -2.0), p(-6.0, 3.0)]);
    // Opset < 13 with axis 0: the whole tensor is one row.
    let y = run1(sm(SoftmaxKind::Softmax, 0, true), &[x23()]).unwrap();
    let all = s1 + s2;
    assert_close(&y, &[2, 3], &[1.0, -2.0, 3.0, 4.0, 5.0, -6.0].map(|v| e(v) / all));
    let y = run1(sm(SoftmaxKind::Hardmax, 1, false), &[f32s(&[2, 3], &[1.0, 4.0, 4.0, -1.0, -3.0, -2.0])]).unwrap();
    assert_close(&y, &[2, 3], &[0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    // Large inputs do not overflow.
    let y = run1(sm(SoftmaxKind::Softmax, -1, false), &[f32s(&[2], &[10000.0, 10001.0])]).unwrap();
    assert_close(&y, &[2], &[1.0 / (1.0 + e(1.0)), e(1.0) / (1.0 + e(1.0))]);
    assert!(run1(sm(SoftmaxKind::Softmax, 2, false), &[x23()]).is_err());
}

#[test]
fn batch_norm_inference_and_training() {
    // x: N=2, C=2, spatial 2.
    let x = f32s(&[2, 2, 2], &[1.0, 3.0, 10.0, 20.0, 5.0, 7.0, 30.0, 40.0]);
    let (s, b) = (f32s(&[2], &[2.0, 0.5]), f32s(&[2], &[1.0, -1.0]));
    let (m, v) = (f32s(&[2], &[4.0, 25.0]), f32s(&[2], &[4.0, 100.0]));
    let inputs = [x, s, b, m, v];
    let bn = |training| ReduceOp::BatchNorm(BatchNorm { epsilon: 0.0, momentum: 0.9, training });
    let y = run1(bn(false), &inputs).unwrap();
    let f0 = |x: f64| (x - 4.0) / 2.0 * 2.0 + 1.0;
    let f1 = |x: f64| (x - 25.0) / 10.0 * 0.5 - 1.0;
    assert_close(&y, &[2, 2, 2], &[f0(1.0), f0(3.0), f1(10.0), f1(20.0), f0(5.0), f0(7.0), f1(30.0), f1(40.0)]);
    let out = run(bn(true), &inputs, 3).unwrap();
    // Channel 0: values 1,3,5,7 → mean 4, var 5; channel 1: 10,20,30,40 → mean 25, var 125.
    assert_close(&out[1], &[2], &[4.0 * 0.9 + 4.0 * 0.1, 25.0 * 0.9 + 25.0 * 0.1]);
    assert_close(&out[2], &[2], &[4.0 * 0.9 + 5.0 * 0.1, 100.0 * 0.9 + 125.0 * 0.1]);
    let g0 = |x: f64| (x - 4.0) / 5f64.sqrt() * 2.0 + 1.0;
    let y = out[0].to_f64_vec().unwrap();
    assert!((y[0] - g0(1.0)).abs() < 1e-5 && (y[1] - g0(3.0)).abs() < 1e-5, "{y:?}");
    let bad =
        [inputs[0].clone(), f32s(&[3], &[1.0, 1.0, 1.0]), inputs[2].clone(), inputs[3].clone(), inputs[4].clone()];
    assert!(run1(bn(false), &bad).is_err());
}

#[test]
fn layer_and_rms_norm() {
    // Rows [1, 2, 3] and [2, 4, 6]; scale broadcast over the last axis.
    let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);
    let w = f32s(&[3], &[1.0, 2.0, -1.0]);
    let bias = f32s(&[3], &[0.5, 0.0, 0.0]);
    let ln = ReduceOp::LayerNorm(LayerNorm { axis: -1, epsilon: 0.0, stash_type: DType::F32 });
    let out = run(ln, &[x.clone(), w.clone(), bias], 3).unwrap();
    let (i1, i2) = (1.0 / (2f64 / 3.0).sqrt(), 1.0 / (8f64 / 3.0).sqrt());
    assert_close(&out[0], &[2, 3], &[-i1 + 0.5, 0.0, -i1, -2.0 * i2 + 0.5, 0.0, -2.0 * i2]);
    assert_close(&out[1], &[2, 1], &[2.0, 4.0]);
    assert_close(&out[2], &[2, 1], &[i1, i2]);
    let rms = ReduceOp::RmsNorm(RmsNorm { axis: 1, epsilon: 0.0, stash_type: DType::F32 });
    let y = run1(rms, &[x, w]).unwrap();
    let (r1, r2) = ((14f64 / 3.0).sqrt(), (56f64 / 3.0).sqrt());
    assert_close(&y, &[2, 3], &[1.0 / r1, 4.0 / r1, -3.0 / r1, 2.0 / r2, 8.0 / r2, -6.0 / r2]);
}

#[test]
fn group_and_instance_norm() {
    // N=1, C=4, spatial 1: groups of channels (1,3) and (2,6) with 2 groups.
    let x = f32s(&[1, 4, 1], &[1.0, 3.0, 2.0, 6.0]);
    let per_channel =
        GroupNorm { num_groups: 2, epsilon: 0.0, stash_type: DType::F32, affine: GroupAffine::PerChannel };
    let y = run1(
        ReduceOp::GroupNorm(per_channel.clone()),
        &[x.clone(), f32s(&[4], &[1.0, 2.0, 3.0, 4.0]), f32s(&[4], &[0.0, 0.0, 0.0, 1.0])],
    )
    .unwrap();
    assert_close(&y, &[1, 4, 1], &[-1.0, 2.0, -3.0, 5.0]);
    let per_group = GroupNorm { affine: GroupAffine::PerGroup, ..per_channel.clone() };
    let y =
        run1(ReduceOp::GroupNorm(per_group), &[x.clone(), f32s(&[2], &[2.0, 3.0]), f32s(&[2], &[0.0, 1.0])]).unwrap();
    assert_close(&y, &[1, 4, 1], &[-2.0, 2.0, -2.0, 4.0]);
    let bad = GroupNorm { num_groups: 3, ..per_channel };
    assert!(run1(ReduceOp::GroupNorm(bad), &[x, f32s(&[4], &[1.0; 4]), f32s(&[4], &[0.0; 4])]).is_err());
    // Instance norm over spatial [1, 3] and [5, 5] (zero variance → 0 with epsilon).
    let x = f32s(&[1, 2, 2], &[1.0, 3.0, 5.0, 5.0]);
    let y = run1(
        ReduceOp::InstanceNorm(InstanceNorm { epsilon: 1e-5 }),
        &[x, f32s(&[2], &[2.0, 1.0]), f32s(&[2], &[0.0, 7.0])],
    )
    .unwrap();
    let k = 1.0 / (1.0f64 + 1e-5).sqrt();
    assert_close(&y, &[1, 2, 2], &[-2.0 * k, 2.0 * k, 7.0, 7.0]);
}

#[test]
fn lrn_and_mvn() {
    // C=3, size 3: window of channel 0 is {0,1}, of 1 is {0,1,2}, of 2 is {1,2}.
    let x = f32s(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    let lrn = ReduceOp::Lrn(Lrn { size: 3, alpha: 3.0, beta: 0.5, bias: 1.0 });
    let y = run1(lrn, &[x]).unwrap();
    assert_close(&y, &[1, 3, 1, 1], &[1.0 / 6f64.sqrt(), 2.0 / 15f64.sqrt(), 3.0 / 14f64.sqrt()]);
    let x = f32s(&[1, 1, 2, 2], &[1.0, 3.0, 5.0, 7.0]);
    let mvn = ReduceOp::MeanVarianceNorm(MeanVarianceNorm { axes: vec![0, 2, 3] });
    let y = run1(mvn, &[x]).unwrap();
    let sd = 5f64.sqrt() + 1e-9;
    assert_close(&y, &[1, 1, 2, 2], &[-3.0 / sd, -1.0 / sd, 1.0 / sd, 3.0 / sd]);
}

#[test]
fn infer_shapes() {
    let mut net = NetworkDefinition::new("t");
    let x = net.add_input("x", DType::F32, Shape(vec![kiln_ir::Dim::sym("n"), 4.into(), 5.into()]));
    let r = ReduceOp::Reduce(Reduce {
        kind: ReduceKind::Mean,
        axes: Some(vec![-1]),
        keepdims: false,
        noop_with_empty_axes: false,
    });
    let y = net.add("r", Op::Reduce(r), &[x]).unwrap();
    assert_eq!(net.graph().outlet(y).unwrap().fact.shape, Some(Shape(vec![kiln_ir::Dim::sym("n"), 4.into()])));
    let ln = ReduceOp::LayerNorm(LayerNorm { axis: 1, epsilon: 1e-5, stash_type: DType::F32 });
    let w = net.add_input("w", DType::F32, Shape::known(&[4, 5]));
    let outs = net.add_layer("ln", Op::Reduce(ln), &[x, w], 3).unwrap();
    assert_eq!(
        net.graph().outlet(outs[1]).unwrap().fact.shape,
        Some(Shape(vec![kiln_ir::Dim::sym("n"), 1.into(), 1.into()]))
    );
    let bad = ReduceOp::Arg(ArgReduce { kind: ArgKind::Max, axis: 3, keepdims: true, select_last_index: false });
    assert!(net.add("bad", Op::Reduce(bad), &[x]).is_err());
}

#[test]
fn losses_weighted_ignored_and_softmaxed() {
    let nll =
        |reduction| ReduceOp::Loss(Loss { kind: LossKind::NegativeLogLikelihood, reduction, ignore_index: Some(-1) });
    // log-probabilities for 3 samples of 2 classes; sample 2 is ignored.
    let x = f32s(&[3, 2], &[-0.5, -1.5, -2.0, -0.25, -3.0, -4.0]);
    let t = i64s(&[1, 0, -1]);
    let w = f32s(&[2], &[2.0, 0.5]);
    let none = run1(nll(LossReduction::None), &[x.clone(), t.clone(), w.clone()]).unwrap();
    assert_close(&none, &[3], &[0.75, 4.0, 0.0]);
    let mean = run1(nll(LossReduction::Mean), &[x.clone(), t.clone(), w.clone()]).unwrap();
    assert_close(&mean, &[], &[4.75 / 2.5]);
    let sum = run1(nll(LossReduction::Sum), &[x, t.clone(), None]).unwrap();
    assert_close(&sum, &[], &[1.5 + 2.0]);

    // Softmax cross-entropy: scores [1, 2] with target 0 → -log(e^1 / (e^1 + e^2)).
    let sce = ReduceOp::Loss(Loss {
        kind: LossKind::SoftmaxCrossEntropy,
        reduction: LossReduction::Mean,
        ignore_index: None,
    });
    let out = run(sce.clone(), &[f32s(&[1, 2], &[1.0, 2.0]), i64s(&[0]), None], 2).unwrap();
    let lse = (1f64.exp() + 2f64.exp()).ln();
    assert_close(&out[0], &[], &[lse - 1.0]);
    assert_close(&out[1], &[1, 2], &[1.0 - lse, 2.0 - lse]);
    // A target outside [0, C) is an error, not a panic.
    assert!(run(sce, &[f32s(&[1, 2], &[1.0, 2.0]), i64s(&[5]), None], 1).is_err());
}
