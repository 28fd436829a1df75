//! On a GPU: the elementwise kernels compiled by NVRTC match the host on random data, a
//! bad kernel is a compile error with NVRTC's log, and a second compile hits the cache.
//! Run by scripts/gpu-check on the device machine.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::f16;
use kiln_cuda::kernels::{BinaryCode, ELEMENTWISE, Strides, UnaryCode};
use kiln_cuda::nvrtc::Compiler;
use kiln_cuda::{CudaError, Device};

type HostFn = fn(f32) -> f32;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn rel_l2(want: &[f32], got: &[f32]) -> f64 {
    let num: f64 = want.iter().zip(got).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|a| f64::from(*a).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn setup() -> (Device, std::sync::Arc<cudarc::driver::CudaModule>) {
    let dev = Device::open(0).expect("a GPU");
    eprintln!("GPU: {} ({}), driver {}", dev.name, dev.arch(), dev.driver_version);
    let compiler = Compiler::new(&dev.arch()).expect("NVRTC");
    let compiled = compiler.compile(ELEMENTWISE.name, ELEMENTWISE.code).expect("compiles");
    let module = dev.ctx.load_module(Ptx::from_binary(compiled.cubin)).expect("cubin loads");
    (dev, module)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn broadcast_binary_matches_host_f32_and_f16() {
    let (dev, module) = setup();
    let s = &dev.stream;
    let (sa, sb, so) = ([3usize, 1, 5], [4usize, 1], [3usize, 4, 5]);
    let (a, b) = (random(15, 1), random(4, 2));
    let n = so.iter().product::<usize>();
    let strides = Strides::broadcast(&sa, &sb, &so).unwrap();
    for (code, f) in [
        (BinaryCode::Add, (|x, y| x + y) as fn(f32, f32) -> f32),
        (BinaryCode::Mul, |x, y| x * y),
        (BinaryCode::Max, f32::max),
    ] {
        let want: Vec<f32> = (0..n).map(|i| f(a[(i / 20) * 5 + i % 5], b[(i / 5) % 4])).collect();
        // f32
        let (da, db) = (s.clone_htod(&a).unwrap(), s.clone_htod(&b).unwrap());
        let mut dy = s.alloc_zeros::<f32>(n).unwrap();
        let func = module.load_function("kiln_binary_f32").unwrap();
        let (op, nn, rank) = (code as i32, n as i64, 3i32);
        let mut l = s.launch_builder(&func);
        l.arg(&op).arg(&da).arg(&db).arg(&mut dy).arg(&nn).arg(&rank).arg(&strides);
        unsafe { l.launch(LaunchConfig::for_num_elems(n as u32)) }.unwrap();
        let got = s.clone_dtoh(&dy).unwrap();
        assert!(rel_l2(&want, &got) < 1e-6, "{code:?} f32");
        // f16
        let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let (ha, hb) = (s.clone_htod(&h(&a)).unwrap(), s.clone_htod(&h(&b)).unwrap());
        let mut hy = s.alloc_zeros::<f16>(n).unwrap();
        let func = module.load_function("kiln_binary_f16").unwrap();
        let mut l = s.launch_builder(&func);
        l.arg(&op).arg(&ha).arg(&hb).arg(&mut hy).arg(&nn).arg(&rank).arg(&strides);
        unsafe { l.launch(LaunchConfig::for_num_elems(n as u32)) }.unwrap();
        let got: Vec<f32> = s.clone_dtoh(&hy).unwrap().iter().map(|x| x.to_f32()).collect();
        assert!(rel_l2(&want, &got) < 1e-2, "{code:?} f16");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn unary_matches_host() {
    let (dev, module) = setup();
    let s = &dev.stream;
    let n = 100_000usize;
    let x = random(n, 3);
    let func = module.load_function("kiln_unary_f32").unwrap();
    let cases: [(UnaryCode, HostFn); 4] = [
        (UnaryCode::Relu, |v| v.max(0.0)),
        (UnaryCode::Sigmoid, |v| 1.0 / (1.0 + (-v).exp())),
        (UnaryCode::Tanh, f32::tanh),
        (UnaryCode::Silu, |v| v / (1.0 + (-v).exp())),
    ];
    let dx = s.clone_htod(&x).unwrap();
    for (code, f) in cases {
        let mut dy = s.alloc_zeros::<f32>(n).unwrap();
        let (op, p0, p1, nn) = (code as i32, 0f32, 0f32, n as i64);
        let mut l = s.launch_builder(&func);
        l.arg(&op).arg(&p0).arg(&p1).arg(&dx).arg(&mut dy).arg(&nn);
        unsafe { l.launch(LaunchConfig::for_num_elems(n as u32)) }.unwrap();
        let got = s.clone_dtoh(&dy).unwrap();
        let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        assert!(rel_l2(&want, &got) < 1e-6, "{code:?}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_bad_kernel_reports_nvrtc_log_and_cache_hits() {
    let dev = Device::open(0).expect("a GPU");
    let dir = std::env::temp_dir().join(format!("kiln-cache-{}", std::process::id()));
    // SAFETY: tests in this file do not read the variable concurrently with this write.
    unsafe { std::env::set_var("KILN_CACHE_DIR", &dir) };
    let compiler = Compiler::new(&dev.arch()).expect("NVRTC");
    match compiler.compile("broken", "extern \"C\" __global__ void k() { undeclared = 1; }") {
        Err(CudaError::Compile { kernel, log, .. }) => {
            assert_eq!(kernel, "broken");
            assert!(log.contains("undeclared"), "{log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    let first = compiler.compile(ELEMENTWISE.name, ELEMENTWISE.code).unwrap();
    let second = compiler.compile(ELEMENTWISE.name, ELEMENTWISE.code).unwrap();
    assert!(!first.cached && second.cached);
    assert_eq!(first.cubin, second.cubin);
    assert!(first.ptx.contains(".entry kiln_unary_f32") || first.ptx.contains("kiln_unary_f32"));
    let _ = std::fs::remove_dir_all(dir);
}
