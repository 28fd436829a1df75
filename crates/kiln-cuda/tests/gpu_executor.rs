//! On a GPU: cuBLASLt products and whole graphs run by the executor (with and without a
//! CUDA graph) match the CPU backend on random non-zero data.
//! Tolerances (relative L2): FP32 1e-5 for the MLP and elementwise graphs, 1e-4 for
//! products alone; FP16 1e-2. Run by scripts/gpu-check on the device machine.

use half::f16;
use kiln_cpu::{EvalContext, eval_op};
use kiln_cuda::blas::{Blas, BlasType, MatmulPlan, MatmulShape, Operands};
use kiln_cuda::memory::DeviceBuffer;
use kiln_cuda::{CudaError, Device, Executor, Options};
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::nn::{Gemm, NnOp};
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Graph, NetworkDefinition, Shape, Tensor};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            // Non-zero: keep away from 0.
            if v.abs() < 1e-3 { 0.5 } else { v }
        })
        .collect()
}

fn tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let v = random(shape.iter().product(), seed);
    match dtype {
        DType::F32 => Tensor::from_vec(shape.to_vec(), v).unwrap(),
        DType::F16 => Tensor::from_vec(shape.to_vec(), v.into_iter().map(f16::from_f32).collect::<Vec<_>>()).unwrap(),
        d => panic!("no random {d}"),
    }
}

