//! Shared by the GPU op tests: random non-zero inputs, small graph builders, a test
//! case (graph, inputs, tolerance), the host check (plans and lowers without a GPU) and
//! the GPU check (the CUDA executor, with and without a CUDA graph, against
//! `kiln_cpu::run`). Tolerances are relative L2 for floats; integers and bools exactly.
#![allow(dead_code)]

use half::f16;
use kiln_cuda::executor::{Options, lower};
use kiln_cuda::plan::ExecutionPlan;
use kiln_cuda::{Device, Executor};
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::reduce::ReduceOp;
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Graph, NetworkDefinition, OutletId, Tensor};

pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if v.abs() < 1e-3 { 0.5 } else { v }
        })
        .collect()
}

/// Random non-zero values of `dtype`: floats in [-1, 1), integers in [-50, 50]
/// (unsigned: [0, 100]), bools alternating at random.
pub fn tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let v = random(shape.iter().product(), seed);
    let s = shape.to_vec();
    let int = |x: f32| (x * 50.0).round() as i64;
    match dtype {
        DType::F32 => Tensor::from_vec(s, v).unwrap(),
        DType::F16 => Tensor::from_vec(s, v.into_iter().map(f16::from_f32).collect::<Vec<_>>()).unwrap(),
        DType::BF16 => Tensor::from_vec(s, v.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>()).unwrap(),
        DType::F64 => Tensor::from_vec(s, v.into_iter().map(f64::from).collect::<Vec<_>>()).unwrap(),
        DType::I64 => Tensor::from_vec(s, v.into_iter().map(int).collect::<Vec<_>>()).unwrap(),
        DType::I32 => Tensor::from_vec(s, v.into_iter().map(|x| int(x) as i32).collect::<Vec<_>>()).unwrap(),
        DType::I16 => Tensor::from_vec(s, v.into_iter().map(|x| int(x) as i16).collect::<Vec<_>>()).unwrap(),
        DType::I8 => Tensor::from_vec(s, v.into_iter().map(|x| int(x) as i8).collect::<Vec<_>>()).unwrap(),
        DType::U8 => Tensor::from_vec(s, v.into_iter().map(|x| (int(x) + 50) as u8).collect::<Vec<_>>()).unwrap(),
        DType::U16 => Tensor::from_vec(s, v.into_iter().map(|x| (int(x) + 50) as u16).collect::<Vec<_>>()).unwrap(),
        DType::U32 => Tensor::from_vec(s, v.into_iter().map(|x| (int(x) + 50) as u32).collect::<Vec<_>>()).unwrap(),
        DType::U64 => Tensor::from_vec(s, v.into_iter().map(|x| (int(x) + 50) as u64).collect::<Vec<_>>()).unwrap(),
        DType::Bool => Tensor::from_bools(s, v.into_iter().map(|x| x > 0.0).collect()).unwrap(),
        d => panic!("no random {d}"),
    }
}

pub fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

pub fn scalar(v: f32) -> Tensor {
    Tensor::from_vec(vec![], vec![v]).unwrap()
}

pub fn el(e: ElementwiseOp) -> Op {
    Op::Elementwise(e)
}

pub fn un(u: UnaryOp) -> Op {
    el(ElementwiseOp::Unary(u))
}

pub fn bin(b: BinaryOp) -> Op {
    el(ElementwiseOp::Binary(b))
}

pub fn mv(m: MovementOp) -> Op {
    Op::Movement(m)
}

pub fn red(r: ReduceOp) -> Op {
    Op::Reduce(r)
}

/// One test graph: its name, the graph, its inputs' (dtype, shape), the FP tolerance.
pub struct Case {
    pub name: &'static str,
    pub graph: Graph,
    pub inputs: Vec<(DType, Vec<usize>)>,
    pub tol: f64,
}

pub fn out(net: &mut NetworkDefinition, o: OutletId, name: &str) {
    net.mark_output(o, name).unwrap();
}

/// Every case plans and lowers on the host (no GPU) and runs on the CPU backend.
pub fn check_lowers(cases: Vec<Case>) {
    for c in cases {
        let plan = ExecutionPlan::new(&c.graph).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        lower(&plan, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let inputs: Vec<Tensor> = c.inputs.iter().map(|(d, s)| tensor(*d, s, 1)).collect();
        kiln_cpu::run(&c.graph, &inputs).unwrap_or_else(|e| panic!("{}: cpu: {e}", c.name));
    }
}

pub fn compare(case: &str, name: &str, want: &Tensor, got: &Tensor, tol: f64) {
    assert_eq!(want.dtype(), got.dtype(), "{case}/{name}");
    assert_eq!(want.shape(), got.shape(), "{case}/{name}");
    if want.dtype().is_float() {
        let (w, g) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
        let num: f64 = w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = w.iter().map(|a| a.powi(2)).sum();
        let err = (num / den.max(1e-30)).sqrt();
        assert!(err <= tol, "{case}/{name}: relative L2 {err:e} > {tol:e}");
    } else if want.dtype() == DType::Bool {
        assert_eq!(want.to_bools().unwrap(), got.to_bools().unwrap(), "{case}/{name}");
    } else {
        assert_eq!(want.to_i64_vec().unwrap(), got.to_i64_vec().unwrap(), "{case}/{name}");
    }
}

/// Every case on GPU 0, with and without a CUDA graph (each run twice: a replay must
/// give the same result), against `kiln_cpu::run` on the same random inputs.
pub fn check_on_gpu(cases: Vec<Case>) {
    let dev = Device::open(0).expect("a GPU");
    eprintln!("GPU: {} ({})", dev.name, dev.arch());
    for c in cases {
        let inputs: Vec<Tensor> =
            c.inputs.iter().enumerate().map(|(i, (d, s))| tensor(*d, s, 100 + i as u64)).collect();
        let want = kiln_cpu::run(&c.graph, &inputs).unwrap_or_else(|e| panic!("{}: cpu: {e}", c.name));
        for use_cuda_graph in [false, true] {
            let opts = Options { use_cuda_graph, check_each_launch: true, ..Options::default() };
            let mut ex = Executor::new(&dev, &c.graph, opts).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            // Twice: a replay must give the same result.
            for _ in 0..2 {
                let got = ex.run(&inputs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
                assert_eq!(got.len(), want.len());
                for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                    let name = c.graph.outlet(c.graph.outputs[k]).map(|o| o.name.clone()).unwrap_or_default();
                    compare(c.name, &name, w, g, c.tol);
                }
            }
            eprintln!("{}: ok (cuda graph {use_cuda_graph}, {} launches)", c.name, ex.launches().len());
        }
    }
}
