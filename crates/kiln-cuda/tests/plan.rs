//! The execution plan, on the host: steps in order, slots in the arena or the weights,
//! aliases sharing bytes, lifetimes respected, the memory report, unknown shapes and
//! unsupported ops reported at build time with the value or node they concern.

use kiln_cuda::CudaError;
use kiln_cuda::executor::{Kernel, Options, lower};
use kiln_cuda::memory::BufferKind;
use kiln_cuda::plan::{ExecutionPlan, bind_input_shapes};
use kiln_cuda::planner::ALIGN;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::nn::{Gemm, NnOp};
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Dim, Graph, NetworkDefinition, OutletId, Shape, Tensor};

fn weights(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000)
        .map(|u| u as f32 / 1000.0 - 0.5)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn unary(u: UnaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Unary(u))
}

fn binary(b: BinaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Binary(b))
}

/// x[4,8] → MatMul W1[8,16] → Add b1[16] → Relu → MatMul W2[16,3] → y[4,3]
fn mlp() -> Graph {
    let mut net = NetworkDefinition::new("mlp");
    let x = net.add_input("x", DType::F32, Shape::known(&[4, 8]));
    let w1 = net.add_constant("w1", weights(&[8, 16], 1));
    let b1 = net.add_constant("b1", weights(&[16], 2));
    let w2 = net.add_constant("w2", weights(&[16, 3], 3));
    let h = net.add("fc1", Op::Nn(NnOp::MatMul), &[x, w1]).unwrap();
    let h = net.add("bias1", binary(BinaryOp::Add), &[h, b1]).unwrap();
    let h = net.add("relu1", unary(UnaryOp::Relu), &[h]).unwrap();
    let y = net.add("fc2", Op::Nn(NnOp::MatMul), &[h, w2]).unwrap();
    net.mark_output(y, "y").unwrap();
    net.build()
}

/// Checks the plan independently of how it was made: every slot inside its buffer and
/// aligned; aliases share their root's bytes; two arena roots whose lifetimes (recomputed
/// here from the steps, alias reads included) overlap never share a byte.
fn assert_valid(plan: &ExecutionPlan) {
    let r = plan.report;
    for (id, s) in plan.slots.iter().enumerate() {
        assert_eq!(s.bytes, s.shape.iter().product::<usize>() * s.dtype.size(), "{}", s.name);
        assert_eq!(s.view.bytes, s.bytes);
        assert_eq!(s.view.offset % ALIGN, 0, "{} misaligned", s.name);
        let size = match s.view.buffer {
            BufferKind::Arena => r.arena_bytes,
            BufferKind::Weights => r.weight_bytes,
            BufferKind::Workspace => panic!("{} in the workspace", s.name),
        };
        assert!(s.view.offset + s.bytes <= size, "{} outside its buffer", s.name);
        let root = &plan.slots[s.root];
        assert_eq!(root.root, s.root, "alias of an alias for {}", s.name);
        assert_eq!((s.view.buffer, s.view.offset), (root.view.buffer, root.view.offset), "{}", s.name);
        if s.root != id {
            assert_eq!(s.bytes, root.bytes);
        }
    }
    let end = plan.steps.len();
    let mut life: Vec<Option<(usize, usize)>> = vec![None; plan.slots.len()];
    let mut use_at = |id: usize, at: usize| {
        let root = plan.slots[id].root;
        let l = life[root].get_or_insert((at, at));
        *l = (l.0.min(at), l.1.max(at));
    };
    for &i in &plan.inputs {
        use_at(i, 0);
    }
    for (at, st) in plan.steps.iter().enumerate() {
        st.inputs.iter().flatten().chain(&st.outputs).for_each(|&i| use_at(i, at));
    }
    for &o in &plan.outputs {
        use_at(o, end);
    }
    let roots: Vec<usize> = (0..plan.slots.len())
        .filter(|&i| plan.slots[i].root == i && plan.slots[i].view.buffer == BufferKind::Arena)
        .collect();
    for (x, &i) in roots.iter().enumerate() {
        for &j in &roots[x + 1..] {
            let (Some(a), Some(b)) = (life[i], life[j]) else { continue };
            let (si, sj) = (&plan.slots[i], &plan.slots[j]);
            if a.0 <= b.1 && b.0 <= a.1 && si.bytes > 0 && sj.bytes > 0 {
                let disjoint =
                    si.view.offset + si.bytes <= sj.view.offset || sj.view.offset + sj.bytes <= si.view.offset;
                assert!(disjoint, "'{}' {a:?} and '{}' {b:?} are alive together and overlap", si.name, sj.name);
            }
        }
    }
    // Weights never overlap.
    let mut w: Vec<_> = plan.weights.iter().map(|e| (e.offset, e.bytes)).collect();
    w.sort();
    for p in w.windows(2) {
        assert!(p[0].0 + p[0].1 <= p[1].0);
    }
    assert!(r.arena_bytes <= r.unshared_activation_bytes);
}

