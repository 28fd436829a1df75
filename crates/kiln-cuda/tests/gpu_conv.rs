//! cuDNN convolutions (`kiln_cuda::dnn`) and the pool kernels (`launch/pool.rs`) against
//! the CPU backend (`kiln_cpu::eval_op`) on random non-zero inputs. Tolerances (relative
//! L2 error): FP32 1e-4 for convolutions and pools, FP16 1e-2 (the CPU reference runs in
//! FP32 on the FP16-rounded inputs); MaxPool's indices exactly.
//!
//! Every test but the first needs a GPU (`#[ignore]`). The first compiles `pool.cu`
//! with NVRTC where NVRTC and CUDA's headers are found (no GPU needed).

use cudarc::driver::CudaSlice;
use kiln_cpu::{EvalContext, eval_op};
use kiln_cuda::dnn::{ConvGeometry, Dnn};
use kiln_cuda::kernels::POOL;
use kiln_cuda::launch::pool::{pool_geometry, pool_output_shape};
use kiln_cuda::nvrtc::Compiler;
use kiln_cuda::{Buf, CudaError, Device, Kernels, Launcher};
use kiln_ir::ops::elementwise::ElementwiseOp;
use kiln_ir::ops::movement::PadMode;
use kiln_ir::ops::nn::{AutoPad, Conv, ConvTranspose, NnOp, Pool, PoolKind, Window};
use kiln_ir::{DType, Op, Tensor};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

struct Gpu {
    dev: Device,
    kernels: Kernels,
    dnn: std::sync::Arc<Dnn>,
}

/// Workspace for cuDNN: algorithms needing more are skipped.
const WORKSPACE: usize = 256 << 20;

impl Gpu {
    fn new() -> Gpu {
        let dev = Device::open(0).expect("a GPU");
        eprintln!("GPU: {} ({}), driver {}", dev.name, dev.arch(), dev.driver_version);
        let kernels = Kernels::new(&dev).expect("NVRTC");
        let dnn = Dnn::new(&dev.ctx).expect("cuDNN");
        eprintln!("cuDNN {}", Dnn::version().unwrap());
        Gpu { dev, kernels, dnn }
    }

    fn launcher(&self) -> Launcher<'_> {
        Launcher::new(&self.dev, &self.kernels)
    }

    fn up(&self, t: &Tensor) -> CudaSlice<u8> {
        let bytes: &[u8] = t.bytes();
        self.dev.stream.clone_htod(bytes).unwrap()
    }

    fn zeros(&self, bytes: usize) -> CudaSlice<u8> {
        self.dev.stream.alloc_zeros::<u8>(bytes.max(1)).unwrap()
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

fn cast(t: &Tensor, to: DType) -> Tensor {
    if t.dtype() == to {
        return t.clone();
    }
    cpu(Op::Elementwise(ElementwiseOp::Cast { to, saturate: false }), vec![Some(t.clone())], 1).remove(0)
}

/// A random tensor of `dtype` with values in [lo, hi).
fn random(dtype: DType, shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let v = uniform(shape.iter().product(), seed, lo, hi);
    cast(&Tensor::from_vec(shape.to_vec(), v).unwrap(), dtype)
}

fn rel_l2(want: &[f64], got: &[f64]) -> f64 {
    let num: f64 = want.iter().zip(got).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|a| a.powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-4 } else { 1e-2 }
}

/// `got` (any float dtype) against the FP32 reference `want`.
fn check(what: &str, want: &Tensor, got: &Tensor, tol: f64) {
    assert_eq!(want.shape(), got.shape(), "{what}: shape");
    let (w, g) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{what}: the GPU gave a non-finite value");
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
    eprintln!("{what}: relative L2 error {e:.2e}");
}

// ---------------------------------------------------------------------------------------
// Without a GPU: pool.cu compiles
// ---------------------------------------------------------------------------------------

