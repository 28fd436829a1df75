//! Shared test helpers: the CPU evaluator, random inputs, and the equivalence check
//! (CPU outputs before and after optimisation agree within a relative L2 error).
#![allow(dead_code)]

pub mod fixture;
pub mod models;

use kiln_ir::{DType, Dim, Graph, Op, Tensor};
use kiln_opt::{Optimizer, Report};

/// The CPU backend as the optimiser's constant evaluator.
pub fn cpu_eval(op: &Op, inputs: &[Option<Tensor>], n: usize) -> Result<Vec<Tensor>, String> {
    kiln_cpu::eval_op(op, inputs, n, &kiln_cpu::EvalContext::default()).map_err(|e| e.to_string())
}

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Random non-zero inputs for `graph`: floats in [-1, 1), integers in [0, int_range),
/// booleans; symbolic dims take the size `sym` gives them.
pub fn random_inputs(graph: &Graph, seed: u64, int_range: u64, sym: &dyn Fn(&str) -> usize) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    graph
        .inputs
        .iter()
        .map(|&o| {
            let fact = graph.fact(o).expect("graph input");
            let shape: Vec<usize> = fact
                .shape
                .as_ref()
                .expect("inputs have a rank")
                .0
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    Dim::Sym(s) => sym(s),
                    Dim::Unknown => 2,
                })
                .collect();
            let n: usize = shape.iter().product();
            match fact.dtype.expect("inputs have a dtype") {
                DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()).unwrap(),
                DType::I64 => Tensor::from_vec(shape, (0..n).map(|_| rng.below(int_range) as i64).collect()).unwrap(),
                DType::I32 => Tensor::from_vec(shape, (0..n).map(|_| rng.below(int_range) as i32).collect()).unwrap(),
                DType::Bool => Tensor::from_bools(shape, (0..n).map(|_| rng.below(2) == 1).collect()).unwrap(),
                d => panic!("no random inputs for dtype {d}"),
            }
        })
        .collect()
}

/// Relative L2 error of `got` against `want` (both read as f64).
pub fn rel_l2(want: &Tensor, got: &Tensor) -> f64 {
    let (a, b) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = a.iter().map(|x| x * x).sum();
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

/// Optimises `graph` at `level` with the CPU evaluator.
pub fn optimize(graph: &Graph, level: u8) -> (Graph, Report) {
    optimize_with_layout(graph, level, kiln_opt::Layout::Nchw)
}

/// Like `optimize`, asking conv regions for `layout`.
pub fn optimize_with_layout(graph: &Graph, level: u8, layout: kiln_opt::Layout) -> (Graph, Report) {
    let eval = cpu_eval;
    let options = kiln_opt::Options { evaluator: Some(&eval), layout, ..kiln_opt::Options::default() };
    let (g, report) = Optimizer::new(level).with_options(options).optimize(graph).expect("optimize");
    assert!(report.refused.is_empty(), "refused patches: {:#?}", report.refused);
    (g, report)
}

/// Runs `before` and `after` on the same inputs; every output must agree within `tol`
/// (relative L2) and keep its name, dtype and shape. Returns the largest error.
pub fn assert_same_outputs(before: &Graph, after: &Graph, inputs: &[Tensor], tol: f64) -> f64 {
    let want = kiln_cpu::run(before, inputs).expect("run before");
    let got = kiln_cpu::run(after, inputs).expect("run after");
    assert_eq!(want.len(), got.len());
    let mut worst = 0.0f64;
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        let name = before.outlet_name(before.outputs[k]);
        assert_eq!(name, after.outlet_name(after.outputs[k]), "output {k} renamed");
        assert_eq!(w.dtype(), g.dtype(), "output '{name}' dtype");
        assert_eq!(w.shape(), g.shape(), "output '{name}' shape");
        let e = if w.dtype().is_float() { rel_l2(w, g) } else { f64::from(u8::from(w.bytes() != g.bytes())) };
        assert!(e <= tol, "output '{name}': relative L2 error {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    worst
}

/// Optimises at `level` and checks equivalence on random inputs (seeded).
pub fn check_pass(graph: &Graph, level: u8, seed: u64) -> (Graph, Report) {
    let (after, report) = optimize(graph, level);
    let inputs = random_inputs(graph, seed, 3, &|_| 3);
    assert_same_outputs(graph, &after, &inputs, 1e-5);
    (after, report)
}

/// The op names of `graph`'s layers, in order.
pub fn ops(graph: &Graph) -> Vec<&'static str> {
    graph.nodes.iter().filter(|n| !matches!(n.op, Op::Input | Op::Constant(_))).map(|n| n.op.name()).collect()
}