#[test]
fn mlp_plan_has_steps_in_order_weights_packed_and_lowers() {
    let g = mlp();
    let plan = ExecutionPlan::new(&g).unwrap();
    assert_valid(&plan);
    let names: Vec<&str> = plan.steps.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(names, ["fc1", "bias1", "relu1", "fc2"]);
    assert!(plan.steps.iter().all(|s| !s.alias));
    // Three constants, each rounded up to 256 bytes.
    assert_eq!(plan.weights.len(), 3);
    let want: usize = [8 * 16 * 4, 16 * 4, 16 * 3 * 4].iter().map(|b: &usize| b.div_ceil(ALIGN) * ALIGN).sum();
    assert_eq!(plan.report.weight_bytes, want);
    // Activations: x, fc1, bias1, relu1, y = 128 + 256 + 256 + 256 + 48 bytes (each rounded to 256).
    assert_eq!(plan.report.unshared_activation_bytes, 5 * 256);
    assert!(plan.report.arena_bytes < plan.report.unshared_activation_bytes, "{}", plan.report);
    let x = plan.slot(plan.inputs[0]);
    assert_eq!((x.name.as_str(), x.shape.as_slice(), x.dtype), ("x", &[4usize, 8][..], DType::F32));
    let y = plan.slot(plan.outputs[0]);
    assert_eq!((y.name.as_str(), y.shape.as_slice()), ("y", &[4usize, 3][..]));
    eprintln!("{}", plan.report);

    let lowered = lower(&plan, &Options::default()).unwrap();
    let kinds: Vec<&str> = lowered
        .iter()
        .flat_map(|(_, ks)| ks)
        .map(|k| match k {
            Kernel::Matmul { .. } => "matmul",
            Kernel::Binary { .. } => "binary",
            Kernel::Unary { .. } => "unary",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["matmul", "binary", "unary", "matmul"]);
    let Kernel::Matmul { shape, .. } = &lowered[0].1[0] else { unreachable!() };
    assert_eq!((shape.m, shape.n, shape.k, shape.batch), (4, 16, 8, 1));
    assert!(!shape.allow_tf32);
}

#[test]
fn reshapes_alias_their_input_and_extend_its_life() {
    // a = relu(x); r = reshape(a); c = exp(x); d = reshape(c) + r; out = flatten(d)
    let mut net = NetworkDefinition::new("alias");
    let x = net.add_input("x", DType::F32, Shape::known(&[2, 8]));
    let shape = net.add_constant("shape", Tensor::from_vec(vec![1], vec![16i64]).unwrap());
    let a = net.add("a", unary(UnaryOp::Relu), &[x]).unwrap();
    let r = net.add("r", Op::Movement(MovementOp::Reshape { allowzero: false }), &[a, shape]).unwrap();
    let c = net.add("c", unary(UnaryOp::Exp), &[x]).unwrap();
    let c2 = net.add("c2", Op::Movement(MovementOp::Reshape { allowzero: false }), &[c, shape]).unwrap();
    let d = net.add("d", binary(BinaryOp::Add), &[c2, r]).unwrap();
    let i = net.add("i", Op::Elementwise(ElementwiseOp::Identity), &[d]).unwrap();
    net.mark_output(i, "out").unwrap();
    let plan = ExecutionPlan::new(&net.build()).unwrap();
    assert_valid(&plan);
    let by_name = |n: &str| plan.slots.iter().position(|s| s.name == n).unwrap();
    let (sa, sr, sc, sd, out) = (by_name("a"), by_name("r"), by_name("c"), by_name("d"), by_name("out"));
    assert_eq!(plan.slot(sr).root, sa);
    assert_eq!(plan.slot(sr).view, plan.slot(sa).view);
    assert_eq!(plan.slot(sr).shape, [16]);
    assert_eq!(plan.slot(out).root, sd);
    // `a` is read (through `r`) after `c` is written: they must not share bytes.
    let (va, vc) = (plan.slot(sa).view, plan.slot(sc).view);
    assert!(va.offset + 64 <= vc.offset || vc.offset + 64 <= va.offset, "{va:?} {vc:?}");
    // The shape operand is a build-time fact: no weights, no step input.
    assert!(plan.weights.is_empty());
    assert_eq!(plan.report.weight_bytes, 0);
    let steps: Vec<(&str, bool, usize)> =
        plan.steps.iter().map(|s| (s.node.as_str(), s.alias, s.inputs.len())).collect();
    assert_eq!(
        steps,
        [("a", false, 1), ("r", true, 1), ("c", false, 1), ("c2", true, 1), ("d", false, 2), ("i", true, 1)]
    );
    // Alias steps launch nothing.
    let lowered = lower(&plan, &Options::default()).unwrap();
    let launches: Vec<usize> = lowered.iter().map(|(_, k)| k.len()).collect();
    assert_eq!(launches, [1, 0, 1, 0, 1, 0]);
}

#[test]
fn a_reshaped_weight_stays_in_the_weights() {
    let mut net = NetworkDefinition::new("w");
    let x = net.add_input("x", DType::F32, Shape::known(&[3, 4]));
    let w = net.add_constant("w", weights(&[2, 2], 7));
    let shape = net.add_constant("shape", Tensor::from_vec(vec![1], vec![4i64]).unwrap());
    let wr = net.add("wr", Op::Movement(MovementOp::Reshape { allowzero: false }), &[w, shape]).unwrap();
    let y = net.add("y", binary(BinaryOp::Mul), &[x, wr]).unwrap();
    net.mark_output(y, "y").unwrap();
    let plan = ExecutionPlan::new(&net.build()).unwrap();
    assert_valid(&plan);
    let wr = plan.slots.iter().find(|s| s.name == "wr").unwrap();
    assert_eq!(wr.view.buffer, BufferKind::Weights);
    assert_eq!(plan.weights.len(), 1);
    assert_eq!(plan.report.weight_bytes, 256);
}

#[test]
fn an_unknown_dim_is_an_error_naming_the_value() {
    let mut net = NetworkDefinition::new("sym");
    let x = net.add_input("tokens", DType::F32, Shape(vec![Dim::sym("batch"), Dim::Known(8)]));
    let y = net.add("act", unary(UnaryOp::Tanh), &[x]).unwrap();
    net.mark_output(y, "y").unwrap();
    let g = net.build();
    match ExecutionPlan::new(&g) {
        Err(CudaError::UnknownShape { value, fact }) => {
            assert_eq!(value, "tokens");
            assert!(fact.contains("batch"), "{fact}");
        }
        other => panic!("expected UnknownShape, got {other:?}"),
    }
    let msg = ExecutionPlan::new(&g).unwrap_err().to_string();
    assert!(msg.contains("tokens") && msg.contains("batch"), "{msg}");
    // Binding the batch makes every shape known.
    let bound = bind_input_shapes(&g, &[vec![5, 8]]).unwrap();
    let plan = ExecutionPlan::new(&bound).unwrap();
    assert_eq!(plan.slot(plan.outputs[0]).shape, [5, 8]);
    assert_eq!(plan.slot(plan.outputs[0]).name, "y");
    // A shape that contradicts a known dim is refused.
    assert!(bind_input_shapes(&g, &[vec![5, 9]]).is_err());
    assert!(bind_input_shapes(&g, &[]).is_err());
}

#[test]
fn unsupported_ops_and_dtypes_fail_at_build_time_naming_the_node() {
    let mut net = NetworkDefinition::new("u");
    let x = net.add_input("x", DType::I32, Shape::known(&[4]));
    let y = net.add("int_relu", unary(UnaryOp::Sqrt), &[x]).unwrap();
    net.mark_output(y, "y").unwrap();
    let plan = ExecutionPlan::new(&net.build()).unwrap();
    match lower(&plan, &Options::default()) {
        Err(CudaError::UnsupportedNode { node, op, reason }) => {
            assert_eq!((node.as_str(), op.as_str()), ("int_relu", "Sqrt"));
            assert!(reason.contains("i32"), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let mut net = NetworkDefinition::new("u2");
    let x = net.add_input("x", DType::I32, Shape::known(&[4]));
    let y = net.add("sine", unary(UnaryOp::Sin), &[x]).unwrap();
    net.mark_output(y, "y").unwrap();
    let plan = ExecutionPlan::new(&net.build()).unwrap();
    let err = lower(&plan, &Options::default()).unwrap_err();
    assert!(matches!(&err, CudaError::UnsupportedNode { node, .. } if node == "sine"), "{err}");
}

fn gemm_graph(c_shape: &[usize], beta: f32, trans_b: bool) -> Graph {
    let mut net = NetworkDefinition::new("gemm");
    let a = net.add_input("a", DType::F32, Shape::known(&[3, 5]));
    let b = net.add_constant("b", weights(if trans_b { &[4, 5] } else { &[5, 4] }, 1));
    let c = net.add_constant("c", weights(c_shape, 2));
    let g = Gemm { alpha: 0.5, beta, trans_a: false, trans_b };
    let y = net.add("gemm", Op::Nn(NnOp::Gemm(g)), &[a, b, c]).unwrap();
    net.mark_output(y, "y").unwrap();
    net.build()
}

#[test]
fn gemm_picks_bias_epilogue_accumulator_or_a_separate_add() {
    let opts = Options::default();
    let kernels = |g: &Graph| {
        let plan = ExecutionPlan::new(g).unwrap();
        assert_valid(&plan);
        lower(&plan, &opts).map(|l| l.into_iter().flat_map(|(_, k)| k).collect::<Vec<_>>())
    };
    // C[4] with beta 1: a bias vector in the epilogue.
    let k = kernels(&gemm_graph(&[4], 1.0, true)).unwrap();
    let [Kernel::Matmul { shape, bias: Some(_), c: None, .. }] = k.as_slice() else { panic!("{k:?}") };
    assert!(shape.bias && shape.trans_b && shape.alpha == 0.5 && shape.beta == 0.0);
    assert_eq!((shape.m, shape.n, shape.k), (3, 4, 5));
    // C[3,4] with beta 2: the accumulator.
    let k = kernels(&gemm_graph(&[3, 4], 2.0, false)).unwrap();
    let [Kernel::Matmul { shape, c: Some(_), bias: None, .. }] = k.as_slice() else { panic!("{k:?}") };
    assert_eq!(shape.beta, 2.0);
    // C[3,1] with beta 1: the product, then an in-place broadcast add.
    let k = kernels(&gemm_graph(&[3, 1], 1.0, false)).unwrap();
    let [Kernel::Matmul { y, .. }, Kernel::Binary { a, y: y2, .. }] = k.as_slice() else { panic!("{k:?}") };
    assert_eq!((a, y2), (y, y));
    // C[3,1] with beta 2: C broadcast into Y, then Y as the accumulator.
    let k = kernels(&gemm_graph(&[3, 1], 2.0, false)).unwrap();
    let [Kernel::Copy { dst, .. }, Kernel::Matmul { shape, c: Some(c), y, .. }] = k.as_slice() else { panic!("{k:?}") };
    assert_eq!((dst, c, shape.beta), (y, y, 2.0));
}

#[test]
fn batched_matmul_folds_a_shared_b_and_strides_the_rest() {
    let lowered = |a: &[usize], b: &[usize]| {
        let mut net = NetworkDefinition::new("bmm");
        let x = net.add_input("a", DType::F16, Shape::known(a));
        let w = net.add_input("b", DType::F16, Shape::known(b));
        let y = net.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
        net.mark_output(y, "y").unwrap();
        let plan = ExecutionPlan::new(&net.build()).unwrap();
        lower(&plan, &Options::default()).map(|mut l| l.remove(0).1.remove(0))
    };
    let Ok(Kernel::Matmul { shape, .. }) = lowered(&[2, 3, 4], &[4, 5]) else { panic!() };
    assert_eq!((shape.batch, shape.m, shape.n, shape.k), (1, 6, 5, 4));
    let Ok(Kernel::Matmul { shape, .. }) = lowered(&[2, 3, 4], &[2, 4, 5]) else { panic!() };
    assert_eq!((shape.batch, shape.stride_a, shape.stride_b, shape.stride_c), (2, 12, 20, 15));
    let Ok(Kernel::Matmul { shape, .. }) = lowered(&[3, 4], &[2, 4, 5]) else { panic!() };
    assert_eq!((shape.batch, shape.stride_a, shape.stride_b), (2, 0, 20));
    let Ok(Kernel::Matmul { shape, .. }) = lowered(&[4], &[4, 5]) else { panic!() };
    assert_eq!((shape.batch, shape.m, shape.n), (1, 1, 5));
    assert!(matches!(lowered(&[2, 1, 3, 4], &[1, 2, 4, 5]), Err(CudaError::UnsupportedNode { .. })));
}

fn digits() -> Graph {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/digits/digits.onnx");
    kiln_onnx::load(path).expect("the bundled model loads").graph
}

#[test]
fn digits_plans_once_its_batch_is_bound() {
    let g = digits();
    // The batch is symbolic: planning names the input.
    match ExecutionPlan::new(&g) {
        Err(CudaError::UnknownShape { value, .. }) => assert_eq!(value, "image"),
        other => panic!("expected UnknownShape, got {other:?}"),
    }
    let bound = bind_input_shapes(&g, &[vec![16, 1, 8, 8]]).unwrap();
    let plan = ExecutionPlan::new(&bound).unwrap();
    assert_valid(&plan);
    assert_eq!(plan.slot(plan.outputs[0]).shape, [16, 10]);
    assert_eq!(plan.slot(plan.outputs[0]).name, "logits");
    // Every non-input node is a step, in an order where producers come first.
    let n_ops = g.nodes.iter().filter(|n| !matches!(n.op, Op::Input | Op::Constant(_))).count();
    assert_eq!(plan.steps.len(), n_ops);
    let produced_at = |slot: usize| plan.steps.iter().position(|s| s.outputs.contains(&slot));
    for (at, s) in plan.steps.iter().enumerate() {
        for &i in s.inputs.iter().flatten() {
            if let Some(p) = produced_at(i) {
                assert!(p < at, "step {} reads a value produced later", s.node);
            }
        }
    }
    // Flatten shares its input's bytes.
    let flatten = plan.steps.iter().find(|s| s.op.name() == "Flatten").expect("a Flatten");
    assert!(flatten.alias);
    let (src, dst) = (flatten.inputs[0].unwrap(), flatten.outputs[0]);
    assert_eq!(plan.slot(src).view, plan.slot(dst).view);
    // Weights: the 14 initializers' data (BatchNorm statistics included), packed.
    let init_bytes: usize =
        g.nodes.iter().filter_map(|n| if let Op::Constant(t) = &n.op { Some(t.bytes().len()) } else { None }).sum();
    assert!(
        plan.report.weight_bytes >= 13_850 * 4 && plan.report.weight_bytes <= init_bytes + 256 * plan.weights.len()
    );
    assert!(plan.report.arena_bytes < plan.report.unshared_activation_bytes);
    eprintln!("digits, batch 16: {}", plan.report);
    // Every step lowers: the convolutions to cuDNN, BatchNorm and the pools to kernels.
    let lowered = lower(&plan, &Options::default()).expect("the digits model lowers");
    let convs = lowered.iter().flat_map(|(_, ks)| ks).filter(|k| matches!(k, Kernel::Conv { .. })).count();
    assert_eq!(convs, 2);
}

#[test]
fn graph_outputs_live_to_the_end_and_inputs_from_the_start() {
    // y1 = relu(x) is an output; y2 = exp(neg(x)) is computed after it: y1's bytes must
    // survive while y2's chain runs, and x's while neg reads it.
    let mut net = NetworkDefinition::new("ends");
    let x = net.add_input("x", DType::F32, Shape::known(&[64]));
    let y1 = net.add("y1", unary(UnaryOp::Relu), &[x]).unwrap();
    let n = net.add("n", unary(UnaryOp::Neg), &[x]).unwrap();
    let e = net.add("e", unary(UnaryOp::Exp), &[n]).unwrap();
    let y2 = net.add("y2", unary(UnaryOp::Abs), &[e]).unwrap();
    net.mark_output(y1, "y1").unwrap();
    net.mark_output(y2, "y2").unwrap();
    let g = net.build();
    let plan = ExecutionPlan::new(&g).unwrap();
    assert_valid(&plan);
    assert_eq!(plan.outputs.len(), 2);
    assert_eq!(plan.slot_of(OutletId::new(1, 0)), Some(plan.outputs[0]));
}

fn optimized(g: &Graph) -> Graph {
    let eval = |op: &Op, inputs: &[Option<Tensor>], n: usize| {
        kiln_cpu::eval_op(op, inputs, n, &kiln_cpu::EvalContext::default()).map_err(|e| e.to_string())
    };
    kiln_opt::Optimizer::new(3).with_evaluator(&eval).optimize(g).expect("optimises").0
}

#[test]
fn an_optimised_mlp_lowers_to_two_products_with_epilogues() {
    let g = optimized(&mlp());
    eprintln!("{:?}", g.op_histogram());
    let plan = ExecutionPlan::new(&g).unwrap();
    assert_valid(&plan);
    let kernels: Vec<Kernel> = lower(&plan, &Options::default()).unwrap().into_iter().flat_map(|(_, k)| k).collect();
    // MatMul + Add + Relu is one product with cuBLASLt's bias+ReLU epilogue.
    let [Kernel::Matmul { shape: s1, bias: Some(_), .. }, Kernel::Matmul { shape: s2, bias: None, .. }] =
        kernels.as_slice()
    else {
        panic!("{kernels:?}")
    };
    assert!(s1.bias && s1.relu && !s2.bias && !s2.relu);
}

#[test]
fn fused_epilogues_lower_to_cublaslt_epilogues_or_inplace_kernels() {
    use kiln_ir::ops::{Expr, ExprNode, FusedLayer, FusedOp};
    let fused = |epilogue: Expr, r_shape: &[usize]| {
        let mut net = NetworkDefinition::new("fused");
        let x = net.add_input("x", DType::F32, Shape::known(&[4, 8]));
        let w = net.add_constant("w", weights(&[8, 6], 1));
        let r = net.add_constant("r", weights(r_shape, 2));
        let layer = FusedLayer { core: Box::new(Op::Nn(NnOp::MatMul)), core_inputs: 2, epilogue };
        let y = net.add("fc + add + relu", Op::Fused(FusedOp::Layer(layer)), &[x, w, r]).unwrap();
        net.mark_output(y, "y").unwrap();
        let plan = ExecutionPlan::new(&net.build()).unwrap();
        lower(&plan, &Options::default()).map(|l| l.into_iter().flat_map(|(_, k)| k).collect::<Vec<_>>())
    };
    let add_relu = Expr {
        nodes: vec![
            ExprNode::Input(0),
            ExprNode::Input(1),
            ExprNode::Binary(BinaryOp::Add, 0, 1),
            ExprNode::Unary(UnaryOp::Relu, 2),
        ],
    };
    let k = fused(add_relu.clone(), &[6]).unwrap();
    assert!(matches!(k.as_slice(), [Kernel::Matmul { shape, bias: Some(_), .. }] if shape.bias && shape.relu), "{k:?}");
    // A residual of the output's shape: the product, an in-place add, an in-place ReLU.
    let k = fused(add_relu, &[4, 6]).unwrap();
    assert!(
        matches!(k.as_slice(), [Kernel::Matmul { shape, .. }, Kernel::Binary { .. }, Kernel::Unary { .. }] if !shape.relu),
        "{k:?}"
    );
    // An epilogue without a kernel yet names the fused node.
    let other = Expr { nodes: vec![ExprNode::Input(0), ExprNode::Unary(UnaryOp::BitwiseNot, 0)] };
    match fused(other, &[6]) {
        Err(CudaError::UnsupportedNode { node, reason, .. }) => {
            assert_eq!(node, "fc + add + relu");
            assert!(reason.contains("bitwisenot"), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn an_executor_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<kiln_cuda::Executor>();
    send::<ExecutionPlan>();
}
