//! Loading a plan costs at most 1.2× its size plus 50 MB of host memory: weights stay in
//! the mapped file (views, not copies). Its own test binary: nothing else runs in the
//! process while the peak is measured.

use kiln_engine::meta::BackendKind;
use kiln_engine::{Builder, BuilderConfig, Runtime};
use kiln_ir::ops::elementwise::BinaryOp;
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, NetworkDefinition, Shape, Tensor};

/// (current, peak) resident bytes, from /proc (Linux).
fn rss() -> Option<(usize, usize)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<usize>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[test]
fn loading_maps_the_weights() {
    // Four 32 MiB weights (128 MiB): big enough that a copy would show.
    let n = 8 << 20;
    let mut net = NetworkDefinition::new("big");
    let mut x = net.add_input("x", DType::F32, Shape::known(&[n]));
    for i in 0..4 {
        let w = Tensor::from_vec(vec![n], (0..n).map(|j| (i * n + j) as f32).collect::<Vec<_>>()).unwrap();
        let c = net.add_constant(&format!("w{i}"), w);
        x = net.add(&format!("add{i}"), Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add)), &[x, c]).unwrap();
    }
    net.mark_output(x, "y").unwrap();
    let config = BuilderConfig { backend: BackendKind::Cpu, opt_level: 0, autotune: false, ..BuilderConfig::default() };
    let built = Builder::new(config).build_graph(&net.build(), "big").unwrap();
    let path = std::env::temp_dir().join(format!("kiln-host-memory-{}.kiln", std::process::id()));
    std::fs::write(&path, &built.bytes).unwrap();
    let size = built.bytes.len();
    drop(built);
    let Some((before, _)) = rss() else { return eprintln!("no /proc: skipped") };
    // Reset the peak to now (Linux ≥ 4.0), so VmHWM measures the load alone.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let engine = Runtime::default().load(&path).unwrap();
    let (after, peak) = rss().unwrap();
    let grew = if reset { peak.max(after) } else { after }.saturating_sub(before);
    let limit = size * 6 / 5 + (50 << 20);
    eprintln!("plan {size} B; loading grew the resident set by {grew} B (limit {limit} B, peak measured: {reset})");
    assert!(grew <= limit, "loading a {size}-byte plan took {grew} bytes of host memory");
    assert_eq!(engine.graph().nodes.len(), 9);
    std::fs::remove_file(&path).ok();
}
