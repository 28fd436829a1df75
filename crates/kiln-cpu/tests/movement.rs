//! Movement ops on small graphs, against hand-computed results; shape inference
//! and constant folding of shape arithmetic; errors (never panics) on bad inputs.

use kiln_ir::ops::MovementOp;
use kiln_ir::ops::movement::{DepthToSpaceMode, PadMode, Reduction, SliceAttrs};
use kiln_ir::{DType, Dim, NetworkDefinition, Op, Shape, Tensor};

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

/// 1, 2, 3, … as f32 in `shape`.
fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (1..=n).map(|v| v as f32).collect()).unwrap()
}

/// Runs `op` with graph input `x` and constant extra inputs; returns all outputs.
fn run_op(op: MovementOp, x: Tensor, consts: Vec<Option<Tensor>>, n_out: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let xi = net.add_input("x", x.dtype(), Shape::known(x.shape()));
    let mut inputs = vec![Some(xi)];
    for (k, c) in consts.into_iter().enumerate() {
        inputs.push(c.map(|c| net.add_constant(&format!("c{k}"), c)));
    }
    let outs = net.add_layer_opt("op", Op::Movement(op), inputs, n_out).map_err(kiln_cpu::CpuError::from)?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("y{i}")).unwrap();
    }
    kiln_cpu::run(&net.build(), &[x])
}