fn rel_l2(want: &Tensor, got: &Tensor) -> f64 {
    assert_eq!(want.dtype(), got.dtype());
    assert_eq!(want.shape(), got.shape());
    let (w, g) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
    let num: f64 = w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = w.iter().map(|a| a.powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn device() -> Device {
    let dev = Device::open(0).expect("a GPU");
    eprintln!("GPU: {} ({}), driver {}", dev.name, dev.arch(), dev.driver_version);
    dev
}

fn upload(dev: &Device, t: &Tensor, what: &str) -> DeviceBuffer {
    let b = DeviceBuffer::alloc(&dev.ctx, t.bytes().len(), what).unwrap();
    b.upload(&dev.stream, 0, t.bytes()).unwrap();
    b
}

fn download(dev: &Device, b: &DeviceBuffer, dtype: DType, shape: &[usize]) -> Tensor {
    let mut bytes = vec![0u8; b.bytes()];
    b.download(&dev.stream, 0, &mut bytes).unwrap();
    let t = Tensor::from_bytes(dtype, shape.to_vec(), kiln_ir::tensor::Bytes::from(bytes)).unwrap();
    // An aligned copy, so that typed views work.
    match dtype {
        DType::F32 => Tensor::from_vec(shape.to_vec(), t.to_vec::<f32>().unwrap()).unwrap(),
        _ => Tensor::from_vec(shape.to_vec(), t.to_vec::<f16>().unwrap()).unwrap(),
    }
}

fn cpu(op: &Op, inputs: &[&Tensor]) -> Tensor {
    let inputs: Vec<Option<Tensor>> = inputs.iter().map(|t| Some((*t).clone())).collect();
    eval_op(op, &inputs, 1, &EvalContext::default()).unwrap().remove(0)
}

/// One cuBLASLt product of row-major `a` and `b` (optionally `+ bias`) against kiln-cpu.
fn check_product(
    dev: &Device,
    blas: &std::sync::Arc<Blas>,
    dtype: DType,
    a_shape: &[usize],
    b_shape: &[usize],
    bias: bool,
) -> f64 {
    let a = tensor(dtype, a_shape, 11);
    let b = tensor(dtype, b_shape, 12);
    let mut want = cpu(&Op::Nn(NnOp::MatMul), &[&a, &b]);
    let out_shape = want.shape().to_vec();
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let n = b_shape[b_shape.len() - 1];
    let batch: usize = out_shape[..out_shape.len() - 2].iter().product();
    let a_batch: usize = a_shape[..a_shape.len() - 2].iter().product();
    let b_batch: usize = b_shape[..b_shape.len() - 2].iter().product();
    let bt = if dtype == DType::F32 { BlasType::F32 } else { BlasType::F16 };
    let mut shape = MatmulShape::new(bt, batch, m, n, k);
    if a_batch == 1 {
        shape.stride_a = 0;
    }
    if b_batch == 1 {
        shape.stride_b = 0;
    }
    let bias_t = tensor(dtype, &[n], 13);
    if bias {
        want = cpu(&Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add)), &[&want, &bias_t]);
        shape.bias = true;
    }
    let (da, db, dbias) = (upload(dev, &a, "a"), upload(dev, &b, "b"), upload(dev, &bias_t, "bias"));
    let dy = DeviceBuffer::alloc(&dev.ctx, want.bytes().len(), "y").unwrap();
    let ops = Operands { a: da.ptr(), b: db.ptr(), c: None, d: dy.ptr(), bias: bias.then(|| dbias.ptr()) };
    let plan = MatmulPlan::new(blas, &shape, ops, 32 << 20, 8).unwrap();
    eprintln!(
        "{a_shape:?}·{b_shape:?} {dtype}: {} algorithms, workspace {}",
        plan.algos().len(),
        plan.workspace_bytes()
    );
    let ws = DeviceBuffer::alloc(&dev.ctx, plan.workspace_bytes(), "workspace").unwrap();
    // SAFETY: every operand is allocated with the sizes the shape implies.
    unsafe { plan.run(&dev.stream, ws.ptr(), ws.bytes()) }.unwrap();
    dev.stream.synchronize().unwrap();
    let got = download(dev, &dy, dtype, &out_shape);
    let err = rel_l2(&want, &got);
    eprintln!("  rel L2 {err:.2e}");
    err
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn cublaslt_products_match_cpu_matmul() {
    let dev = device();
    let blas = Blas::new(&dev.ctx).unwrap();
    for (a, b, bias) in [
        (&[64usize, 128][..], &[128usize, 96][..], false),
        (&[33, 17], &[17, 5], true),
        (&[3, 17, 33], &[3, 33, 5], false),
        (&[4, 7, 16], &[16, 9], false),
        (&[7, 16], &[3, 16, 9], false),
        (&[2, 3, 8, 24], &[2, 3, 24, 40], true),
    ] {
        assert!(check_product(&dev, &blas, DType::F32, a, b, bias) <= 1e-4, "f32 {a:?}·{b:?}");
        assert!(check_product(&dev, &blas, DType::F16, a, b, bias) <= 1e-2, "f16 {a:?}·{b:?}");
    }
}

fn mlp(dtype: DType, batch: usize) -> Graph {
    let mut net = NetworkDefinition::new("mlp");
    let x = net.add_input("x", dtype, Shape::known(&[batch, 32]));
    let w1 = net.add_constant("w1", tensor(dtype, &[32, 64], 1));
    let b1 = net.add_constant("b1", tensor(dtype, &[64], 2));
    let w2 = net.add_constant("w2", tensor(dtype, &[64, 10], 3));
    let h = net.add("fc1", Op::Nn(NnOp::MatMul), &[x, w1]).unwrap();
    let h = net.add("bias1", Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add)), &[h, b1]).unwrap();
    let h = net.add("relu1", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Relu)), &[h]).unwrap();
    let y = net.add("fc2", Op::Nn(NnOp::MatMul), &[h, w2]).unwrap();
    net.mark_output(y, "y").unwrap();
    net.build()
}

