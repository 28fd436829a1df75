//! Kiln's CUDA kernels, through their typed launchers, against the CPU backend's kernels
//! (`kiln_cpu::eval_op`) on random non-zero inputs. Tolerances (relative L2 error):
//! FP32 1e-5 for elementwise and movement, 1e-4 for reductions and normalisation;
//! FP16/BF16 1e-2; integers, bools and data movement exactly.
//!
//! Every test but the first needs a GPU (`#[ignore]`; scripts/gpu-check runs them). The
//! first compiles every kernel source with NVRTC where NVRTC and CUDA's headers are found
//! (no GPU needed) and checks that each kernel the launchers name is there.

use cudarc::driver::CudaSlice;
use kiln_cpu::{EvalContext, eval_op};
use kiln_cuda::kernels::ALL;
use kiln_cuda::launch::elementwise::{binary_code, compare_code, logic_code};
use kiln_cuda::launch::movement::Layout;
use kiln_cuda::launch::reduce::ReducePlan;
use kiln_cuda::nvrtc::Compiler;
use kiln_cuda::{Buf, CudaError, Device, Kernels, Launcher};
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, ElementwiseOp, LogicOp, UnaryOp, VariadicOp};
use kiln_ir::ops::movement::{MovementOp, PadMode, slice_axes};
use kiln_ir::ops::reduce::{
    ArgKind, ArgReduce, LayerNorm, Reduce, ReduceKind, ReduceOp, RmsNorm, Softmax, SoftmaxKind,
};
use kiln_ir::{DType, Op, Tensor};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A value range (lo, hi).
type Range = (f32, f32);

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

struct Gpu {
    dev: Device,
    kernels: Kernels,
}

impl Gpu {
    fn new() -> Gpu {
        let dev = Device::open(0).expect("a GPU");
        eprintln!("GPU: {} ({}), driver {}", dev.name, dev.arch(), dev.driver_version);
        let kernels = Kernels::new(&dev).expect("NVRTC");
        kernels.load_all().expect("every kernel module compiles and loads");
        Gpu { dev, kernels }
    }

    fn launcher(&self) -> Launcher<'_> {
        Launcher::new(&self.dev, &self.kernels)
    }

    /// A device copy of `t`'s bytes (at least one byte, so empty tensors have an address).
    fn up(&self, t: &Tensor) -> CudaSlice<u8> {
        let bytes: &[u8] = t.bytes();
        if bytes.is_empty() {
            return self.dev.stream.alloc_zeros::<u8>(1).unwrap();
        }
        self.dev.stream.clone_htod(bytes).unwrap()
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> CudaSlice<u8> {
        let n = shape.iter().product::<usize>() * dtype.size();
        self.dev.stream.alloc_zeros::<u8>(n.max(1)).unwrap()
    }

    fn down(&self, mem: &CudaSlice<u8>, dtype: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>() * dtype.size();
        let mut bytes = self.dev.stream.clone_dtoh(mem).unwrap();
        bytes.truncate(n);
        Tensor::from_bytes(dtype, shape.to_vec(), bytes::Bytes::from(bytes)).unwrap()
    }

    fn buf<'a>(&self, mem: &'a CudaSlice<u8>) -> Buf<'a> {
        Buf::of(mem, &self.dev.stream)
    }
}

/// xorshift values uniform in [lo, hi).
fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn cpu(op: Op, inputs: Vec<Option<Tensor>>, n_outputs: usize) -> Vec<Tensor> {
    eval_op(&op, &inputs, n_outputs, &EvalContext::default()).unwrap_or_else(|e| panic!("CPU {}: {e}", op.name()))
}

fn cast_cpu(t: &Tensor, to: DType) -> Tensor {
    cpu(Op::Elementwise(ElementwiseOp::Cast { to, saturate: false }), vec![Some(t.clone())], 1).remove(0)
}

/// A random tensor of `dtype` with values in [lo, hi) (integers: rounded; bool: > 0).
fn random(dtype: DType, shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    let v = uniform(n, seed, lo, hi);
    let f = Tensor::from_vec(shape.to_vec(), v.clone()).unwrap();
    match dtype {
        DType::F32 => f,
        DType::Bool => Tensor::from_bools(shape.to_vec(), v.iter().map(|&x| x > 0.0).collect()).unwrap(),
        d if d.is_integer() => {
            cast_cpu(&Tensor::from_vec(shape.to_vec(), v.iter().map(|x| x.round()).collect()).unwrap(), d)
        }
        d => cast_cpu(&f, d),
    }
}