fn run1(op: MovementOp, x: Tensor, consts: Vec<Option<Tensor>>) -> kiln_cpu::Result<Tensor> {
    Ok(run_op(op, x, consts, 1)?.remove(0))
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

#[test]
fn reshape_copies_zero_and_infers_minus_one() {
    let y = run1(MovementOp::Reshape { allowzero: false }, iota(&[2, 3, 4]), vec![Some(i64s(&[0, -1]))]).unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    assert_eq!(vals(&y)[13], 14.0);
    let bad = run1(MovementOp::Reshape { allowzero: false }, iota(&[2, 3, 4]), vec![Some(i64s(&[5, -1]))]);
    assert!(bad.is_err());
}

#[test]
fn transpose_permutes_axes() {
    let y = run1(MovementOp::Transpose { perm: Some(vec![2, 0, 1]) }, iota(&[2, 3, 4]), vec![]).unwrap();
    assert_eq!(y.shape(), &[4, 2, 3]);
    // y[k, i, j] = x[i, j, k] = 1 + 12 i + 4 j + k
    assert_eq!(vals(&y)[..7], [1.0, 5.0, 9.0, 13.0, 17.0, 21.0, 2.0]);
    let big = iota(&[3, 70, 65]);
    let y = run1(MovementOp::Transpose { perm: None }, big, vec![]).unwrap();
    assert_eq!(y.shape(), &[65, 70, 3]);
    let v = vals(&y);
    // y[c, b, a] = x[a, b, c] = 1 + a*4550 + b*65 + c
    assert_eq!(v[(7 * 70 + 11) * 3 + 2], (1 + 2 * 4550 + 11 * 65 + 7) as f64);
    // NCHW → NHWC-like: copied in tiles.
    let y = run1(MovementOp::Transpose { perm: Some(vec![0, 2, 1]) }, iota(&[2, 40, 50]), vec![]).unwrap();
    let v = vals(&y);
    for (a, b, c) in [(0, 0, 0), (1, 49, 39), (1, 7, 33), (0, 31, 32)] {
        assert_eq!(v[(a * 50 + b) * 40 + c], (1 + a * 2000 + c * 50 + b) as f64);
    }
    assert!(run1(MovementOp::Transpose { perm: Some(vec![0, 0, 1]) }, iota(&[2, 2, 2]), vec![]).is_err());
}

#[test]
fn slice_with_negative_steps_and_clamping() {
    let op = MovementOp::Slice { attrs: None };
    let consts = vec![Some(i64s(&[-1, 100])), Some(i64s(&[-100, 1])), Some(i64s(&[1, 0])), Some(i64s(&[-2, -1]))];
    let y = run1(op, iota(&[3, 4]), consts).unwrap();
    // rows 2..1 reversed (clamped start 2): rows [2]; cols 3, 1
    assert_eq!(y.shape(), &[1, 2]);
    assert_eq!(vals(&y), [12.0, 10.0]);
    let attrs = SliceAttrs { starts: vec![1], ends: vec![3], axes: Some(vec![-1]) };
    let y = run1(MovementOp::Slice { attrs: Some(attrs) }, iota(&[2, 4]), vec![]).unwrap();
    assert_eq!(vals(&y), [2.0, 3.0, 6.0, 7.0]);
    let zero_step = vec![Some(i64s(&[0])), Some(i64s(&[2])), None, Some(i64s(&[0]))];
    assert!(run1(MovementOp::Slice { attrs: None }, iota(&[3]), zero_step).is_err());
}

#[test]
fn concat_and_split_round_trip() {
    let mut net = NetworkDefinition::new("t");
    let a = net.add_input("a", DType::F32, Shape::known(&[2, 1]));
    let b = net.add_constant("b", f32s(&[2, 2], &[5.0, 6.0, 7.0, 8.0]));
    let c = net.add("c", Op::Movement(MovementOp::Concat { axis: -1 }), &[a, b]).unwrap();
    assert_eq!(net.graph().fact(c).unwrap().shape, Some(Shape::known(&[2, 3])));
    let split = MovementOp::Split { axis: 1, split: None, num_outputs: Some(2) };
    let parts = net.add_layer("s", Op::Movement(split), &[c], 2).unwrap();
    net.mark_output(c, "c").unwrap();
    net.mark_output(parts[0], "p0").unwrap();
    net.mark_output(parts[1], "p1").unwrap();
    let out = kiln_cpu::run(&net.build(), &[f32s(&[2, 1], &[1.0, 2.0])]).unwrap();
    assert_eq!(vals(&out[0]), [1.0, 5.0, 6.0, 2.0, 7.0, 8.0]);
    // Uneven split: chunks of ceil(3/2) = 2 and 1.
    assert_eq!(out[1].shape(), &[2, 2]);
    assert_eq!(vals(&out[2]), [6.0, 8.0]);
}

#[test]
fn gather_wraps_negative_and_rejects_out_of_range() {
    let idx = Tensor::from_vec(vec![2], vec![-1i32, 0]).unwrap();
    let y = run1(MovementOp::Gather { axis: 1 }, iota(&[2, 3]), vec![Some(idx)]).unwrap();
    assert_eq!(vals(&y), [3.0, 1.0, 6.0, 4.0]);
    let bad = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    assert!(run1(MovementOp::Gather { axis: 1 }, iota(&[2, 3]), vec![Some(bad)]).is_err());
}

#[test]
fn gather_nd_and_scatter_nd_with_reduction() {
    let idx = Tensor::from_vec(vec![2, 2], vec![1i64, 0, 0, 2]).unwrap();
    let y = run1(MovementOp::GatherND { batch_dims: 0 }, iota(&[2, 3]), vec![Some(idx.clone())]).unwrap();
    assert_eq!(vals(&y), [4.0, 3.0]);
    let upd = f32s(&[2], &[10.0, 20.0]);
    let y = run1(MovementOp::ScatterND { reduction: Reduction::Add }, iota(&[2, 3]), vec![Some(idx), Some(upd)]);
    assert_eq!(vals(&y.unwrap()), [1.0, 2.0, 23.0, 14.0, 5.0, 6.0]);
}

#[test]
fn scatter_elements_max_and_gather_elements() {
    let idx = Tensor::from_vec(vec![1, 2], vec![2i64, -3]).unwrap();
    let upd = f32s(&[1, 2], &[0.5, 9.0]);
    let op = MovementOp::ScatterElements { axis: 1, reduction: Reduction::Max, legacy: false };
    let y = run1(op, iota(&[1, 3]), vec![Some(idx.clone()), Some(upd)]).unwrap();
    assert_eq!(vals(&y), [9.0, 2.0, 3.0]);
    let y = run1(MovementOp::GatherElements { axis: 1 }, iota(&[1, 3]), vec![Some(idx)]).unwrap();
    assert_eq!(vals(&y), [3.0, 1.0]);
}

#[test]
fn pad_modes_and_negative_pads() {
    let x = iota(&[1, 3]);
    let pads = |v: &[i64]| Some(i64s(v));
    let run_pad = |mode, p: &[i64]| run1(MovementOp::Pad { mode, pads: None, value: 0.0 }, x.clone(), vec![pads(p)]);
    assert_eq!(vals(&run_pad(PadMode::Reflect, &[0, 2, 0, 2]).unwrap()), [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    assert_eq!(vals(&run_pad(PadMode::Edge, &[0, 1, 0, 1]).unwrap()), [1.0, 1.0, 2.0, 3.0, 3.0]);
    assert_eq!(vals(&run_pad(PadMode::Wrap, &[0, 2, 0, 0]).unwrap()), [2.0, 3.0, 1.0, 2.0, 3.0]);
    assert_eq!(vals(&run_pad(PadMode::Constant, &[1, -1, 0, 0]).unwrap()), [0.0, 0.0, 2.0, 3.0]);
    // Attribute form (opset < 11) with a fill value.
    let y =
        run1(MovementOp::Pad { mode: PadMode::Constant, pads: Some(vec![0, 1, 0, 0]), value: 7.5 }, x.clone(), vec![]);
    assert_eq!(vals(&y.unwrap()), [7.5, 1.0, 2.0, 3.0]);
    assert!(run_pad(PadMode::Constant, &[0, -5, 0, 0]).is_err());
}

#[test]
fn expand_tile_and_depth_to_space() {
    let y = run1(MovementOp::Expand, f32s(&[2, 1], &[1.0, 2.0]), vec![Some(i64s(&[2, 3]))]).unwrap();
    assert_eq!(vals(&y), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    let y = run1(MovementOp::Tile, f32s(&[1, 2], &[1.0, 2.0]), vec![Some(i64s(&[2, 2]))]).unwrap();
    assert_eq!(vals(&y), [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    let op = MovementOp::DepthToSpace { blocksize: 2, mode: DepthToSpaceMode::Dcr };
    let y = run1(op, iota(&[1, 4, 1, 1]), vec![]).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(vals(&y), [1.0, 2.0, 3.0, 4.0]);
    let back = run1(MovementOp::SpaceToDepth { blocksize: 2 }, y, vec![]).unwrap();
    assert_eq!(vals(&back), [1.0, 2.0, 3.0, 4.0]);
    assert!(run1(MovementOp::Expand, f32s(&[2], &[1.0, 2.0]), vec![Some(i64s(&[3]))]).is_err());
}

#[test]
fn cumsum_trilu_onehot_range_eyelike() {
    let axis = Some(Tensor::scalar(1i64));
    let y = run1(MovementOp::CumSum { exclusive: true, reverse: true }, iota(&[1, 3]), vec![axis]).unwrap();
    assert_eq!(vals(&y), [5.0, 3.0, 0.0]);
    let axis = Some(Tensor::scalar(1i64));
    let y = run1(MovementOp::CumProd { exclusive: false, reverse: false }, iota(&[2, 3]), vec![axis.clone()]).unwrap();
    assert_eq!(vals(&y), [1.0, 2.0, 6.0, 4.0, 20.0, 120.0]);
    let y = run1(MovementOp::CumProd { exclusive: true, reverse: true }, iota(&[1, 3]), vec![axis]).unwrap();
    assert_eq!(vals(&y), [6.0, 3.0, 1.0]);
    let y = run1(MovementOp::Trilu { upper: true }, iota(&[2, 3]), vec![Some(Tensor::scalar(1i64))]).unwrap();
    assert_eq!(vals(&y), [0.0, 2.0, 3.0, 0.0, 0.0, 6.0]);
    let idx = Tensor::from_vec(vec![2], vec![-1i64, 1]).unwrap();
    let consts = vec![Some(Tensor::scalar(3i64)), Some(f32s(&[2], &[0.0, 5.0]))];
    let y = run1(MovementOp::OneHot { axis: 0 }, idx, consts).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(vals(&y), [0.0, 0.0, 0.0, 5.0, 5.0, 0.0]);
    let consts = vec![Some(Tensor::scalar(-3i32)), Some(Tensor::scalar(-2i32))];
    let y = run1(MovementOp::Range, Tensor::scalar(4i32), consts).unwrap();
    assert_eq!(vals(&y), [4.0, 2.0, 0.0, -2.0]);
    let y = run1(MovementOp::EyeLike { dtype: Some(DType::I64), k: 1 }, iota(&[2, 3]), vec![]).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), [0, 1, 0, 0, 0, 1]);
    let zero_delta = vec![Some(Tensor::scalar(3i32)), Some(Tensor::scalar(0i32))];
    assert!(run1(MovementOp::Range, Tensor::scalar(1i32), zero_delta).is_err());
}

#[test]
fn compress_nonzero_reverse_sequence() {
    let cond = Tensor::from_bools(vec![3], vec![true, false, true]).unwrap();
    let y = run1(MovementOp::Compress { axis: Some(1) }, iota(&[2, 3]), vec![Some(cond)]).unwrap();
    assert_eq!(vals(&y), [1.0, 3.0, 4.0, 6.0]);
    let y = run1(MovementOp::NonZero, f32s(&[2, 2], &[0.0, -0.0, 3.0, 1.0]), vec![]).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), [1, 1, 0, 1]);
    let op = MovementOp::ReverseSequence { batch_axis: 0, time_axis: 1 };
    let y = run1(op, iota(&[2, 3]), vec![Some(i64s(&[2, 3]))]).unwrap();
    assert_eq!(vals(&y), [2.0, 1.0, 3.0, 6.0, 5.0, 4.0]);
}

#[test]
fn tensor_scatter_writes_rows_circularly() {
    let op = MovementOp::TensorScatter { axis: -2, circular: true };
    let cache = Tensor::zeros(DType::F32, vec![2, 3, 1]);
    let consts = vec![Some(f32s(&[2, 2, 1], &[1.0, 2.0, 3.0, 4.0])), Some(i64s(&[2, 0]))];
    let y = run1(op, cache.clone(), consts.clone()).unwrap();
    assert_eq!(vals(&y), [2.0, 0.0, 1.0, 3.0, 4.0, 0.0]);
    let linear = MovementOp::TensorScatter { axis: -2, circular: false };
    assert!(run1(linear, cache, consts).is_err());
}

#[test]
fn bool_and_fp16_move_by_storage() {
    let b = Tensor::from_bools(vec![2, 2], vec![true, false, false, true]).unwrap();
    let y = run1(MovementOp::Transpose { perm: None }, b, vec![]).unwrap();
    assert_eq!(y.dtype(), DType::Bool);
    assert_eq!(y.to_bools().unwrap(), [true, false, false, true]);
    let h: Vec<half::f16> = [1.0f32, 2.0, 3.0].iter().map(|&v| half::f16::from_f32(v)).collect();
    let y = run1(MovementOp::Unsqueeze { axes: Some(vec![0, -1]) }, Tensor::from_vec(vec![3], h).unwrap(), vec![]);
    let y = y.unwrap();
    assert_eq!(y.shape(), &[1, 3, 1]);
    assert_eq!(vals(&y), [1.0, 2.0, 3.0]);
}

/// PyTorch exports `x.view(x.size(0), -1)` as Shape → Gather → Unsqueeze → Concat →
/// Reshape; with a known input shape the chain folds and the output shape is known.
#[test]
fn shape_arithmetic_folds_to_known_shapes() {
    let mut net = NetworkDefinition::new("t");
    let x = net.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let mv = |op| Op::Movement(op);
    let s = net.add("shape", mv(MovementOp::Shape { start: 0, end: None }), &[x]).unwrap();
    let zero = net.add_constant("zero", Tensor::scalar(0i64));
    let n = net.add("gather", mv(MovementOp::Gather { axis: 0 }), &[s, zero]).unwrap();
    let n1 = net.add("unsq", mv(MovementOp::Unsqueeze { axes: Some(vec![0]) }), &[n]).unwrap();
    let minus = net.add_constant("minus", i64s(&[-1]));
    let target = net.add("cat", mv(MovementOp::Concat { axis: 0 }), &[n1, minus]).unwrap();
    assert_eq!(net.graph().fact(target).unwrap().value.as_ref().unwrap().to_i64_vec().unwrap(), [2, -1]);
    let y = net.add("reshape", mv(MovementOp::Reshape { allowzero: false }), &[x, target]).unwrap();
    assert_eq!(net.graph().fact(y).unwrap().shape, Some(Shape::known(&[2, 12])));
    net.mark_output(y, "y").unwrap();
    let out = kiln_cpu::run(&net.build(), &[iota(&[2, 3, 4])]).unwrap();
    assert_eq!(out[0].shape(), &[2, 12]);
}

#[test]
fn symbolic_dims_pass_through_inference() {
    let mut net = NetworkDefinition::new("t");
    let x = net.add_input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::Known(3), Dim::Known(4)]));
    let t = net.add("t", Op::Movement(MovementOp::Transpose { perm: Some(vec![0, 2, 1]) }), &[x]).unwrap();
    let f = net.add("f", Op::Movement(MovementOp::Flatten { axis: 1 }), &[t]).unwrap();
    assert_eq!(net.graph().fact(f).unwrap().shape, Some(Shape(vec![Dim::sym("batch"), Dim::Known(12)])));
    let s = net.add("s", Op::Movement(MovementOp::Shape { start: 1, end: None }), &[x]).unwrap();
    assert_eq!(net.graph().fact(s).unwrap().value.as_ref().unwrap().to_i64_vec().unwrap(), [3, 4]);
    let target = net.add_constant("target", i64s(&[0, 2, -1]));
    let r = net.add("r", Op::Movement(MovementOp::Reshape { allowzero: false }), &[x, target]).unwrap();
    assert_eq!(net.graph().fact(r).unwrap().shape, Some(Shape(vec![Dim::sym("batch"), Dim::Known(2), Dim::Known(6)])));
    // Inference rejects bad axes when the graph is built.
    let bad = net.add("bad", Op::Movement(MovementOp::Concat { axis: 3 }), &[x, x]);
    assert!(bad.is_err());
}
