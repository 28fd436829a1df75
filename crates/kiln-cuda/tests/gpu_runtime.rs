//! On a GPU: the runtime API an engine builds on — weights shared through a
//! `WeightStore`, kernel modules loaded from images (no NVRTC), asynchronous phases with
//! event timings, copies to and from caller-owned device memory, auto-tuning with a
//! timing cache, and forced tactics. One small network throughout: a cuDNN Conv (+bias),
//! a ReLU (Kiln's kernel), a Reshape, a cuBLASLt MatMul with a 2 MiB weight (a "large"
//! constant), a bias Add and a Tanh; outputs the logits and the conv features. Checked
//! against kiln-cpu with FP32's tolerance (relative L2 1e-4: a 16384-long reduction).

mod support;

use std::sync::{Arc, Mutex};

use kiln_cuda::memory::DeviceBuffer;
use kiln_cuda::weights::LARGE_WEIGHT_BYTES;
use kiln_cuda::{CudaError, Device, Executor, ModuleImage, Options, TimingCache, WeightStore};
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::nn::{AutoPad, Conv, NnOp, Window};
use kiln_ir::{DType, Graph, NetworkDefinition, Shape, Tensor};
use support::{bin, compare, mv, tensor, un};

const TOL: f64 = 1e-4;

/// The network's constants, shared (same `Bytes`) by every graph built from them.
struct Weights {
    conv_w: Tensor,
    conv_b: Tensor,
    fc_w: Tensor,
    fc_b: Tensor,
}

fn weights() -> Weights {
    Weights {
        conv_w: tensor(DType::F32, &[16, 8, 3, 3], 1),
        conv_b: tensor(DType::F32, &[16], 2),
        // 16·32·32 × 32 floats: 2 MiB, a large constant.
        fc_w: tensor(DType::F32, &[16 * 32 * 32, 32], 3),
        fc_b: tensor(DType::F32, &[32], 4),
    }
}

/// The same tensors (the same `Bytes`), as an engine re-binding a graph has.
fn weights_sharing(w: &Weights) -> Weights {
    Weights { conv_w: w.conv_w.clone(), conv_b: w.conv_b.clone(), fc_w: w.fc_w.clone(), fc_b: w.fc_b.clone() }
}

/// The network for a batch of `batch` images [8, 32, 32].
fn network(w: &Weights, batch: usize) -> Graph {
    let mut net = NetworkDefinition::new("runtime");
    let x = net.add_input("x", DType::F32, Shape::known(&[batch, 8, 32, 32]));
    let cw = net.add_constant("conv_w", w.conv_w.clone());
    let cb = net.add_constant("conv_b", w.conv_b.clone());
    let window = Window { pads: Some(vec![1, 1, 1, 1]), auto_pad: AutoPad::NotSet, ..Window::default() };
    let c = net.add("conv", Op::Nn(NnOp::Conv(Conv { window, group: 1 })), &[x, cw, cb]).unwrap();
    let r = net.add("relu", un(UnaryOp::Relu), &[c]).unwrap();
    let shape = net.add_constant("shape", Tensor::from_vec(vec![2], vec![batch as i64, 16 * 32 * 32]).unwrap());
    let flat = net.add("flat", mv(MovementOp::Reshape { allowzero: false }), &[r, shape]).unwrap();
    let fw = net.add_constant("fc_w", w.fc_w.clone());
    let fb = net.add_constant("fc_b", w.fc_b.clone());
    let m = net.add("fc", Op::Nn(NnOp::MatMul), &[flat, fw]).unwrap();
    let a = net.add("fc_bias", bin(BinaryOp::Add), &[m, fb]).unwrap();
    let y = net.add("tanh", un(UnaryOp::Tanh), &[a]).unwrap();
    net.mark_output(y, "logits").unwrap();
    net.mark_output(r, "features").unwrap();
    net.build()
}

use kiln_ir::Op;

fn device() -> Device {
    let dev = Device::open(0).expect("a GPU");
    eprintln!("GPU: {} ({}), driver {}", dev.name, dev.arch(), dev.driver_version);
    dev
}

fn inputs(batch: usize, seed: u64) -> Vec<Tensor> {
    vec![tensor(DType::F32, &[batch, 8, 32, 32], seed)]
}

fn check(case: &str, g: &Graph, inputs: &[Tensor], got: &[Tensor]) {
    let want = kiln_cpu::run(g, inputs).unwrap();
    assert_eq!(want.len(), got.len(), "{case}");
    for (k, (w, o)) in want.iter().zip(got).enumerate() {
        compare(case, &format!("output {k}"), w, o, TOL);
    }
}