fn check_graph(dev: &Device, g: &Graph, tol: f64, seeds: &[u64]) {
    for use_cuda_graph in [false, true] {
        let opts = Options { use_cuda_graph, check_each_launch: true, ..Options::default() };
        let mut ex = Executor::new(dev, g, opts).unwrap();
        assert_eq!(ex.uses_cuda_graph(), use_cuda_graph);
        eprintln!("{}: {} launches, {}", g.name, ex.launches().len(), ex.plan().report);
        // Several runs with new inputs: a replayed graph must read the new bytes.
        for &seed in seeds {
            let inputs: Vec<Tensor> = ex
                .plan()
                .inputs
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let slot = ex.plan().slot(s);
                    tensor(slot.dtype, &slot.shape, seed * 31 + i as u64)
                })
                .collect();
            let want = kiln_cpu::run(g, &inputs).unwrap();
            let got = ex.run(&inputs).unwrap();
            assert_eq!(want.len(), got.len());
            for (w, o) in want.iter().zip(&got) {
                let err = rel_l2(w, o);
                assert!(err <= tol, "{} (cuda graph {use_cuda_graph}, seed {seed}): rel L2 {err:.2e}", g.name);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn mlp_matches_cpu_with_and_without_cuda_graph() {
    let dev = device();
    check_graph(&dev, &mlp(DType::F32, 8), 1e-5, &[1, 2, 3]);
    check_graph(&dev, &mlp(DType::F16, 8), 1e-2, &[4, 5]);
    // Per-launch timing in one-by-one mode.
    let g = mlp(DType::F32, 256);
    let mut ex = Executor::new(&dev, &g, Options { use_cuda_graph: false, ..Options::default() }).unwrap();
    let x = tensor(DType::F32, &[256, 32], 9);
    let (out, times) = ex.run_timed(std::slice::from_ref(&x)).unwrap();
    assert!(rel_l2(&kiln_cpu::run(&g, &[x]).unwrap()[0], &out[0]) <= 1e-5);
    let nodes: Vec<&str> = times.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, ["fc1", "bias1", "relu1", "fc2"]);
    assert!(times.iter().all(|t| t.ms >= 0.0));
    eprintln!("{times:?}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gemm_variants_and_elementwise_graphs_match_cpu() {
    let dev = device();
    // Gemm with a bias vector (epilogue), a full accumulator (beta), a broadcast C (add),
    // transposes and alpha.
    for (c_shape, beta, trans_a, trans_b) in
        [(&[24usize][..], 1.0, false, true), (&[5, 24][..], 0.5, true, false), (&[5, 1][..], 1.0, true, true)]
    {
        let mut net = NetworkDefinition::new("gemm");
        let a = net.add_input("a", DType::F32, Shape::known(if trans_a { &[16, 5] } else { &[5, 16] }));
        let b = net.add_constant("b", tensor(DType::F32, if trans_b { &[24, 16] } else { &[16, 24] }, 7));
        let c = net.add_constant("c", tensor(DType::F32, c_shape, 8));
        let g = Gemm { alpha: 0.75, beta, trans_a, trans_b };
        let y = net.add("gemm", Op::Nn(NnOp::Gemm(g)), &[a, b, c]).unwrap();
        net.mark_output(y, "y").unwrap();
        check_graph(&dev, &net.build(), 1e-4, &[1, 2]);
    }
    // Broadcasting binaries, activations and aliases; an output that aliases an input's
    // reshape; a second output read before the end.
    let mut net = NetworkDefinition::new("elementwise");
    let x = net.add_input("x", DType::F32, Shape::known(&[4, 6, 8]));
    let s = net.add_input("s", DType::F32, Shape::known(&[6, 1]));
    let shape = net.add_constant("shape", Tensor::from_vec(vec![2], vec![24i64, 8]).unwrap());
    let bin = |op| Op::Elementwise(ElementwiseOp::Binary(op));
    let un = |op| Op::Elementwise(ElementwiseOp::Unary(op));
    let m = net.add("mul", bin(BinaryOp::Mul), &[x, s]).unwrap();
    let t = net.add("tanh", un(UnaryOp::Tanh), &[m]).unwrap();
    let e = net.add("sig", un(UnaryOp::Sigmoid), &[x]).unwrap();
    let d = net.add("sub", bin(BinaryOp::Sub), &[t, e]).unwrap();
    let r = net.add("flat", Op::Movement(MovementOp::Reshape { allowzero: false }), &[d, shape]).unwrap();
    let xr = net.add("xr", Op::Movement(MovementOp::Reshape { allowzero: false }), &[x, shape]).unwrap();
    let floor = net.add_constant("floor", tensor(DType::F32, &[8], 5));
    let q = net.add("max", Op::Elementwise(ElementwiseOp::Variadic(VariadicOp::Max)), &[r, floor]).unwrap();
    let g = net.add("gelu", un(UnaryOp::Gelu { tanh: false }), &[q]).unwrap();
    net.mark_output(g, "out").unwrap();
    net.mark_output(xr, "x_flat").unwrap();
    net.mark_output(t, "tanh_out").unwrap();
    check_graph(&dev, &net.build(), 1e-5, &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn errors_come_at_build_time_and_name_what_failed() {
    let dev = device();
    // An f64 MatMul: cuBLASLt is used for f32/f16 only, refused when the executor is built.
    let mut net = NetworkDefinition::new("f64_matmul");
    let a = net.add_input("a", DType::F64, Shape::known(&[2, 3]));
    let b = net.add_input("b", DType::F64, Shape::known(&[3, 2]));
    let y = net.add("mm", Op::Nn(NnOp::MatMul), &[a, b]).unwrap();
    net.mark_output(y, "y").unwrap();
    match Executor::new(&dev, &net.build(), Options::default()) {
        Err(CudaError::UnsupportedNode { op, node, .. }) => assert_eq!((op.as_str(), node.as_str()), ("MatMul", "mm")),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // An input of the wrong shape is refused by `run`, naming it.
    let mut ex = Executor::new(&dev, &mlp(DType::F32, 8), Options::default()).unwrap();
    match ex.run(&[tensor(DType::F32, &[7, 32], 1)]) {
        Err(CudaError::Input { name, .. }) => assert_eq!(name, "x"),
        other => panic!("expected an input error, got {other:?}"),
    }
    // Asking for more memory than the GPU has is OutOfMemory, naming what and how much.
    let huge = dev.total_memory * 2;
    match DeviceBuffer::alloc(&dev.ctx, huge, "a test buffer") {
        Err(CudaError::OutOfMemory { what, bytes }) => assert_eq!((what.as_str(), bytes), ("a test buffer", huge)),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // The executor still works afterwards.
    let x = tensor(DType::F32, &[8, 32], 3);
    let got = ex.run(std::slice::from_ref(&x)).unwrap();
    assert!(rel_l2(&kiln_cpu::run(&mlp(DType::F32, 8), &[x]).unwrap()[0], &got[0]) <= 1e-5);
}

fn optimized(g: &Graph) -> Graph {
    let eval = |op: &Op, inputs: &[Option<Tensor>], n: usize| {
        kiln_cpu::eval_op(op, inputs, n, &EvalContext::default()).map_err(|e| e.to_string())
    };
    kiln_opt::Optimizer::new(3).with_evaluator(&eval).optimize(g).expect("optimises").0
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn optimised_graphs_with_fused_epilogues_match_cpu() {
    use kiln_ir::ops::{Expr, ExprNode, FusedLayer, FusedOp};
    let dev = device();
    // kiln-opt turns MatMul + Add + Relu into one fused layer: cuBLASLt's bias+ReLU epilogue.
    for dtype in [DType::F32, DType::F16] {
        let g = optimized(&mlp(dtype, 16));
        assert!(g.op_histogram().keys().any(|k| k.starts_with("Fused")), "{:?}", g.op_histogram());
        check_graph(&dev, &g, if dtype == DType::F32 { 1e-5 } else { 1e-2 }, &[1, 2]);
    }
    // A batched MatMul with a residual epilogue: the product, then in-place add and ReLU.
    let mut net = NetworkDefinition::new("residual");
    let x = net.add_input("x", DType::F32, Shape::known(&[3, 5, 16]));
    let w = net.add_constant("w", tensor(DType::F32, &[16, 12], 1));
    let r = net.add_input("r", DType::F32, Shape::known(&[3, 5, 12]));
    let epilogue = Expr {
        nodes: vec![
            ExprNode::Input(1),
            ExprNode::Input(0),
            ExprNode::Binary(BinaryOp::Add, 1, 0),
            ExprNode::Unary(UnaryOp::Relu, 2),
        ],
    };
    let layer = FusedLayer { core: Box::new(Op::Nn(NnOp::MatMul)), core_inputs: 2, epilogue };
    let y = net.add("mm + res + relu", Op::Fused(FusedOp::Layer(layer)), &[x, w, r]).unwrap();
    net.mark_output(y, "y").unwrap();
    check_graph(&dev, &net.build(), 1e-5, &[1, 2]);
}