#[test]
fn pool_kernels_compile_where_nvrtc_is_present() {
    let compiler = match Compiler::new("sm_90") {
        Ok(c) => c,
        Err(e @ (CudaError::LibraryMissing { .. } | CudaError::HeadersMissing { .. })) => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let compiled = compiler.compile(POOL.name, POOL.code).unwrap_or_else(|e| panic!("{e}"));
    for t in ["f32", "f16", "bf16"] {
        for k in ["pool", "global_pool"] {
            let name = format!("kiln_{k}_{t}");
            assert!(compiled.ptx.contains(&format!(".entry {name}(")), "no kernel {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Conv
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ConvCase {
    name: &'static str,
    x: Vec<usize>,
    w: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    bias: bool,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    x: &[usize],
    w: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    group: usize,
    bias: bool,
) -> ConvCase {
    ConvCase {
        name,
        x: x.to_vec(),
        w: w.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        group,
        bias,
    }
}

fn conv_cases() -> Vec<ConvCase> {
    let (s1, d1) = ([1, 1], [1, 1]);
    vec![
        case("3x3 pad 1", &[2, 8, 13, 11], &[16, 8, 3, 3], &s1, &d1, &[1, 1, 1, 1], 1, false),
        case("3x3 pad 1 + bias", &[2, 8, 13, 11], &[16, 8, 3, 3], &s1, &d1, &[1, 1, 1, 1], 1, true),
        case("strided 3x3", &[1, 16, 17, 17], &[32, 16, 3, 3], &[2, 2], &d1, &[1, 1, 1, 1], 1, true),
        case("strided 7x7 stem", &[1, 3, 64, 64], &[16, 3, 7, 7], &[2, 2], &d1, &[3, 3, 3, 3], 1, true),
        case("dilated", &[1, 8, 20, 20], &[8, 8, 3, 3], &s1, &[2, 3], &[2, 3, 2, 3], 1, false),
        case("grouped", &[2, 12, 10, 10], &[16, 3, 3, 3], &s1, &d1, &[1, 1, 1, 1], 4, true),
        case("depthwise", &[1, 32, 14, 14], &[32, 1, 3, 3], &s1, &d1, &[1, 1, 1, 1], 32, true),
        case("depthwise strided", &[1, 32, 15, 15], &[32, 1, 3, 3], &[2, 2], &d1, &[1, 1, 1, 1], 32, false),
        case("1x1", &[2, 24, 9, 9], &[40, 24, 1, 1], &s1, &d1, &[0, 0, 0, 0], 1, true),
        case("1x1 stride 2", &[1, 64, 56, 56], &[128, 64, 1, 1], &[2, 2], &d1, &[0, 0, 0, 0], 1, false),
        case("no pads, rectangular", &[1, 4, 9, 12], &[6, 4, 2, 5], &[1, 2], &d1, &[0, 0, 0, 0], 1, true),
        case("asymmetric pads cuDNN can take", &[1, 4, 8, 8], &[4, 4, 3, 3], &[2, 2], &d1, &[1, 1, 0, 0], 1, false),
        case("ResNet 3x3 [1,64,56,56]", &[1, 64, 56, 56], &[64, 64, 3, 3], &s1, &d1, &[1, 1, 1, 1], 1, true),
        case("1-D", &[2, 6, 30], &[10, 6, 5], &[2], &[1], &[2, 2], 1, true),
        case("1-D grouped dilated", &[1, 8, 25], &[8, 4, 3], &[1], &[2], &[2, 2], 2, false),
        case("3-D", &[1, 4, 6, 7, 8], &[6, 4, 3, 3, 3], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1, 1, 1, 1], 1, true),
    ]
}

fn conv_op(c: &ConvCase) -> Conv {
    Conv {
        window: Window {
            kernel_shape: None,
            strides: Some(c.strides.clone()),
            dilations: Some(c.dilations.clone()),
            pads: Some(c.pads.clone()),
            auto_pad: AutoPad::NotSet,
        },
        group: c.group,
    }
}

/// Runs geometry `g` on the GPU in `dtype` (inputs given in `dtype`), returns Y.
fn gpu_conv(gpu: &Gpu, g: &ConvGeometry, dtype: DType, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (xd, wd) = (gpu.up(x), gpu.up(w));
    let bd = b.map(|b| gpu.up(b));
    let y_shape = g.y_shape();
    let yd = gpu.zeros(y_shape.iter().product::<usize>() * dtype.size());
    let ws = gpu.zeros(WORKSPACE);
    gpu.dnn
        .conv_forward(
            &gpu.dev.stream,
            gpu.buf(&xd),
            gpu.buf(&wd),
            bd.as_ref().map(|b| gpu.buf(b)),
            gpu.buf(&yd),
            g,
            dtype,
            gpu.buf(&ws),
        )
        .unwrap_or_else(|e| panic!("{g:?} {dtype}: {e}"));
    gpu.dev.stream.synchronize().unwrap();
    gpu.down(&yd, dtype, &y_shape)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn conv_matches_cpu() {
    let gpu = Gpu::new();
    for (k, c) in conv_cases().iter().enumerate() {
        let op = conv_op(c);
        let g = ConvGeometry::conv(&op, &c.x, &c.w).unwrap();
        let plan = gpu.dnn.plan_conv(&g, DType::F32, Default::default()).unwrap();
        eprintln!(
            "{}: {} algorithms: {:?}",
            c.name,
            plan.algos().len(),
            plan.algos().iter().map(|a| a.id).collect::<Vec<_>>()
        );
        let seed = 100 + k as u64 * 7;
        let x = random(DType::F32, &c.x, seed, -1.0, 1.0);
        let w = random(DType::F32, &c.w, seed + 1, -0.5, 0.5);
        let b = c.bias.then(|| random(DType::F32, &[c.w[0]], seed + 2, -1.0, 1.0));
        for dtype in [DType::F32, DType::F16] {
            // The reference: FP32 on the inputs as rounded to `dtype`.
            let (xt, wt, bt) = (cast(&x, dtype), cast(&w, dtype), b.as_ref().map(|b| cast(b, dtype)));
            let mut inputs = vec![Some(cast(&xt, DType::F32)), Some(cast(&wt, DType::F32))];
            if let Some(bt) = &bt {
                inputs.push(Some(cast(bt, DType::F32)));
            }
            let want = cpu(Op::Nn(NnOp::Conv(op.clone())), inputs, 1).remove(0);
            assert_eq!(want.shape(), g.y_shape().as_slice(), "{}: shapes agree with the IR", c.name);
            let got = gpu_conv(&gpu, &g, dtype, &xt, &wt, bt.as_ref());
            check(&format!("Conv {} {dtype}", c.name), &want, &got, tol(dtype));
        }
    }
}

/// SAME_UPPER with stride 2 gives pads (0, 1): cuDNN cannot take them, so the input is
/// padded with the Pad kernel first, as `ConvGeometry::prepad` says.
#[test]
#[ignore = "needs a CUDA GPU"]
fn conv_with_asymmetric_pads_after_prepad() {
    let gpu = Gpu::new();
    let op = Conv {
        window: Window { strides: Some(vec![2, 2]), auto_pad: AutoPad::SameUpper, ..Window::default() },
        group: 1,
    };
    let (xs, ws) = ([1, 8, 16, 16], [8, 8, 3, 3]);
    let g = ConvGeometry::conv(&op, &xs, &ws).unwrap();
    let x = random(DType::F32, &xs, 5, -1.0, 1.0);
    let w = random(DType::F32, &ws, 6, -0.5, 0.5);
    let (xd, wd) = (gpu.up(&x), gpu.up(&w));
    let y = gpu.zeros(g.y_shape().iter().product::<usize>() * 4);
    let wsd = gpu.zeros(WORKSPACE);
    let err = gpu
        .dnn
        .conv_forward(&gpu.dev.stream, gpu.buf(&xd), gpu.buf(&wd), None, gpu.buf(&y), &g, DType::F32, gpu.buf(&wsd))
        .unwrap_err();
    assert!(matches!(err, CudaError::Unsupported { .. }), "{err}");
    let (pads, padded) = g.prepad().unwrap();
    let pads: Vec<(i64, i64)> = pads.iter().map(|&(b, e)| (b as i64, e as i64)).collect();
    let xp = gpu.zeros(padded.x_shape().iter().product::<usize>() * 4);
    gpu.launcher().pad(DType::F32, PadMode::Constant, (&gpu.buf(&xd), &xs), &pads, 0.0, &gpu.buf(&xp)).unwrap();
    gpu.dnn
        .conv_forward(
            &gpu.dev.stream,
            gpu.buf(&xp),
            gpu.buf(&wd),
            None,
            gpu.buf(&y),
            &padded,
            DType::F32,
            gpu.buf(&wsd),
        )
        .unwrap();
    let got = gpu.down(&y, DType::F32, &g.y_shape());
    let want = cpu(Op::Nn(NnOp::Conv(op)), vec![Some(x), Some(w)], 1).remove(0);
    check("Conv SAME_UPPER stride 2 (pre-padded)", &want, &got, 1e-4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn conv_transpose_matches_cpu() {
    let gpu = Gpu::new();
    // (name, x, w, strides, pads, output_padding, group, bias)
    type Ct = (&'static str, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, usize, bool);
    let cases: Vec<Ct> = vec![
        ("stride 1 pad 1", vec![1, 8, 9, 9], vec![8, 6, 3, 3], vec![1, 1], vec![1, 1, 1, 1], vec![0, 0], 1, true),
        (
            "stride 2 output_padding 1",
            vec![2, 16, 7, 7],
            vec![16, 8, 3, 3],
            vec![2, 2],
            vec![1, 1, 1, 1],
            vec![1, 1],
            1,
            false,
        ),
        (
            "stride 2 kernel 4 grouped",
            vec![1, 8, 6, 5],
            vec![8, 3, 4, 4],
            vec![2, 2],
            vec![1, 1, 1, 1],
            vec![0, 0],
            2,
            true,
        ),
        ("1-D", vec![1, 4, 10], vec![4, 5, 3], vec![3], vec![0, 0], vec![2], 1, true),
    ];
    for (k, (name, xs, wsh, strides, pads, op_pad, group, bias)) in cases.into_iter().enumerate() {
        let op = ConvTranspose {
            window: Window { strides: Some(strides), pads: Some(pads), ..Window::default() },
            group,
            output_padding: Some(op_pad),
            output_shape: None,
        };
        let g = ConvGeometry::conv_transpose(&op, &xs, &wsh).unwrap();
        let seed = 300 + k as u64 * 5;
        let x = random(DType::F32, &xs, seed, -1.0, 1.0);
        let w = random(DType::F32, &wsh, seed + 1, -0.5, 0.5);
        let b = bias.then(|| random(DType::F32, &[g.out_channels], seed + 2, -1.0, 1.0));
        for dtype in [DType::F32, DType::F16] {
            let (xt, wt, bt) = (cast(&x, dtype), cast(&w, dtype), b.as_ref().map(|b| cast(b, dtype)));
            let mut inputs = vec![Some(cast(&xt, DType::F32)), Some(cast(&wt, DType::F32))];
            if let Some(bt) = &bt {
                inputs.push(Some(cast(bt, DType::F32)));
            }
            let want = cpu(Op::Nn(NnOp::ConvTranspose(op.clone())), inputs, 1).remove(0);
            assert_eq!(want.shape(), g.y_shape().as_slice(), "{name}: shapes agree with the IR");
            let got = gpu_conv(&gpu, &g, dtype, &xt, &wt, bt.as_ref());
            check(&format!("ConvTranspose {name} {dtype}"), &want, &got, tol(dtype));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------------------

fn pool_op(
    kind: PoolKind,
    kernel: &[usize],
    strides: &[usize],
    dilations: Option<&[usize]>,
    pads: &[usize],
    ceil: bool,
) -> Pool {
    Pool {
        kind,
        window: Window {
            kernel_shape: Some(kernel.to_vec()),
            strides: Some(strides.to_vec()),
            dilations: dilations.map(|d| d.to_vec()),
            pads: Some(pads.to_vec()),
            auto_pad: AutoPad::NotSet,
        },
        ceil_mode: ceil,
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pools_match_cpu() {
    let gpu = Gpu::new();
    let l = gpu.launcher();
    let max = PoolKind::Max { column_major_indices: false };
    let avg_ex = PoolKind::Average { count_include_pad: false };
    let avg_in = PoolKind::Average { count_include_pad: true };
    let cases: Vec<(&str, Vec<usize>, Pool)> = vec![
        ("ResNet max 3x3/2", vec![1, 64, 112, 112], pool_op(max, &[3, 3], &[2, 2], None, &[1, 1, 1, 1], false)),
        ("max 2x2/2", vec![2, 8, 10, 9], pool_op(max, &[2, 2], &[2, 2], None, &[0, 0, 0, 0], false)),
        ("max ceil_mode", vec![1, 4, 11, 11], pool_op(max, &[3, 3], &[2, 2], None, &[0, 0, 0, 0], true)),
        ("max dilated", vec![1, 4, 15, 15], pool_op(max, &[3, 3], &[1, 2], Some(&[2, 2]), &[2, 1, 2, 1], false)),
        ("avg exclude pad", vec![2, 8, 13, 13], pool_op(avg_ex, &[3, 3], &[2, 2], None, &[1, 1, 1, 1], false)),
        ("avg include pad", vec![2, 8, 13, 13], pool_op(avg_in, &[3, 3], &[2, 2], None, &[1, 1, 1, 1], false)),
        ("avg include pad ceil", vec![1, 4, 12, 12], pool_op(avg_in, &[3, 3], &[2, 2], None, &[1, 0, 1, 0], true)),
        ("avg exclude pad ceil", vec![1, 4, 12, 12], pool_op(avg_ex, &[3, 3], &[2, 2], None, &[1, 0, 1, 0], true)),
        ("avg 7x7 global-like", vec![1, 64, 7, 7], pool_op(avg_ex, &[7, 7], &[1, 1], None, &[0, 0, 0, 0], false)),
        ("max 1-D", vec![2, 3, 40], pool_op(max, &[4], &[3], None, &[1, 2], false)),
        ("avg 3-D", vec![1, 2, 6, 7, 8], pool_op(avg_in, &[2, 3, 3], &[2, 2, 2], None, &[0, 1, 1, 1, 1, 0], false)),
    ];
    for (k, (name, xs, p)) in cases.into_iter().enumerate() {
        let axes = pool_geometry(&p, &xs).unwrap();
        let out = pool_output_shape(&xs, &axes);
        let x = random(DType::F32, &xs, 500 + k as u64, -2.0, 2.0);
        for dtype in [DType::F32, DType::F16] {
            let xt = cast(&x, dtype);
            let is_max = matches!(p.kind, PoolKind::Max { .. });
            let want_all =
                cpu(Op::Nn(NnOp::Pool(p.clone())), vec![Some(cast(&xt, DType::F32))], if is_max { 2 } else { 1 });
            let want = &want_all[0];
            assert_eq!(want.shape(), out.as_slice(), "{name}: shapes agree with the IR");
            let xd = gpu.up(&xt);
            let yd = gpu.zeros(out.iter().product::<usize>() * dtype.size());
            let id = gpu.zeros(out.iter().product::<usize>() * 8);
            let idx_buf = gpu.buf(&id);
            l.pool(dtype, p.kind, (&gpu.buf(&xd), &xs), &axes, &gpu.buf(&yd), is_max.then_some(&idx_buf))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = gpu.down(&yd, dtype, &out);
            check(&format!("{name} {dtype}"), want, &got, tol(dtype));
            // Indices only where the values are distinct (FP32); equal values may tie.
            if is_max && dtype == DType::F32 && want_all.len() > 1 {
                let gi = gpu.down(&id, DType::I64, &out);
                assert_eq!(want_all[1].to_f64_vec().unwrap(), gi.to_f64_vec().unwrap(), "{name}: indices");
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn global_pools_match_cpu() {
    let gpu = Gpu::new();
    let l = gpu.launcher();
    for (k, xs) in
        [vec![1, 64, 56, 56], vec![2, 512, 7, 7], vec![3, 5, 17], vec![1, 3, 4, 5, 6]].into_iter().enumerate()
    {
        let x = random(DType::F32, &xs, 700 + k as u64, -2.0, 3.0);
        let mut out = xs[..2].to_vec();
        out.resize(xs.len(), 1);
        for kind in [PoolKind::Average { count_include_pad: false }, PoolKind::Max { column_major_indices: false }] {
            for dtype in [DType::F32, DType::F16] {
                let xt = cast(&x, dtype);
                let want = cpu(Op::Nn(NnOp::GlobalPool(kind)), vec![Some(cast(&xt, DType::F32))], 1).remove(0);
                let xd = gpu.up(&xt);
                let yd = gpu.zeros(out.iter().product::<usize>() * dtype.size());
                l.global_pool(dtype, kind, (&gpu.buf(&xd), &xs), &gpu.buf(&yd)).unwrap();
                let got = gpu.down(&yd, dtype, &out);
                check(&format!("Global {kind:?} {xs:?} {dtype}"), &want, &got, tol(dtype));
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn launch_errors_are_errors() {
    let gpu = Gpu::new();
    let l = gpu.launcher();
    let p = pool_op(PoolKind::Max { column_major_indices: false }, &[2, 2], &[2, 2], None, &[0; 4], false);
    let xs = [1, 2, 8, 8];
    let axes = pool_geometry(&p, &xs).unwrap();
    let (xd, small) = (gpu.zeros(2 * 64 * 4), gpu.zeros(4));
    let e = l.pool(DType::F32, p.kind, (&gpu.buf(&xd), &xs), &axes, &gpu.buf(&small), None).unwrap_err();
    assert!(matches!(e, CudaError::BufferTooSmall { .. }), "{e}");
    let e = l.pool(DType::I32, p.kind, (&gpu.buf(&xd), &xs), &axes, &gpu.buf(&xd), None).unwrap_err();
    assert!(matches!(e, CudaError::Unsupported { .. }), "{e}");
    let c = case("", &[1, 4, 8, 8], &[4, 4, 3, 3], &[1, 1], &[1, 1], &[1; 4], 1, false);
    let g = ConvGeometry::conv(&conv_op(&c), &c.x, &c.w).unwrap();
    let e = gpu
        .dnn
        .conv_forward(
            &gpu.dev.stream,
            gpu.buf(&small),
            gpu.buf(&xd),
            None,
            gpu.buf(&xd),
            &g,
            DType::F32,
            gpu.buf(&small),
        )
        .unwrap_err();
    assert!(matches!(e, CudaError::BufferTooSmall { .. }), "{e}");
}