/// The same results: two runs of the same algorithms (bit-identical in practice; a
/// tight tolerance so that a non-deterministic library algorithm is no failure).
fn same_bytes(case: &str, a: &[Tensor], b: &[Tensor]) {
    assert_eq!(a.len(), b.len(), "{case}");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        compare(case, &format!("output {k}"), x, y, 1e-6);
    }
}

fn opts() -> Options {
    Options { check_each_launch: true, ..Options::default() }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn library_versions_are_reported() {
    let v = kiln_cuda::lib_versions().unwrap();
    eprintln!("{v:?}");
    assert!(v.driver > 0 && v.nvrtc.0 > 0);
    assert!(v.cublaslt.is_some() && v.cudnn.is_some());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn executors_through_one_store_share_the_weights() {
    let dev = device();
    let w = weights();
    let g = network(&w, 2);
    let store = WeightStore::new();
    let mut a = Executor::with_store(&dev, &g, opts(), &store).unwrap();
    let (bytes, buffers) = (store.device_bytes(), store.buffers());
    eprintln!("store after one executor: {store:?}");
    // The 2 MiB weight has its own buffer; the small constants one pack.
    assert_eq!(buffers, 2);
    assert!(bytes >= w.fc_w.bytes().len() + w.conv_w.bytes().len());
    let mut b = Executor::with_store(&dev, &g, opts(), &store).unwrap();
    assert_eq!((store.device_bytes(), store.buffers()), (bytes, buffers), "a second executor uploaded again");
    assert!(Arc::ptr_eq(a.weight_store(), b.weight_store()));
    let x = inputs(2, 7);
    let (ya, yb) = (a.run(&x).unwrap(), b.run(&x).unwrap());
    check("store a", &g, &x, &ya);
    same_bytes("store a vs b", &ya, &yb);
    // The same constants bound to another batch: nothing uploaded again (the shape of
    // the Reshape is no weight, so even the small pack is the same).
    let g4 = network(&w, 4);
    let mut c = Executor::with_store(&dev, &g4, opts(), &store).unwrap();
    assert_eq!((store.device_bytes(), store.buffers()), (bytes, buffers), "the re-bound graph uploaded again");
    // Other small constants (a new bias): a new small pack only, the large weight shared.
    let w2 = Weights { fc_b: tensor(DType::F32, &[32], 5), ..weights_sharing(&w) };
    let g2 = network(&w2, 2);
    let mut e = Executor::with_store(&dev, &g2, opts(), &store).unwrap();
    let grown = store.device_bytes() - bytes;
    assert!(grown < LARGE_WEIGHT_BYTES, "a graph with one new bias added {grown} bytes");
    assert_eq!(store.buffers(), buffers + 1);
    check("store new bias", &g2, &x, &e.run(&x).unwrap());
    let x4 = inputs(4, 8);
    check("store batch 4", &g4, &x4, &c.run(&x4).unwrap());
    // Dropping executors leaves the others working (the store keeps the buffers).
    drop(a);
    same_bytes("after drop", &yb, &b.run(&x).unwrap());
    // Executor::new keeps its own store.
    let d = Executor::new(&dev, &g, opts()).unwrap();
    assert!(!Arc::ptr_eq(d.weight_store(), b.weight_store()));
    assert_eq!(d.weight_store().device_bytes(), bytes);
}

/// `images` with every module's arch replaced.
fn with_arch(images: &[ModuleImage], arch: &str) -> Vec<ModuleImage> {
    images.iter().map(|m| ModuleImage { arch: arch.into(), ..m.clone() }).collect()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn module_images_load_without_nvrtc() {
    let dev = device();
    let g = network(&weights(), 2);
    let x = inputs(2, 9);
    let mut a = Executor::new(&dev, &g, opts()).unwrap();
    let images = a.module_images().unwrap();
    eprintln!("{images:?}");
    assert!(!images.is_empty());
    assert!(a.compiled_modules() >= images.len());
    assert!(images.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
    assert!(images.iter().all(|m| m.arch == dev.arch() && !m.cubin.is_empty() && !m.ptx.is_empty()));
    let want = a.run(&x).unwrap();
    check("nvrtc", &g, &x, &want);

    // The images instead of NVRTC: nothing compiled, the same results.
    let o = Options { images: Some(Arc::new(images.clone())), ..opts() };
    let mut b = Executor::new(&dev, &g, o).unwrap();
    assert_eq!(b.compiled_modules(), 0);
    assert!(b.ptx_jit_modules().is_empty());
    assert_eq!(b.module_images().unwrap(), images);
    same_bytes("from images", &want, &b.run(&x).unwrap());

    // Built for another GPU: refused without PTX fallback, naming both architectures.
    let foreign = Arc::new(with_arch(&images, "sm_10"));
    match Executor::new(&dev, &g, Options { images: Some(foreign.clone()), ..opts() }) {
        Err(CudaError::PlanMismatch(msg)) => {
            let named = images.iter().any(|m| msg.contains(&format!("'{}'", m.name)));
            assert!(msg.contains("sm_10") && msg.contains(&dev.arch()) && named, "{msg}")
        }
        other => panic!("expected a plan mismatch, got {other:?}"),
    }
    // With the fallback, every module is JIT-compiled from its PTX.
    let o = Options { images: Some(foreign), allow_ptx_fallback: true, ..opts() };
    let mut c = Executor::new(&dev, &g, o).unwrap();
    assert_eq!(c.compiled_modules(), 0);
    let mut jit = c.ptx_jit_modules();
    jit.sort();
    assert_eq!(jit, images.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
    check("ptx fallback", &g, &x, &c.run(&x).unwrap());

    // A module the images lack is an error naming it, never a silent compile.
    let missing = images[0].name.clone();
    let o = Options { images: Some(Arc::new(images[1..].to_vec())), ..opts() };
    match Executor::new(&dev, &g, o) {
        Err(CudaError::PlanMismatch(msg)) => assert!(msg.contains(&missing), "{msg}"),
        other => panic!("expected a plan mismatch naming '{missing}', got {other:?}"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn phases_are_timed_and_match_run() {
    let dev = device();
    let g = network(&weights(), 4);
    for use_cuda_graph in [true, false] {
        let o = Options { use_cuda_graph, ..opts() };
        let mut ex = Executor::new(&dev, &g, o.clone()).unwrap();
        let x = inputs(4, 11);
        let want = ex.run(&x).unwrap();
        check("run", &g, &x, &want);
        assert_eq!(ex.input_slots()[0].name, "x");
        assert_eq!(ex.input_slots()[0].shape, [4, 8, 32, 32]);
        assert_eq!(ex.output_slots().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["logits", "features"]);
        assert_eq!(ex.output_slots()[1].bytes, 4 * 16 * 32 * 32 * 4);

        // begin with transfers, finish, the staged outputs.
        ex.begin(Some(&x)).unwrap();
        let t = ex.finish().unwrap();
        eprintln!("cuda graph {use_cuda_graph}: {t:?}");
        assert!(t.h2d_ms > 0.0 && t.compute_ms > 0.0 && t.d2h_ms > 0.0 && t.enqueue_ms > 0.0, "{t:?}");
        same_bytes("begin/finish", &want, &ex.staged_outputs().unwrap());

        // upload → enqueue → download.
        let x2 = inputs(4, 12);
        ex.upload_inputs(&x2).unwrap();
        ex.enqueue().unwrap();
        let got2 = ex.download_outputs().unwrap();
        check("phases", &g, &x2, &got2);

        // Compute only (inputs in place): no transfer times, nothing staged.
        ex.upload_inputs(&x).unwrap();
        ex.begin(None).unwrap();
        assert!(matches!(ex.begin(None), Err(CudaError::Graph(_))), "begin twice");
        let t = ex.finish().unwrap();
        assert!(t.compute_ms > 0.0 && t.h2d_ms == 0.0 && t.d2h_ms == 0.0, "{t:?}");
        assert!(ex.staged_outputs().is_err());
        same_bytes("compute only", &want, &ex.download_outputs().unwrap());
        assert!(matches!(ex.finish(), Err(CudaError::Graph(_))), "finish without begin");

        // Two executors driven from one thread: begin both, then finish both.
        let mut other = Executor::new(&dev, &g, o).unwrap();
        ex.begin(Some(&x)).unwrap();
        other.begin(Some(&x2)).unwrap();
        let (ta, tb) = (ex.finish().unwrap(), other.finish().unwrap());
        assert!(ta.compute_ms > 0.0 && tb.compute_ms > 0.0);
        same_bytes("concurrent a", &want, &ex.staged_outputs().unwrap());
        same_bytes("concurrent b", &got2, &other.staged_outputs().unwrap());

        // A wrong input is refused before anything is enqueued.
        match ex.upload_inputs(&inputs(2, 1)) {
            Err(CudaError::Input { name, .. }) => assert_eq!(name, "x"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn an_executor_runs_on_another_thread() {
    let dev = device();
    let g = network(&weights(), 2);
    let mut ex = Executor::new(&dev, &g, opts()).unwrap();
    let x = inputs(2, 13);
    let want = ex.run(&x).unwrap();
    let (ex, got) = std::thread::spawn(move || {
        let got = ex.run(&x).unwrap();
        (ex, got)
    })
    .join()
    .unwrap();
    same_bytes("other thread", &want, &got);
    drop(ex);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn device_memory_in_and_out() {
    let dev = device();
    let g = network(&weights(), 2);
    let mut ex = Executor::new(&dev, &g, opts()).unwrap();
    let x = inputs(2, 14);
    let want = ex.run(&x).unwrap();
    let din = DeviceBuffer::alloc(&dev.ctx, x[0].bytes().len(), "caller input").unwrap();
    din.upload(&dev.stream, 0, x[0].bytes()).unwrap();
    let slots = ex.output_slots();
    let outs: Vec<DeviceBuffer> =
        slots.iter().map(|s| DeviceBuffer::alloc(&dev.ctx, s.bytes, "caller output").unwrap()).collect();
    ex.copy_input_from_device(0, din.ptr(), din.bytes()).unwrap();
    ex.enqueue().unwrap();
    for (i, o) in outs.iter().enumerate() {
        ex.copy_output_to_device(i, o.ptr(), o.bytes()).unwrap();
    }
    ex.synchronize().unwrap();
    for ((o, s), w) in outs.iter().zip(&slots).zip(&want) {
        let mut host = vec![0u8; s.bytes];
        o.download(&dev.stream, 0, &mut host).unwrap();
        let got = Tensor::from_bytes(s.dtype, s.shape.clone(), kiln_ir::tensor::Bytes::from(host)).unwrap();
        compare("device memory", &s.name, w, &got, 1e-6);
    }
    // Sizes and indices are checked, naming the input or output.
    match ex.copy_input_from_device(0, din.ptr(), din.bytes() - 4) {
        Err(CudaError::Input { name, msg }) => assert!(name == "x" && msg.contains("bytes"), "{msg}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    assert!(matches!(ex.copy_input_from_device(1, din.ptr(), din.bytes()), Err(CudaError::Input { .. })));
    match ex.copy_output_to_device(1, outs[1].ptr(), outs[1].bytes() - 1) {
        Err(CudaError::Output { name, .. }) => assert_eq!(name, "features"),
        other => panic!("expected an output error, got {other:?}"),
    }
    assert!(matches!(ex.copy_output_to_device(2, outs[0].ptr(), outs[0].bytes()), Err(CudaError::Output { .. })));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn autotuning_uses_the_timing_cache_and_tactics_reproduce() {
    let dev = device();
    let g = network(&weights(), 4);
    let x = inputs(4, 15);
    let cache = Arc::new(Mutex::new(TimingCache::new()));
    let tuned = Options { autotune: true, timing_cache: Some(cache.clone()), ..opts() };
    let mut a = Executor::new(&dev, &g, tuned.clone()).unwrap();
    check("autotuned", &g, &x, &a.run(&x).unwrap());
    let tactics = a.tactics();
    for t in &tactics {
        eprintln!("{t:?}");
    }
    assert_eq!(tactics.len(), a.launches().len());
    assert!(tactics.iter().enumerate().all(|(i, t)| t.launch == i && !t.name.is_empty() && !t.node.is_empty()));
    let tuned_launches: Vec<_> = tactics.iter().filter(|t| t.choice.is_some()).collect();
    let nodes: Vec<&str> = tuned_launches.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, ["conv", "fc"]);
    assert!(tuned_launches.iter().all(|t| t.time_ms.is_some_and(|ms| ms > 0.0)));
    assert!(tactics.iter().any(|t| t.name.starts_with("cublasLt algo")));
    assert!(tactics.iter().any(|t| t.name.starts_with("cudnn ")));
    assert!(tactics.iter().any(|t| t.name.starts_with("kiln ") && t.name.contains("elementwise.cu")));
    {
        let c = cache.lock().unwrap();
        assert_eq!((c.len(), c.hits(), c.misses()), (2, 0, 2));
    }

    // A second build hits the cache for both and chooses the same.
    let b = Executor::new(&dev, &g, tuned).unwrap();
    {
        let c = cache.lock().unwrap();
        assert_eq!((c.len(), c.hits(), c.misses()), (2, 2, 2));
    }
    let choices: Vec<Option<usize>> = tactics.iter().map(|t| t.choice).collect();
    assert_eq!(b.tactics().iter().map(|t| t.choice).collect::<Vec<_>>(), choices);

    // The cache survives a file round trip.
    let path = std::env::temp_dir().join(format!("kiln-gpu-timing-{}.json", std::process::id()));
    cache.lock().unwrap().save(&path).unwrap();
    assert_eq!(TimingCache::load(&path).unwrap().len(), 2);
    let _ = std::fs::remove_file(&path);

    // Forced tactics: the same choices, nothing timed, the same results.
    let forced = Options { tactics: Some(choices.clone()), ..opts() };
    let mut f = Executor::new(&dev, &g, forced).unwrap();
    let ft = f.tactics();
    assert_eq!(ft.iter().map(|t| t.choice).collect::<Vec<_>>(), choices);
    assert_eq!(ft.iter().map(|t| &t.name).collect::<Vec<_>>(), tactics.iter().map(|t| &t.name).collect::<Vec<_>>());
    assert!(ft.iter().all(|t| t.time_ms.is_none()));
    same_bytes("forced", &a.run(&x).unwrap(), &f.run(&x).unwrap());

    // Out of range, for another launch count, or on a launch without candidates: plan
    // mismatches naming the node.
    let fc = tactics.iter().position(|t| t.node == "fc").unwrap();
    let mut bad = choices.clone();
    bad[fc] = Some(1000);
    match Executor::new(&dev, &g, Options { tactics: Some(bad), ..opts() }) {
        Err(CudaError::PlanMismatch(msg)) => assert!(msg.contains("'fc'") && msg.contains("1000"), "{msg}"),
        other => panic!("expected a plan mismatch, got {other:?}"),
    }
    let mut short = choices.clone();
    short.pop();
    assert!(matches!(
        Executor::new(&dev, &g, Options { tactics: Some(short), ..opts() }),
        Err(CudaError::PlanMismatch(_))
    ));
    let relu = tactics.iter().position(|t| t.node == "relu").unwrap();
    let mut on_kernel = choices;
    on_kernel[relu] = Some(0);
    match Executor::new(&dev, &g, Options { tactics: Some(on_kernel), ..opts() }) {
        Err(CudaError::PlanMismatch(msg)) => assert!(msg.contains("'relu'"), "{msg}"),
        other => panic!("expected a plan mismatch, got {other:?}"),
    }
}

/// Host only: what the GPU tests above rely on — the network plans and lowers to a
/// cuDNN conv, Kiln kernels and one cuBLASLt product, and its constants are one large
/// and several small ones.
#[test]
fn the_test_network_plans_on_the_host() {
    use kiln_cuda::executor::{Kernel, lower};
    let w = weights();
    let g = network(&w, 2);
    let plan = kiln_cuda::ExecutionPlan::new(&g).unwrap();
    let sizes: Vec<(String, usize)> = plan.weights.iter().map(|e| (plan.slot(e.slot).name.clone(), e.bytes)).collect();
    eprintln!("weights: {sizes:?}");
    let large: Vec<&str> = sizes.iter().filter(|(_, b)| *b >= LARGE_WEIGHT_BYTES).map(|(n, _)| n.as_str()).collect();
    assert_eq!(large, ["fc_w"]);
    // The Reshape's shape is a build-time fact, not a weight: a re-bound graph has the
    // same constants, hence the same small pack.
    assert!(!sizes.iter().any(|(n, _)| n == "shape"));
    let names = |ids: &[usize]| ids.iter().map(|&i| plan.slot(i).name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&plan.inputs), ["x"]);
    assert_eq!(names(&plan.outputs), ["logits", "features"]);
    let lowered = lower(&plan, &Options::default()).unwrap();
    let kinds: Vec<(String, &str)> = lowered
        .iter()
        .flat_map(|(i, ks)| ks.iter().map(move |k| (*i, k)))
        .map(|(i, k)| {
            let kind = match k {
                Kernel::Conv { .. } => "conv",
                Kernel::Matmul { .. } => "matmul",
                _ => "kernel",
            };
            (plan.steps[i].node.clone(), kind)
        })
        .collect();
    eprintln!("launches: {kinds:?}");
    let tuned: Vec<&str> = kinds.iter().filter(|(_, k)| *k != "kernel").map(|(n, _)| n.as_str()).collect();
    assert_eq!(tuned, ["conv", "fc"]);
    assert!(kinds.iter().any(|(n, _)| n == "relu"));
    // The reference runs it, and not to zeros (random non-zero data through the ReLU).
    let y = kiln_cpu::run(&g, &inputs(2, 1)).unwrap();
    assert!(y[0].to_f64_vec().unwrap().iter().any(|v| v.abs() > 1e-3));
}