fn rel_l2(want: &[f64], got: &[f64]) -> f64 {
    let num: f64 = want.iter().zip(got).map(|(a, b)| if a == b { 0.0 } else { (a - b).powi(2) }).sum();
    let den: f64 = want.iter().map(|a| a.powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The tolerance for `dtype`: `f32_tol` for f32, 1e-2 for f16/bf16.
fn tol(dtype: DType, f32_tol: f64) -> f64 {
    if dtype == DType::F32 { f32_tol } else { 1e-2 }
}

/// Checks `got` against `want`: same dtype and shape; floats within `tol` (relative L2,
/// NaN only where the CPU has NaN), everything else byte for byte.
fn check(what: &str, want: &Tensor, got: &Tensor, tol: f64) {
    assert_eq!(want.dtype(), got.dtype(), "{what}: dtype");
    assert_eq!(want.shape(), got.shape(), "{what}: shape");
    if want.dtype().is_float() {
        let (w, g) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
        for (i, (a, b)) in w.iter().zip(&g).enumerate() {
            assert_eq!(a.is_nan(), b.is_nan(), "{what}: element {i}: CPU {a}, GPU {b}");
        }
        let (w, g): (Vec<f64>, Vec<f64>) = w.iter().zip(&g).filter(|(a, _)| !a.is_nan()).map(|(a, b)| (*a, *b)).unzip();
        let e = rel_l2(&w, &g);
        if e > tol {
            let worst = w
                .iter()
                .zip(&g)
                .enumerate()
                .max_by(|x, y| (x.1.0 - x.1.1).abs().total_cmp(&(y.1.0 - y.1.1).abs()))
                .map(|(i, (a, b))| format!("element {i}: CPU {a}, GPU {b}"))
                .unwrap_or_default();
            panic!("{what}: relative L2 error {e:.3e} > {tol:.0e}; worst {worst}");
        }
    } else if want.bytes() != got.bytes() {
        let (w, g) = (want.to_f64_vec().unwrap_or_default(), got.to_f64_vec().unwrap_or_default());
        let first = w.iter().zip(&g).position(|(a, b)| a != b);
        panic!("{what}: differs; first at {first:?}: CPU {:?}, GPU {:?}", first.map(|i| w[i]), first.map(|i| g[i]));
    }
}

fn ew(op: ElementwiseOp) -> Op {
    Op::Elementwise(op)
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Without a GPU: the kernel sources compile
// ---------------------------------------------------------------------------------------

/// The kernels the launchers name, per source.
fn expected_kernels() -> Vec<(&'static str, String)> {
    let mut k = Vec::new();
    for t in ["f32", "f16", "bf16", "i32", "i64"] {
        k.push(("elementwise", format!("kiln_unary_{t}")));
        k.push(("elementwise", format!("kiln_binary_{t}")));
        k.push(("elementwise", format!("kiln_compare_{t}")));
    }
    k.push(("elementwise", "kiln_compare_u8".into()));
    k.push(("reduce", "kiln_reduce_int_i32".into()));
    k.push(("reduce", "kiln_reduce_int_i64".into()));
    for t in ["f64", "i8", "u8", "i16", "u16", "u32", "u64"] {
        k.push(("elementwise", format!("kiln_binary_{t}")));
        k.push(("elementwise", format!("kiln_compare_{t}")));
        k.push(("misc", format!("kiln_cumulate_{t}")));
    }
    for f in ["cast", "pow_any", "classify", "eye", "dropout"] {
        k.push(("elementwise", format!("kiln_{f}")));
    }
    for b in ["b1", "b2", "b4", "b8"] {
        k.push(("misc", format!("kiln_trilu_{b}")));
        k.push(("misc", format!("kiln_reverse_seq_{b}")));
    }
    for t in ["f32", "f16", "bf16"] {
        k.push(("misc", format!("kiln_hardmax_{t}")));
    }
    for b in ["b1", "b2", "b4", "b8"] {
        k.push(("elementwise", format!("kiln_where_{b}")));
        k.push(("movement", format!("kiln_copy_{b}")));
        k.push(("movement", format!("kiln_gather_{b}_i32")));
        k.push(("movement", format!("kiln_gather_{b}_i64")));
        k.push(("movement", format!("kiln_pad_{b}")));
    }
    for t in ["f32", "f16", "bf16"] {
        for f in ["reduce_rows", "reduce_mid", "reduce_strided", "softmax_rows", "softmax_mid", "arg_reduce"] {
            k.push(("reduce", format!("kiln_{f}_{t}")));
        }
        k.push(("norm", format!("kiln_layer_norm_{t}")));
        k.push(("norm", format!("kiln_rms_norm_{t}")));
    }
    k
}

#[test]
fn kernel_sources_compile_where_nvrtc_is_present() {
    let compiler = match Compiler::new("sm_90") {
        Ok(c) => c,
        Err(e @ (CudaError::LibraryMissing { .. } | CudaError::HeadersMissing { .. })) => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for src in ALL {
        let compiled = compiler.compile(src.name, src.code).unwrap_or_else(|e| panic!("{e}"));
        assert!(!compiled.cubin.is_empty(), "{}: empty cubin", src.name);
        for (_, name) in expected_kernels().iter().filter(|(s, _)| *s == src.name) {
            assert!(compiled.ptx.contains(&format!(".entry {name}(")), "{}: no kernel {name}", src.name);
        }
    }
}

#[test]
fn reduce_plans_group_axes() {
    let p = ReducePlan::new(&[2, 3, 4, 5], &[2, 3]);
    assert_eq!(p.three(), Some((6, 20, 1)));
    let p = ReducePlan::new(&[2, 3, 1, 4, 5], &[1, 2, 3]);
    assert_eq!(p.three(), Some((2, 12, 5)));
    let p = ReducePlan::new(&[2, 3, 4], &[0, 2]);
    assert_eq!(p.three(), None);
    assert_eq!(p.groups, vec![(2, 12, true), (3, 4, false), (4, 1, true)]);
    assert_eq!(ReducePlan::new(&[1, 7], &[0]).three(), Some((1, 1, 7)));
}

// ---------------------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------------------

/// Every activation and float op with the input range its math needs.
fn unary_cases() -> Vec<(UnaryOp, f32, f32)> {
    use UnaryOp::*;
    vec![
        (Relu, -4.0, 4.0),
        (LeakyRelu { alpha: 0.1 }, -4.0, 4.0),
        (Sigmoid, -8.0, 8.0),
        (Tanh, -4.0, 4.0),
        (Exp, -4.0, 4.0),
        (Log, 0.05, 8.0),
        (Sqrt, 0.0, 8.0),
        (Reciprocal, 0.25, 4.0),
        (Neg, -4.0, 4.0),
        (Abs, -4.0, 4.0),
        (Sign, -4.0, 4.0),
        (Erf, -3.0, 3.0),
        (Gelu { tanh: false }, -5.0, 5.0),
        (Gelu { tanh: true }, -5.0, 5.0),
        (Swish { alpha: 1.0 }, -6.0, 6.0),
        (Swish { alpha: 1.702 }, -6.0, 6.0),
        (HardSwish, -5.0, 5.0),
        (HardSigmoid { alpha: 0.2, beta: 0.5 }, -5.0, 5.0),
        (Elu { alpha: 1.0 }, -4.0, 4.0),
        (Selu { alpha: 1.673_263_2, gamma: 1.050_701 }, -4.0, 4.0),
        (Celu { alpha: 1.5 }, -4.0, 4.0),
        (Softplus, -10.0, 10.0),
        (Softsign, -4.0, 4.0),
        (Mish, -5.0, 5.0),
        (ThresholdedRelu { alpha: 0.5 }, -2.0, 2.0),
        (Shrink { bias: 0.2, lambd: 0.5 }, -2.0, 2.0),
        (Floor, -8.0, 8.0),
        (Ceil, -8.0, 8.0),
        (Round, -8.0, 8.0),
        (Sin, -6.0, 6.0),
        (Cos, -6.0, 6.0),
        (Tan, -1.2, 1.2),
        (Asin, -0.99, 0.99),
        (Acos, -0.99, 0.99),
        (Atan, -4.0, 4.0),
        (Sinh, -3.0, 3.0),
        (Cosh, -3.0, 3.0),
        (Asinh, -4.0, 4.0),
        (Acosh, 1.01, 5.0),
        (Atanh, -0.95, 0.95),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn unary_ops_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [7usize, 1429];
    let n = 7 * 1429;
    for (i, (op, lo, hi)) in unary_cases().into_iter().enumerate() {
        for dt in FLOATS {
            let x = random(dt, &shape, 100 + i as u64, lo, hi);
            let want = cpu(ew(ElementwiseOp::Unary(op)), vec![Some(x.clone())], 1).remove(0);
            let (dx, dy) = (g.up(&x), g.zeros(dt, &shape));
            l.unary_op(&op, dt, &g.buf(&dx), &g.buf(&dy), n).unwrap();
            check(&format!("{} {dt}", op.name()), &want, &g.down(&dy, dt, &shape), tol(dt, 1e-5));
        }
    }
    // Integer ones.
    for op in [UnaryOp::Relu, UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Sign] {
        for dt in [DType::I32, DType::I64] {
            let x = random(dt, &shape, 7, -100.0, 100.0);
            let want = cpu(ew(ElementwiseOp::Unary(op)), vec![Some(x.clone())], 1).remove(0);
            let (dx, dy) = (g.up(&x), g.zeros(dt, &shape));
            l.unary_op(&op, dt, &g.buf(&dx), &g.buf(&dy), n).unwrap();
            check(&format!("{} {dt}", op.name()), &want, &g.down(&dy, dt, &shape), 0.0);
        }
    }
    // In place.
    let x = random(DType::F32, &shape, 9, -4.0, 4.0);
    let want = cpu(ew(ElementwiseOp::Unary(UnaryOp::Tanh)), vec![Some(x.clone())], 1).remove(0);
    let dx = g.up(&x);
    l.unary_op(&UnaryOp::Tanh, DType::F32, &g.buf(&dx), &g.buf(&dx), n).unwrap();
    check("Tanh in place", &want, &g.down(&dx, DType::F32, &shape), 1e-5);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn clip_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [3usize, 1000];
    for dt in FLOATS {
        for (lo, hi) in [(Some(-1.0f32), Some(2.5f32)), (None, Some(0.5)), (Some(0.0), None), (Some(1.0), Some(-1.0))] {
            let x = random(dt, &shape, 11, -4.0, 4.0);
            let want = cpu(ew(ElementwiseOp::Clip { min: lo, max: hi }), vec![Some(x.clone())], 1).remove(0);
            let (dx, dy) = (g.up(&x), g.zeros(dt, &shape));
            l.clip(dt, lo, hi, &g.buf(&dx), &g.buf(&dy), 3000).unwrap();
            check(&format!("Clip({lo:?}, {hi:?}) {dt}"), &want, &g.down(&dy, dt, &shape), tol(dt, 1e-5));
        }
    }
}

/// Shapes of (a, b) and the broadcast output.
const BROADCASTS: [(&[usize], &[usize], &[usize]); 5] = [
    (&[4, 1, 6], &[5, 1], &[4, 5, 6]),
    (&[3, 40], &[], &[3, 40]),
    (&[2, 3, 4, 5], &[2, 3, 4, 5], &[2, 3, 4, 5]),
    (&[1], &[7, 1, 1, 1, 1, 1, 1, 3], &[7, 1, 1, 1, 1, 1, 1, 3]),
    (&[64, 1], &[1, 100], &[64, 100]),
];

#[test]
#[ignore = "needs a CUDA GPU"]
fn binary_ops_broadcast_like_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    // (op, range of a, range of b)
    let float_ops: [(ElementwiseOp, Range, Range); 7] = [
        (ElementwiseOp::Binary(BinaryOp::Add), (-4.0, 4.0), (-4.0, 4.0)),
        (ElementwiseOp::Binary(BinaryOp::Sub), (-4.0, 4.0), (-4.0, 4.0)),
        (ElementwiseOp::Binary(BinaryOp::Mul), (-4.0, 4.0), (-4.0, 4.0)),
        (ElementwiseOp::Binary(BinaryOp::Div), (-4.0, 4.0), (0.5, 3.0)),
        (ElementwiseOp::Binary(BinaryOp::Pow), (0.25, 3.0), (-2.0, 2.0)),
        (ElementwiseOp::Variadic(VariadicOp::Max), (-4.0, 4.0), (-4.0, 4.0)),
        (ElementwiseOp::Variadic(VariadicOp::Min), (-4.0, 4.0), (-4.0, 4.0)),
    ];
    let code = |op: &ElementwiseOp| match op {
        ElementwiseOp::Binary(b) => binary_code(*b).unwrap(),
        ElementwiseOp::Variadic(VariadicOp::Max) => kiln_cuda::kernels::BinaryCode::Max,
        ElementwiseOp::Variadic(VariadicOp::Min) => kiln_cuda::kernels::BinaryCode::Min,
        _ => unreachable!(),
    };
    for (k, (sa, sb, so)) in BROADCASTS.iter().enumerate() {
        for (op, ra, rb) in &float_ops {
            for dt in FLOATS {
                let a = random(dt, sa, 20 + k as u64, ra.0, ra.1);
                let b = random(dt, sb, 40 + k as u64, rb.0, rb.1);
                let want = cpu(ew(op.clone()), vec![Some(a.clone()), Some(b.clone())], 1).remove(0);
                let (da, db, dy) = (g.up(&a), g.up(&b), g.zeros(dt, so));
                l.binary(code(op), dt, (&g.buf(&da), sa), (&g.buf(&db), sb), &g.buf(&dy), so).unwrap();
                let what = format!("{} {dt} {sa:?} {sb:?}", kiln_ir::ops::OpFamily::name(op));
                check(&what, &want, &g.down(&dy, dt, so), tol(dt, 1e-5));
            }
        }
        // Integers: exact, division truncating, Python's Mod.
        let int_ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Mod { fmod: false },
            BinaryOp::Mod { fmod: true },
        ];
        for op in int_ops {
            for dt in [DType::I32, DType::I64] {
                let a = random(dt, sa, 60 + k as u64, -100.0, 100.0);
                // Non-zero divisors of both signs.
                let bv: Vec<i64> = uniform(sb.iter().product(), 61, 1.0, 9.0)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| if i % 2 == 0 { *v as i64 } else { -(*v as i64) })
                    .collect();
                let b = cast_cpu(&Tensor::from_vec(sb.to_vec(), bv).unwrap(), dt);
                let want = cpu(ew(ElementwiseOp::Binary(op)), vec![Some(a.clone()), Some(b.clone())], 1).remove(0);
                let (da, db, dy) = (g.up(&a), g.up(&b), g.zeros(dt, so));
                l.binary_op(op, dt, (&g.buf(&da), sa), (&g.buf(&db), sb), &g.buf(&dy), so).unwrap();
                check(&format!("{} {dt} {sa:?} {sb:?}", op.name()), &want, &g.down(&dy, dt, so), 0.0);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn prelu_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let xs = [2usize, 5, 6, 7];
    for slope_shape in [&[5usize, 1, 1][..], &[7], &[1]] {
        for dt in FLOATS {
            let x = random(dt, &xs, 70, -4.0, 4.0);
            let s = random(dt, slope_shape, 71, 0.05, 0.5);
            let want =
                cpu(ew(ElementwiseOp::Binary(BinaryOp::PRelu)), vec![Some(x.clone()), Some(s.clone())], 1).remove(0);
            let (dx, ds, dy) = (g.up(&x), g.up(&s), g.zeros(dt, &xs));
            l.binary_op(BinaryOp::PRelu, dt, (&g.buf(&dx), &xs), (&g.buf(&ds), slope_shape), &g.buf(&dy), &xs).unwrap();
            check(&format!("PRelu {dt} slope {slope_shape:?}"), &want, &g.down(&dy, dt, &xs), tol(dt, 1e-5));
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn compare_and_logic_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let ops =
        [CompareOp::Equal, CompareOp::Less, CompareOp::Greater, CompareOp::LessOrEqual, CompareOp::GreaterOrEqual];
    for (k, (sa, sb, so)) in BROADCASTS.iter().enumerate() {
        for op in ops {
            for dt in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64] {
                // Few distinct values, so that Equal is often true.
                let a = cast_cpu(&random(DType::I32, sa, 80 + k as u64, -3.0, 3.0), dt);
                let b = cast_cpu(&random(DType::I32, sb, 90 + k as u64, -3.0, 3.0), dt);
                let want = cpu(ew(ElementwiseOp::Compare(op)), vec![Some(a.clone()), Some(b.clone())], 1).remove(0);
                let (da, db, dy) = (g.up(&a), g.up(&b), g.zeros(DType::Bool, so));
                l.compare(compare_code(op), dt, (&g.buf(&da), sa), (&g.buf(&db), sb), &g.buf(&dy), so).unwrap();
                check(&format!("{} {dt} {sa:?} {sb:?}", op.name()), &want, &g.down(&dy, DType::Bool, so), 0.0);
            }
        }
        for op in [LogicOp::And, LogicOp::Or, LogicOp::Xor] {
            let a = random(DType::Bool, sa, 100 + k as u64, -1.0, 1.0);
            let b = random(DType::Bool, sb, 110 + k as u64, -1.0, 1.0);
            let want = cpu(ew(ElementwiseOp::Logic(op)), vec![Some(a.clone()), Some(b.clone())], 1).remove(0);
            let (da, db, dy) = (g.up(&a), g.up(&b), g.zeros(DType::Bool, so));
            l.compare(logic_code(op), DType::Bool, (&g.buf(&da), sa), (&g.buf(&db), sb), &g.buf(&dy), so).unwrap();
            check(&format!("{} {sa:?} {sb:?}", op.name()), &want, &g.down(&dy, DType::Bool, so), 0.0);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn where_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let (sc, sx, sy, so) = ([4usize, 1, 6], [5usize, 6], [4usize, 5, 1], [4usize, 5, 6]);
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::Bool] {
        let c = random(DType::Bool, &sc, 120, -1.0, 1.0);
        let x = random(dt, &sx, 121, -50.0, 50.0);
        let y = random(dt, &sy, 122, -50.0, 50.0);
        let want = cpu(ew(ElementwiseOp::Where), vec![Some(c.clone()), Some(x.clone()), Some(y.clone())], 1).remove(0);
        let (dc, dx, dy, dout) = (g.up(&c), g.up(&x), g.up(&y), g.zeros(dt, &so));
        l.where_(dt, (&g.buf(&dc), &sc), (&g.buf(&dx), &sx), (&g.buf(&dy), &sy), &g.buf(&dout), &so).unwrap();
        check(&format!("Where {dt}"), &want, &g.down(&dout, dt, &so), 0.0);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn casts_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let types = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::Bool];
    let shape = [5000usize];
    for from in types {
        // Fractions of both signs and some exact zeros.
        let mut v = uniform(5000, 130, -300.0, 300.0);
        for (i, x) in v.iter_mut().enumerate() {
            if i % 7 == 0 {
                *x = 0.0;
            }
        }
        let f = Tensor::from_vec(shape.to_vec(), v).unwrap();
        let x = match from {
            DType::Bool => random(DType::Bool, &shape, 131, -1.0, 1.0),
            d => cast_cpu(&f, d),
        };
        for to in types {
            let want = cast_cpu(&x, to);
            let (dx, dy) = (g.up(&x), g.zeros(to, &shape));
            l.cast(from, to, &g.buf(&dx), &g.buf(&dy), 5000).unwrap();
            let tolerance = if to == DType::F32 { 1e-7 } else { 1e-3 };
            check(&format!("Cast {from} -> {to}"), &want, &g.down(&dy, to, &shape), tolerance);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Data movement
// ---------------------------------------------------------------------------------------

/// A tensor of `dtype` whose elements are all distinct (as far as the dtype allows).
fn distinct(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    match dtype {
        DType::Bool => random(DType::Bool, shape, seed, -1.0, 1.0),
        d => random(d, shape, seed, -1000.0, 1000.0),
    }
}

const MOVE_TYPES: [DType; 5] = [DType::F32, DType::F16, DType::I64, DType::Bool, DType::BF16];

#[test]
#[ignore = "needs a CUDA GPU"]
fn transpose_slice_expand_concat_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    for dt in MOVE_TYPES {
        // Transpose.
        let shape = [2usize, 3, 4, 5];
        let x = distinct(dt, &shape, 140);
        for perm in [vec![0usize, 2, 3, 1], vec![3, 2, 1, 0], vec![1, 0, 2, 3]] {
            let p: Vec<i64> = perm.iter().map(|&v| v as i64).collect();
            let want = cpu(Op::Movement(MovementOp::Transpose { perm: Some(p) }), vec![Some(x.clone())], 1).remove(0);
            let (dx, dy) = (g.up(&x), g.zeros(dt, want.shape()));
            l.transpose(dt, (&g.buf(&dx), &shape), &perm, &g.buf(&dy)).unwrap();
            check(&format!("Transpose {perm:?} {dt}"), &want, &g.down(&dy, dt, want.shape()), 0.0);
        }
        // Slice with steps, negative ones included.
        let shape = [6usize, 7, 8];
        let x = distinct(dt, &shape, 141);
        let cases: [[Vec<i64>; 4]; 3] = [
            [vec![1, -1], vec![5, -8], vec![0, 1], vec![2, -2]],
            [vec![0, 2, 7], vec![6, 5, 0], vec![0, 1, 2], vec![1, 1, -3]],
            [vec![3], vec![100], vec![2], vec![1]],
        ];
        for [starts, ends, axes, steps] in cases {
            let op = Op::Movement(MovementOp::Slice { attrs: None });
            let inputs =
                vec![Some(x.clone()), Some(i64s(&starts)), Some(i64s(&ends)), Some(i64s(&axes)), Some(i64s(&steps))];
            let want = cpu(op, inputs, 1).remove(0);
            let sl = slice_axes(&shape, &starts, &ends, Some(&axes), Some(&steps)).unwrap();
            let (dx, dy) = (g.up(&x), g.zeros(dt, want.shape()));
            l.slice(dt, (&g.buf(&dx), &shape), &sl, &g.buf(&dy)).unwrap();
            check(
                &format!("Slice {starts:?}..{ends:?} step {steps:?} {dt}"),
                &want,
                &g.down(&dy, dt, want.shape()),
                0.0,
            );
        }
        // Expand.
        let shape = [3usize, 1, 4];
        let x = distinct(dt, &shape, 142);
        let out = [2usize, 3, 5, 4];
        let want = cpu(Op::Movement(MovementOp::Expand), vec![Some(x.clone()), Some(i64s(&[2, 3, 5, 4]))], 1).remove(0);
        let (dx, dy) = (g.up(&x), g.zeros(dt, &out));
        l.expand(dt, (&g.buf(&dx), &shape), &g.buf(&dy), &out).unwrap();
        check(&format!("Expand {dt}"), &want, &g.down(&dy, dt, &out), 0.0);
        // Concat along each axis.
        for axis in 0..3usize {
            let shapes: Vec<Vec<usize>> = (0..3)
                .map(|i| {
                    let mut s = vec![2usize, 3, 4];
                    s[axis] = i + 1;
                    s
                })
                .collect();
            let xs: Vec<Tensor> = shapes.iter().enumerate().map(|(i, s)| distinct(dt, s, 150 + i as u64)).collect();
            let want =
                cpu(Op::Movement(MovementOp::Concat { axis: axis as i64 }), xs.iter().cloned().map(Some).collect(), 1)
                    .remove(0);
            let dxs: Vec<CudaSlice<u8>> = xs.iter().map(|t| g.up(t)).collect();
            let bufs: Vec<Buf> = dxs.iter().map(|d| g.buf(d)).collect();
            let ops: Vec<(&Buf, &[usize])> = bufs.iter().zip(&shapes).map(|(b, s)| (b, &s[..])).collect();
            let dy = g.zeros(dt, want.shape());
            l.concat(dt, &ops, axis, &g.buf(&dy), want.shape()).unwrap();
            check(&format!("Concat axis {axis} {dt}"), &want, &g.down(&dy, dt, want.shape()), 0.0);
        }
    }
    // A generic copy into a strided destination (a column block of a matrix).
    let src = distinct(DType::F32, &[4, 3], 160);
    let (ds, dd) = (g.up(&src), g.zeros(DType::F32, &[4, 10]));
    let dl = Layout { offset: 5, strides: vec![10, 1] };
    l.copy_strided(DType::F32, &g.buf(&ds), &Layout::contiguous(&[4, 3]), &g.buf(&dd), &dl, &[4, 3]).unwrap();
    let got = g.down(&dd, DType::F32, &[4, 10]).to_vec::<f32>().unwrap();
    let s = src.to_vec::<f32>().unwrap();
    for r in 0..4 {
        assert_eq!(&got[r * 10 + 5..r * 10 + 8], &s[r * 3..r * 3 + 3], "row {r}");
        assert!(got[r * 10..r * 10 + 5].iter().all(|&v| v == 0.0));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gather_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [5usize, 6, 7];
    for dt in MOVE_TYPES {
        let x = distinct(dt, &shape, 170);
        for axis in 0..3usize {
            let dim = shape[axis] as i64;
            let idx: Vec<i64> = vec![0, dim - 1, -1, -dim, 2, 1];
            for idt in [DType::I64, DType::I32] {
                let it = cast_cpu(&Tensor::from_vec(vec![2, 3], idx.clone()).unwrap(), idt);
                let op = Op::Movement(MovementOp::Gather { axis: axis as i64 });
                let want = cpu(op, vec![Some(x.clone()), Some(it.clone())], 1).remove(0);
                let (dx, di, dy, bad) = (g.up(&x), g.up(&it), g.zeros(dt, want.shape()), g.zeros(DType::U32, &[1]));
                l.gather(dt, (&g.buf(&dx), &shape), axis, idt, (&g.buf(&di), &[2, 3]), &g.buf(&dy), Some(&g.buf(&bad)))
                    .unwrap();
                check(&format!("Gather axis {axis} {dt} {idt}"), &want, &g.down(&dy, dt, want.shape()), 0.0);
                assert_eq!(g.down(&bad, DType::U32, &[1]).to_vec::<u32>().unwrap(), vec![0]);
            }
        }
    }
    // Out of range: zeros and the flag.
    let x = distinct(DType::F32, &shape, 171);
    let it = i64s(&[1, 6, -7]);
    let (dx, di, dy, bad) = (g.up(&x), g.up(&it), g.zeros(DType::F32, &[5, 3, 7]), g.zeros(DType::U32, &[1]));
    l.gather(DType::F32, (&g.buf(&dx), &shape), 1, DType::I64, (&g.buf(&di), &[3]), &g.buf(&dy), Some(&g.buf(&bad)))
        .unwrap();
    assert_eq!(g.down(&bad, DType::U32, &[1]).to_vec::<u32>().unwrap(), vec![1]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pad_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [3usize, 4, 5];
    for dt in MOVE_TYPES {
        let x = distinct(dt, &shape, 180);
        let cases: [(PadMode, [i64; 6]); 6] = [
            (PadMode::Constant, [1, 0, 2, 0, 3, 1]),
            (PadMode::Constant, [0, -1, 2, 1, 0, -2]),
            (PadMode::Reflect, [1, 2, 3, 2, 1, 4]),
            (PadMode::Edge, [2, 0, 1, 1, 3, 2]),
            (PadMode::Wrap, [1, 3, 2, 0, 6, 1]),
            (PadMode::Reflect, [0, 0, 0, 0, 0, 0]),
        ];
        for (mode, pads) in cases {
            let value = 1.5f32;
            let op = Op::Movement(MovementOp::Pad { mode, pads: Some(pads.to_vec()), value });
            let want = cpu(op, vec![Some(x.clone())], 1).remove(0);
            let amounts: Vec<(i64, i64)> = (0..3).map(|k| (pads[k], pads[k + 3])).collect();
            let (dx, dy) = (g.up(&x), g.zeros(dt, want.shape()));
            l.pad(dt, mode, (&g.buf(&dx), &shape), &amounts, value as f64, &g.buf(&dy)).unwrap();
            check(&format!("Pad {mode:?} {pads:?} {dt}"), &want, &g.down(&dy, dt, want.shape()), 0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reductions and normalisation
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a CUDA GPU"]
fn reductions_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [6usize, 7, 80];
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
        ReduceKind::SumSquare,
    ];
    let axes_sets: [&[usize]; 7] = [&[2], &[1], &[0], &[0, 2], &[1, 2], &[0, 1], &[0, 1, 2]];
    for kind in kinds {
        // Products and logs of sums need positive values near 1.
        let (lo, hi) = if matches!(kind, ReduceKind::Prod | ReduceKind::LogSum) { (0.9, 1.1) } else { (-2.0, 2.0) };
        for dt in FLOATS {
            let x = random(dt, &shape, 200, lo, hi);
            for axes in axes_sets {
                let a: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
                let r = Reduce { kind, axes: Some(a), keepdims: true, noop_with_empty_axes: false };
                let want = cpu(Op::Reduce(ReduceOp::Reduce(r)), vec![Some(x.clone())], 1).remove(0);
                let (dx, dy) = (g.up(&x), g.zeros(dt, want.shape()));
                l.reduce(kind, dt, (&g.buf(&dx), &shape), axes, &g.buf(&dy)).unwrap();
                let what = format!("{} {dt} axes {axes:?}", kind.name());
                check(&what, &want, &g.down(&dy, dt, want.shape()), tol(dt, 1e-4));
            }
        }
    }
    // Integers: exact, wrapping (products of 1s and 2s overflow i32).
    let int_kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::SumSquare,
    ];
    for kind in int_kinds {
        let (lo, hi) = if kind == ReduceKind::Prod { (0.6, 2.4) } else { (-1000.0, 1000.0) };
        for dt in [DType::I32, DType::I64] {
            let x = random(dt, &shape, 202, lo, hi);
            for axes in axes_sets {
                let a: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
                let r = Reduce { kind, axes: Some(a), keepdims: false, noop_with_empty_axes: false };
                let want = cpu(Op::Reduce(ReduceOp::Reduce(r)), vec![Some(x.clone())], 1).remove(0);
                let (dx, dy) = (g.up(&x), g.zeros(dt, want.shape()));
                l.reduce(kind, dt, (&g.buf(&dx), &shape), axes, &g.buf(&dy)).unwrap();
                check(&format!("{} {dt} axes {axes:?}", kind.name()), &want, &g.down(&dy, dt, want.shape()), 0.0);
            }
        }
    }
    // A long row: several elements a thread.
    let shape = [3usize, 100_000];
    let x = random(DType::F32, &shape, 201, -1.0, 1.0);
    let r = Reduce { kind: ReduceKind::Sum, axes: Some(vec![1]), keepdims: false, noop_with_empty_axes: false };
    let want = cpu(Op::Reduce(ReduceOp::Reduce(r)), vec![Some(x.clone())], 1).remove(0);
    let (dx, dy) = (g.up(&x), g.zeros(DType::F32, &[3]));
    l.reduce(ReduceKind::Sum, DType::F32, (&g.buf(&dx), &shape), &[1], &g.buf(&dy)).unwrap();
    check("long ReduceSum", &want, &g.down(&dy, DType::F32, &[3]), 1e-4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn softmax_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [4usize, 5, 300];
    for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
        for dt in FLOATS {
            let x = random(dt, &shape, 210, -6.0, 6.0);
            for (axis, coerce_2d) in [(2usize, false), (1, false), (0, false), (1, true)] {
                let s = Softmax { kind, axis: axis as i64, coerce_2d };
                let want = cpu(Op::Reduce(ReduceOp::Softmax(s)), vec![Some(x.clone())], 1).remove(0);
                let (dx, dy) = (g.up(&x), g.zeros(dt, &shape));
                let log = kind == SoftmaxKind::LogSoftmax;
                l.softmax(log, dt, (&g.buf(&dx), &shape), axis, coerce_2d, &g.buf(&dy)).unwrap();
                let what = format!("{kind:?} {dt} axis {axis} coerce {coerce_2d}");
                check(&what, &want, &g.down(&dy, dt, &shape), tol(dt, 1e-4));
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn arg_reduce_matches_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    let shape = [4usize, 50, 6];
    for dt in FLOATS {
        // Small integers: many ties, so first/last matters.
        let x = cast_cpu(&random(DType::I32, &shape, 220, -5.0, 5.0), dt);
        for axis in [1usize, 2, 0] {
            for (kind, last) in
                [(ArgKind::Max, false), (ArgKind::Max, true), (ArgKind::Min, false), (ArgKind::Min, true)]
            {
                let a = ArgReduce { kind, axis: axis as i64, keepdims: true, select_last_index: last };
                let want = cpu(Op::Reduce(ReduceOp::Arg(a)), vec![Some(x.clone())], 1).remove(0);
                let (dx, dy) = (g.up(&x), g.zeros(DType::I64, want.shape()));
                l.arg_reduce(kind == ArgKind::Max, last, dt, (&g.buf(&dx), &shape), axis, &g.buf(&dy)).unwrap();
                let what = format!("Arg{kind:?} last {last} {dt} axis {axis}");
                check(&what, &want, &g.down(&dy, DType::I64, want.shape()), 0.0);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn layer_and_rms_norm_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    // (x shape, axis, scale shape)
    let cases: [(&[usize], usize, &[usize]); 4] =
        [(&[3, 5, 64], 2, &[64]), (&[3, 5, 64], 1, &[5, 64]), (&[3, 5, 64], 1, &[64]), (&[2, 4096], 1, &[4096])];
    for (shape, axis, sshape) in cases {
        for dt in FLOATS {
            // An offset, so that a one-pass variance would lose digits.
            let x = random(dt, shape, 230, 2.0, 6.0);
            let scale = random(dt, sshape, 231, 0.5, 1.5);
            let bias = random(dt, sshape, 232, -1.0, 1.0);
            let ln = LayerNorm { axis: axis as i64, epsilon: 1e-5, stash_type: DType::F32 };
            let want = cpu(
                Op::Reduce(ReduceOp::LayerNorm(ln)),
                vec![Some(x.clone()), Some(scale.clone()), Some(bias.clone())],
                3,
            );
            let rows: usize = shape[..axis].iter().product();
            let (dx, ds, db, dy) = (g.up(&x), g.up(&scale), g.up(&bias), g.zeros(dt, shape));
            let (dm, dr) = (g.zeros(DType::F32, &[rows]), g.zeros(DType::F32, &[rows]));
            l.layer_norm(
                dt,
                (&g.buf(&dx), shape),
                axis,
                (&g.buf(&ds), sshape),
                Some((&g.buf(&db), sshape)),
                1e-5,
                &g.buf(&dy),
                Some((&g.buf(&dm), &g.buf(&dr))),
            )
            .unwrap();
            let what = format!("LayerNorm {dt} {shape:?} axis {axis} scale {sshape:?}");
            check(&what, &want[0], &g.down(&dy, dt, shape), tol(dt, 1e-4));
            let stat_shape = want[1].shape().to_vec();
            check(&format!("{what} mean"), &want[1], &g.down(&dm, DType::F32, &stat_shape), 1e-4);
            check(&format!("{what} inv std"), &want[2], &g.down(&dr, DType::F32, &stat_shape), 1e-4);
            // RMSNormalization.
            let x = random(dt, shape, 233, -2.0, 2.0);
            let rn = RmsNorm { axis: axis as i64, epsilon: 1e-6, stash_type: DType::F32 };
            let want = cpu(Op::Reduce(ReduceOp::RmsNorm(rn)), vec![Some(x.clone()), Some(scale.clone())], 1).remove(0);
            let (dx, dy) = (g.up(&x), g.zeros(dt, shape));
            l.rms_norm(dt, (&g.buf(&dx), shape), axis, (&g.buf(&ds), sshape), 1e-6, &g.buf(&dy)).unwrap();
            check(&format!("RMSNorm {dt} {shape:?} axis {axis}"), &want, &g.down(&dy, dt, shape), tol(dt, 1e-4));
        }
    }
    // Without bias or statistics.
    let shape = [8usize, 100];
    let x = random(DType::F32, &shape, 234, -1.0, 1.0);
    let scale = random(DType::F32, &[100], 235, 0.5, 1.5);
    let ln = LayerNorm { axis: -1, epsilon: 1e-5, stash_type: DType::F32 };
    let want = cpu(Op::Reduce(ReduceOp::LayerNorm(ln)), vec![Some(x.clone()), Some(scale.clone()), None], 1).remove(0);
    let (dx, ds, dy) = (g.up(&x), g.up(&scale), g.zeros(DType::F32, &shape));
    l.layer_norm(DType::F32, (&g.buf(&dx), &shape), 1, (&g.buf(&ds), &[100]), None, 1e-5, &g.buf(&dy), None).unwrap();
    check("LayerNorm without bias", &want, &g.down(&dy, DType::F32, &shape), 1e-4);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a CUDA GPU"]
fn launchers_refuse_bad_arguments() {
    let g = Gpu::new();
    let l = g.launcher();
    let small = g.zeros(DType::F32, &[10]);
    let big = g.zeros(DType::F32, &[100]);
    let (s, b) = (g.buf(&small), g.buf(&big));
    match l.unary_op(&UnaryOp::Relu, DType::F32, &s, &b, 100) {
        Err(CudaError::BufferTooSmall { need: 400, have: 40, .. }) => {}
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    match l.unary_op(&UnaryOp::BitwiseNot, DType::F32, &b, &b, 100) {
        Err(CudaError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match l.unary_op(&UnaryOp::Exp, DType::I32, &b, &b, 100) {
        Err(CudaError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match l.binary(kiln_cuda::kernels::BinaryCode::Add, DType::F32, (&b, &[3, 4]), (&b, &[5]), &b, &[3, 4]) {
        Err(CudaError::Invalid { .. }) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    match l.slice(DType::F32, (&s, &[10]), &slice_axes(&[20], &[0], &[20], None, None).unwrap(), &b) {
        Err(CudaError::BufferTooSmall { .. }) => {}
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let e = CudaError::unsupported("Tan", "no kernel").at_node("layer1/tan", "Tan");
    assert!(e.to_string().contains("layer1/tan"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Sizes past the grid limits, and empty tensors
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs a CUDA GPU"]
fn large_and_empty_tensors_match_cpu() {
    let g = Gpu::new();
    let l = g.launcher();
    // More elements than 65535 blocks of 256 threads: the grid-stride loops wrap.
    let shape = [17_000_001usize];
    let x = random(DType::F32, &shape, 300, -4.0, 4.0);
    let want = cpu(ew(ElementwiseOp::Unary(UnaryOp::Sigmoid)), vec![Some(x.clone())], 1).remove(0);
    let (dx, dy) = (g.up(&x), g.zeros(DType::F32, &shape));
    l.unary_op(&UnaryOp::Sigmoid, DType::F32, &g.buf(&dx), &g.buf(&dy), shape[0]).unwrap();
    check("large Sigmoid", &want, &g.down(&dy, DType::F32, &shape), 1e-5);
    let (sa, sb, so) = ([17_000usize, 1001], [1001usize], [17_000usize, 1001]);
    let a = random(DType::F16, &sa, 301, -4.0, 4.0);
    let b = random(DType::F16, &sb, 302, -4.0, 4.0);
    let want = cpu(ew(ElementwiseOp::Binary(BinaryOp::Mul)), vec![Some(a.clone()), Some(b.clone())], 1).remove(0);
    let (da, db, dy) = (g.up(&a), g.up(&b), g.zeros(DType::F16, &so));
    l.binary_op(BinaryOp::Mul, DType::F16, (&g.buf(&da), &sa), (&g.buf(&db), &sb), &g.buf(&dy), &so).unwrap();
    check("large broadcast Mul f16", &want, &g.down(&dy, DType::F16, &so), 1e-2);
    // Transposing it: a copy past the grid limit.
    let want = cpu(Op::Movement(MovementOp::Transpose { perm: Some(vec![1, 0]) }), vec![Some(a.clone())], 1).remove(0);
    let dt = g.zeros(DType::F16, want.shape());
    l.transpose(DType::F16, (&g.buf(&da), &sa), &[1, 0], &g.buf(&dt)).unwrap();
    check("large Transpose", &want, &g.down(&dt, DType::F16, want.shape()), 0.0);
    // More rows than blocks: the row kernels' grid-stride over rows.
    let shape = [70_001usize, 33];
    let x = random(DType::F32, &shape, 303, -3.0, 3.0);
    let r = Reduce { kind: ReduceKind::Max, axes: Some(vec![1]), keepdims: true, noop_with_empty_axes: false };
    let want = cpu(Op::Reduce(ReduceOp::Reduce(r)), vec![Some(x.clone())], 1).remove(0);
    let (dx, dy) = (g.up(&x), g.zeros(DType::F32, &[70_001]));
    l.reduce(ReduceKind::Max, DType::F32, (&g.buf(&dx), &shape), &[1], &g.buf(&dy)).unwrap();
    check("many-row ReduceMax", &want, &g.down(&dy, DType::F32, want.shape()), 1e-4);
    let s = Softmax { kind: SoftmaxKind::Softmax, axis: 1, coerce_2d: false };
    let want = cpu(Op::Reduce(ReduceOp::Softmax(s)), vec![Some(x.clone())], 1).remove(0);
    let dy = g.zeros(DType::F32, &shape);
    l.softmax(false, DType::F32, (&g.buf(&dx), &shape), 1, false, &g.buf(&dy)).unwrap();
    check("many-row Softmax", &want, &g.down(&dy, DType::F32, &shape), 1e-4);
    let scale = random(DType::F32, &[33], 304, 0.5, 1.5);
    let ln = LayerNorm { axis: 1, epsilon: 1e-5, stash_type: DType::F32 };
    let want = cpu(Op::Reduce(ReduceOp::LayerNorm(ln)), vec![Some(x.clone()), Some(scale.clone()), None], 1).remove(0);
    let (ds, dy) = (g.up(&scale), g.zeros(DType::F32, &shape));
    l.layer_norm(DType::F32, (&g.buf(&dx), &shape), 1, (&g.buf(&ds), &[33]), None, 1e-5, &g.buf(&dy), None).unwrap();
    check("many-row LayerNorm", &want, &g.down(&dy, DType::F32, &shape), 1e-4);
    // Empty: nothing launched for empty outputs; an empty reduced axis gives identities.
    let e = g.zeros(DType::F32, &[1]);
    l.unary_op(&UnaryOp::Exp, DType::F32, &g.buf(&e), &g.buf(&e), 0).unwrap();
    let shape = [3usize, 0];
    let x = Tensor::zeros(DType::F32, shape.to_vec());
    for kind in [ReduceKind::Sum, ReduceKind::Prod, ReduceKind::Mean, ReduceKind::Max] {
        let r = Reduce { kind, axes: Some(vec![1]), keepdims: false, noop_with_empty_axes: false };
        let want = cpu(Op::Reduce(ReduceOp::Reduce(r)), vec![Some(x.clone())], 1).remove(0);
        let (dx, dy) = (g.up(&x), g.zeros(DType::F32, &[3]));
        l.reduce(kind, DType::F32, (&g.buf(&dx), &shape), &[1], &g.buf(&dy)).unwrap();
        check(&format!("empty {}", kind.name()), &want, &g.down(&dy, DType::F32, &[3]), 1e-6);
    }
}
