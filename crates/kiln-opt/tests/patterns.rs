//! Decomposed softmax/norm/activation patterns, attention fusion and horizontal fusion,
//! with their near misses (which must leave the graph alone).
//!
//! Each pass is run alone (`run_to_fixpoint` with its own rewrites), so that the tests
//! do not depend on what the other passes do; CPU outputs must agree before and after.

mod support;

use kiln_ir::ops::attention::Attention;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::nn::{Conv, Gemm, NnOp, Window};
use kiln_ir::ops::reduce::{self, Reduce, ReduceKind, ReduceOp, Softmax, SoftmaxKind};
use kiln_ir::ops::{AttentionOp, ElementwiseOp, MovementOp};
use kiln_ir::{DType, Dim, Graph, NetworkDefinition, Op, OutletId, Shape, Tensor};
use kiln_opt::passes::{attention, horizontal, norm};
use kiln_opt::rewrite::{Rewrite, run_to_fixpoint};
use kiln_opt::{Options, Report};
use support::*;

// ---------------------------------------------------------------------------------
// Helpers.

/// Runs `rewrites` alone to a fixpoint and checks the outputs on random inputs.
fn run(g: &Graph, rewrites: Vec<&'static dyn Rewrite>, seed: u64) -> Graph {
    let after = apply(g, rewrites);
    let inputs = random_inputs(g, seed, 3, &|_| 3);
    assert_same_outputs(g, &after, &inputs, 1e-5);
    after
}

fn apply(g: &Graph, rewrites: Vec<&'static dyn Rewrite>) -> Graph {
    let eval = cpu_eval;
    let options = Options { evaluator: Some(&eval), ..Options::default() };
    let mut after = g.clone();
    let mut report = Report::default();
    run_to_fixpoint(&mut after, &rewrites, &options, &mut report).expect("fixpoint");
    assert!(report.refused.is_empty(), "refused: {:#?}", report.refused);
    after
}

fn count(g: &Graph, op: &str) -> usize {
    ops(g).iter().filter(|&&o| o == op).count()
}

struct B {
    n: NetworkDefinition,
    rng: Rng,
    k: usize,
}

impl B {
    fn new() -> B {
        B { n: NetworkDefinition::new("g"), rng: Rng(7), k: 0 }
    }

    fn name(&mut self, s: &str) -> String {
        self.k += 1;
        format!("{s}{}", self.k)
    }

    fn input(&mut self, name: &str, shape: &[usize]) -> OutletId {
        self.n.add_input(name, DType::F32, Shape::known(shape))
    }

    fn op(&mut self, what: &str, op: Op, inputs: &[OutletId]) -> OutletId {
        let name = self.name(what);
        self.n.add(&name, op, inputs).unwrap()
    }

    fn scalar(&mut self, v: f32) -> OutletId {
        let name = self.name("s");
        self.n.add_constant(&name, Tensor::scalar(v))
    }

    fn rand(&mut self, shape: &[usize], lo: f32, hi: f32) -> OutletId {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.uniform(lo, hi)).collect();
        let name = self.name("c");
        self.n.add_constant(&name, Tensor::from_vec(shape.to_vec(), v).unwrap())
    }

    fn filled(&mut self, shape: &[usize], v: f32) -> OutletId {
        let n = shape.iter().product();
        let name = self.name("c");
        self.n.add_constant(&name, Tensor::from_vec(shape.to_vec(), vec![v; n]).unwrap())
    }

    fn ints(&mut self, v: &[i64]) -> OutletId {
        let name = self.name("shape");
        self.n.add_constant(&name, Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn un(&mut self, u: UnaryOp, x: OutletId) -> OutletId {
        self.op(u.name(), Op::Elementwise(ElementwiseOp::Unary(u)), &[x])
    }

    fn bin(&mut self, b: BinaryOp, x: OutletId, y: OutletId) -> OutletId {
        self.op(b.name(), Op::Elementwise(ElementwiseOp::Binary(b)), &[x, y])
    }

    fn reduce(&mut self, kind: ReduceKind, x: OutletId, axes: &[i64]) -> OutletId {
        let op = Op::Reduce(ReduceOp::Reduce(Reduce {
            kind,
            axes: Some(axes.to_vec()),
            keepdims: true,
            noop_with_empty_axes: false,
        }));
        self.op(kind.name(), op, &[x])
    }

    fn reshape(&mut self, x: OutletId, shape: &[i64]) -> OutletId {
        let s = self.ints(shape);
        self.op("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[x, s])
    }

    fn transpose(&mut self, x: OutletId, perm: &[i64]) -> OutletId {
        self.op("transpose", Op::Movement(MovementOp::Transpose { perm: Some(perm.to_vec()) }), &[x])
    }

    fn matmul(&mut self, x: OutletId, w: OutletId) -> OutletId {
        self.op("matmul", Op::Nn(NnOp::MatMul), &[x, w])
    }

    fn softmax(&mut self, x: OutletId, axis: i64) -> OutletId {
        let op = Op::Reduce(ReduceOp::Softmax(Softmax { kind: SoftmaxKind::Softmax, axis, coerce_2d: false }));
        self.op("softmax", op, &[x])
    }

    fn out(mut self, o: OutletId) -> Graph {
        self.n.mark_output(o, "y").unwrap();
        self.n.build()
    }
}

use BinaryOp::{Add, Div, Mul, Pow, Sub};

// ---------------------------------------------------------------------------------
// Softmax.

fn softmax_graph(max_axis: Option<i64>, sum_axis: i64) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 3, 5]);
    let d = match max_axis {
        Some(a) => {
            let m = b.reduce(ReduceKind::Max, x, &[a]);
            b.bin(Sub, x, m)
        }
        None => x,
    };
    let e = b.un(UnaryOp::Exp, d);
    let s = b.reduce(ReduceKind::Sum, e, &[sum_axis]);
    let y = b.bin(Div, e, s);
    b.out(y)
}

#[test]
fn softmax_with_max_subtraction() {
    let after = run(&softmax_graph(Some(-1), 2), norm::rewrites(), 1);
    assert_eq!(ops(&after), ["Softmax"]);
    let Op::Reduce(ReduceOp::Softmax(s)) = &after.nodes.iter().find(|n| n.op.name() == "Softmax").unwrap().op else {
        panic!()
    };
    assert_eq!(s.axis, 2);
}

#[test]
fn softmax_without_max_subtraction() {
    let after = run(&softmax_graph(None, 1), norm::rewrites(), 2);
    assert_eq!(ops(&after), ["Softmax"]);
}

#[test]
fn softmax_near_miss_other_axis_than_its_sum() {
    let after = run(&softmax_graph(Some(1), 2), norm::rewrites(), 3);
    assert_eq!(count(&after, "Softmax"), 0);
    assert_eq!(count(&after, "ReduceSum"), 1);
}

#[test]
fn softmax_near_miss_exp_read_elsewhere() {
    let mut b = B::new();
    let x = b.input("x", &[2, 5]);
    let e = b.un(UnaryOp::Exp, x);
    let s = b.reduce(ReduceKind::Sum, e, &[1]);
    let y = b.bin(Div, e, s);
    b.n.mark_output(e, "e").unwrap();
    let g = b.out(y);
    let after = run(&g, norm::rewrites(), 4);
    assert_eq!(count(&after, "Softmax"), 0);
}

// ---------------------------------------------------------------------------------
// LayerNorm, RMSNorm, GroupNorm.

/// `(x - mean) / sqrt(var + eps) * γ + β` over `axes2` for the variance.
fn layernorm_graph(axes1: &[i64], axes2: &[i64], square_by_mul: bool, reciprocal: bool, leak: bool) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 3, 8]);
    let m = b.reduce(ReduceKind::Mean, x, axes1);
    let d = b.bin(Sub, x, m);
    let sq = if square_by_mul {
        b.bin(Mul, d, d)
    } else {
        let two = b.scalar(2.0);
        b.bin(Pow, d, two)
    };
    let v = b.reduce(ReduceKind::Mean, sq, axes2);
    let eps = b.scalar(1e-5);
    let ve = b.bin(Add, v, eps);
    let sd = b.un(UnaryOp::Sqrt, ve);
    let n = if reciprocal {
        let r = b.un(UnaryOp::Reciprocal, sd);
        b.bin(Mul, d, r)
    } else {
        b.bin(Div, d, sd)
    };
    let g = b.rand(&[8], 0.5, 1.5);
    let gn = b.bin(Mul, n, g);
    let be = b.rand(&[8], -0.5, 0.5);
    let y = b.bin(Add, be, gn);
    if leak {
        b.n.mark_output(sd, "sd").unwrap();
    }
    b.out(y)
}

#[test]
fn layernorm_pow_and_div() {
    let after = run(&layernorm_graph(&[-1], &[2], false, false, false), norm::rewrites(), 5);
    assert_eq!(ops(&after), ["LayerNormalization"]);
}

#[test]
fn layernorm_mul_self_and_reciprocal() {
    let after = run(&layernorm_graph(&[2], &[-1], true, true, false), norm::rewrites(), 6);
    assert_eq!(ops(&after), ["LayerNormalization"]);
}

#[test]
fn layernorm_over_two_trailing_axes() {
    let after = run(&layernorm_graph(&[1, 2], &[-2, -1], false, false, false), norm::rewrites(), 7);
    // The γ/β of shape [8] broadcast over [3, 8]: still absorbed (materialised).
    assert_eq!(ops(&after), ["LayerNormalization"]);
}

#[test]
fn layernorm_near_miss_mismatched_axes() {
    let after = run(&layernorm_graph(&[-1], &[1, 2], false, false, false), norm::rewrites(), 8);
    assert_eq!(count(&after, "LayerNormalization"), 0);
}

#[test]
fn layernorm_near_miss_intermediate_read_elsewhere() {
    let after = run(&layernorm_graph(&[-1], &[-1], false, false, true), norm::rewrites(), 9);
    assert_eq!(count(&after, "LayerNormalization"), 0);
}

#[test]
fn layernorm_near_miss_non_trailing_axis() {
    let after = run(&layernorm_graph(&[1], &[1], false, false, false), norm::rewrites(), 10);
    assert_eq!(count(&after, "LayerNormalization"), 0);
}

fn rmsnorm_graph(exponent: f32) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 4, 8]);
    let e = b.scalar(exponent);
    let sq = b.bin(Pow, x, e);
    let m = b.reduce(ReduceKind::Mean, sq, &[-1]);
    let eps = b.scalar(1e-6);
    let a = b.bin(Add, m, eps);
    let s = b.un(UnaryOp::Sqrt, a);
    let r = b.un(UnaryOp::Reciprocal, s);
    let n = b.bin(Mul, x, r);
    let g = b.rand(&[8], 0.5, 1.5);
    let y = b.bin(Mul, g, n);
    b.out(y)
}

#[test]
fn rmsnorm() {
    let after = run(&rmsnorm_graph(2.0), norm::rewrites(), 11);
    assert_eq!(ops(&after), ["RMSNormalization"]);
}

#[test]
fn rmsnorm_near_miss_not_a_square() {
    let after = run(&rmsnorm_graph(4.0), norm::rewrites(), 12);
    assert_eq!(count(&after, "RMSNormalization"), 0);
}

fn groupnorm_graph(in_scale: f32) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 6, 3, 3]);
    let r = b.reshape(x, &[2, 3, -1]);
    let s = b.filled(&[3], in_scale);
    let z = b.filled(&[3], 0.0);
    let i = b.op("in", Op::Reduce(ReduceOp::InstanceNorm(reduce::InstanceNorm { epsilon: 1e-5 })), &[r, s, z]);
    let back = b.reshape(i, &[2, 6, 3, 3]);
    let g = b.rand(&[6, 1, 1], 0.5, 1.5);
    let m = b.bin(Mul, back, g);
    let be = b.rand(&[6, 1, 1], -0.5, 0.5);
    let y = b.bin(Add, m, be);
    b.out(y)
}

#[test]
fn groupnorm_as_pytorch_exports_it() {
    let after = run(&groupnorm_graph(1.0), norm::rewrites(), 13);
    assert_eq!(ops(&after), ["GroupNormalization"]);
}

#[test]
fn groupnorm_near_miss_scaled_instance_norm() {
    let after = run(&groupnorm_graph(2.0), norm::rewrites(), 14);
    assert_eq!(count(&after, "GroupNormalization"), 0);
}

// ---------------------------------------------------------------------------------
// Activations.

/// Which GELU spelling to build.
#[derive(Clone, Copy)]
enum GeluForm {
    /// `((x * (erf(x / √2) + 1)) * 0.5` (TorchScript BERT).
    Bert,
    /// `x * ((erf(x / √2) + 1) * 0.5)` (dynamo).
    Dynamo,
    /// `(x * 0.5) * (1 + erf(x * 1/√2))`.
    HalfFirst,
}

fn gelu_graph(form: GeluForm, root2: f32, leak_erf: bool) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 16]);
    let erf = match form {
        GeluForm::HalfFirst => {
            let c = b.scalar(1.0 / root2);
            let t = b.bin(Mul, c, x);
            b.un(UnaryOp::Erf, t)
        }
        _ => {
            let c = b.scalar(root2);
            let t = b.bin(Div, x, c);
            b.un(UnaryOp::Erf, t)
        }
    };
    let one = b.scalar(1.0);
    let half = b.scalar(0.5);
    let y = match form {
        GeluForm::Bert => {
            let p = b.bin(Add, erf, one);
            let m = b.bin(Mul, x, p);
            b.bin(Mul, m, half)
        }
        GeluForm::Dynamo => {
            let p = b.bin(Add, erf, one);
            let h = b.bin(Mul, p, half);
            b.bin(Mul, x, h)
        }
        GeluForm::HalfFirst => {
            let p = b.bin(Add, one, erf);
            let h = b.bin(Mul, x, half);
            b.bin(Mul, h, p)
        }
    };
    if leak_erf {
        b.n.mark_output(erf, "erf").unwrap();
    }
    b.out(y)
}

fn gelu_tanh(after: &Graph) -> Option<bool> {
    after.nodes.iter().find_map(|n| match n.op {
        Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Gelu { tanh })) => Some(tanh),
        _ => None,
    })
}

#[test]
fn gelu_erf_forms() {
    for (i, form) in [GeluForm::Bert, GeluForm::Dynamo, GeluForm::HalfFirst].into_iter().enumerate() {
        let after = run(&gelu_graph(form, std::f32::consts::SQRT_2, false), norm::rewrites(), 20 + i as u64);
        assert_eq!(ops(&after), ["Gelu"]);
        assert_eq!(gelu_tanh(&after), Some(false));
    }
}

#[test]
fn gelu_near_miss_wrong_constant() {
    let after = run(&gelu_graph(GeluForm::Bert, 1.5, false), norm::rewrites(), 23);
    assert_eq!(count(&after, "Gelu"), 0);
}

#[test]
fn gelu_near_miss_erf_read_elsewhere() {
    let after = run(&gelu_graph(GeluForm::Dynamo, std::f32::consts::SQRT_2, true), norm::rewrites(), 24);
    assert_eq!(count(&after, "Gelu"), 0);
}

fn gelu_tanh_graph(c3: f32, cube_by_pow: bool) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[3, 8]);
    let cube = if cube_by_pow {
        let three = b.scalar(3.0);
        b.bin(Pow, x, three)
    } else {
        let x2 = b.bin(Mul, x, x);
        b.bin(Mul, x2, x)
    };
    let c = b.scalar(c3);
    let cc = b.bin(Mul, c, cube);
    let inner = b.bin(Add, x, cc);
    let k = b.scalar((2.0 / std::f32::consts::PI).sqrt());
    let t = b.bin(Mul, inner, k);
    let th = b.un(UnaryOp::Tanh, t);
    let one = b.scalar(1.0);
    let p = b.bin(Add, one, th);
    let half = b.scalar(0.5);
    let h = b.bin(Mul, half, x);
    let y = b.bin(Mul, h, p);
    b.out(y)
}

#[test]
fn gelu_tanh_form() {
    for (i, pow) in [true, false].into_iter().enumerate() {
        let after = run(&gelu_tanh_graph(0.044715, pow), norm::rewrites(), 25 + i as u64);
        assert_eq!(ops(&after), ["Gelu"]);
        assert_eq!(gelu_tanh(&after), Some(true));
    }
}

#[test]
fn gelu_tanh_near_miss_wrong_constant() {
    let after = run(&gelu_tanh_graph(0.05, true), norm::rewrites(), 27);
    assert_eq!(count(&after, "Gelu"), 0);
}

#[test]
fn silu_becomes_swish_alpha_one() {
    let mut b = B::new();
    let x = b.input("x", &[2, 9]);
    let s = b.un(UnaryOp::Sigmoid, x);
    let y = b.bin(Mul, s, x);
    let after = run(&b.out(y), norm::rewrites(), 28);
    assert_eq!(ops(&after), ["Swish"]);
    assert!(after.nodes.iter().any(|n| matches!(
        n.op,
        Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Swish { alpha })) if alpha == 1.0
    )));
}

#[test]
fn silu_near_miss_sigmoid_of_another_value() {
    let mut b = B::new();
    let x = b.input("x", &[2, 9]);
    let z = b.input("z", &[2, 9]);
    let s = b.un(UnaryOp::Sigmoid, z);
    let y = b.bin(Mul, x, s);
    let after = run(&b.out(y), norm::rewrites(), 29);
    assert_eq!(ops(&after), ["Sigmoid", "Mul"]);
}

#[test]
fn hardswish_from_hardsigmoid() {
    let mut b = B::new();
    let x = b.input("x", &[2, 9]);
    let s = b.un(UnaryOp::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 }, x);
    let y = b.bin(Mul, x, s);
    let after = run(&b.out(y), norm::rewrites(), 30);
    assert_eq!(ops(&after), ["HardSwish"]);
}

fn hardswish_clip_graph(hi: f32) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 9]);
    let three = b.scalar(3.0);
    let a = b.bin(Add, x, three);
    let lo = b.scalar(0.0);
    let hi = b.scalar(hi);
    let c = b.op("clip", Op::Elementwise(ElementwiseOp::Clip { min: None, max: None }), &[a, lo, hi]);
    let m = b.bin(Mul, x, c);
    let six = b.scalar(6.0);
    let y = b.bin(Div, m, six);
    b.out(y)
}

#[test]
fn hardswish_from_clip() {
    let after = run(&hardswish_clip_graph(6.0), norm::rewrites(), 31);
    assert_eq!(ops(&after), ["HardSwish"]);
}

#[test]
fn hardswish_near_miss_other_clip_bound() {
    let after = run(&hardswish_clip_graph(5.0), norm::rewrites(), 32);
    assert_eq!(count(&after, "HardSwish"), 0);
}

// ---------------------------------------------------------------------------------
// Attention.

const BATCH: usize = 2;
const SEQ: usize = 5;
const HIDDEN: usize = 8;

/// How K reaches `[B, h, d, S]`.
#[derive(Clone, Copy, PartialEq)]
enum KPath {
    /// Transpose(0,2,3,1) of the [B,S,h,d] view (TorchScript).
    Direct,
    /// Transpose(0,2,1,3) then Transpose(0,1,3,2).
    Twice,
    /// Reshape [B·h,S,d] → Transpose(0,2,1) → Reshape [B,h,d,S] (dynamo).
    Dynamo,
}

#[derive(Clone, Copy)]
struct AttnCase {
    heads: usize,
    k_heads: usize,
    k_path: KPath,
    /// Scale on Q and K (d^-1/4 each) rather than Div on the scores.
    split_scale: bool,
    /// 0: none; 1: float [B,1,1,S] input; 2: Where(bool [B,1,1,S], 0, -inf); 3: float [B,1,1,1].
    mask: u8,
    guard: bool,
    softmax_axis: i64,
    /// Symbolic `batch` and `seq` (Reshape targets copy them with 0).
    symbolic: bool,
}

const BERT: AttnCase = AttnCase {
    heads: 2,
    k_heads: 2,
    k_path: KPath::Direct,
    split_scale: true,
    mask: 1,
    guard: true,
    softmax_axis: -1,
    symbolic: false,
};

/// A BERT-style self-attention block from one input x [B, S, H].
fn attention_graph(c: AttnCase) -> Graph {
    let mut b = B::new();
    let bs_shape = |rest: &[usize]| {
        let mut d = if c.symbolic { vec![Dim::sym("batch"), Dim::sym("seq")] } else { vec![] };
        d.extend(rest.iter().map(|&v| Dim::Known(v)));
        Shape(d)
    };
    let x = if c.symbolic {
        b.n.add_input("x", DType::F32, bs_shape(&[HIDDEN]))
    } else {
        b.input("x", &[BATCH, SEQ, HIDDEN])
    };
    let (h, d) = (c.heads, HIDDEN / c.heads);
    let dk = HIDDEN / c.heads;
    let kh = c.k_heads;
    let proj = |b: &mut B, n: usize| {
        let a = (3.0 / HIDDEN as f32).sqrt();
        let w = b.rand(&[HIDDEN, n], -a, a);
        let m = b.matmul(x, w);
        let bias = b.rand(&[n], -0.1, 0.1);
        b.bin(Add, bias, m)
    };
    let q = proj(&mut b, HIDDEN);
    let k = proj(&mut b, kh * dk);
    let v = proj(&mut b, HIDDEN);
    let (bs, ss) = if c.symbolic { (0, 0) } else { (BATCH as i64, SEQ as i64) };
    let q4 = b.reshape(q, &[bs, ss, -1, d as i64]);
    let k4 = b.reshape(k, &[bs, ss, -1, dk as i64]);
    let v4 = b.reshape(v, &[bs, ss, -1, d as i64]);
    let qt = b.transpose(q4, &[0, 2, 1, 3]);
    let vt = b.transpose(v4, &[0, 2, 1, 3]);
    let kt = match c.k_path {
        KPath::Direct => b.transpose(k4, &[0, 2, 3, 1]),
        KPath::Twice => {
            let t = b.transpose(k4, &[0, 2, 1, 3]);
            b.transpose(t, &[0, 1, 3, 2])
        }
        KPath::Dynamo => {
            let t = b.transpose(k4, &[0, 2, 1, 3]);
            let r = b.reshape(t, &[-1, ss, dk as i64]);
            let t2 = b.transpose(r, &[0, 2, 1]);
            b.reshape(t2, &[bs, kh as i64, dk as i64, ss])
        }
    };
    let quarter = (d as f32).powf(-0.25);
    let scores = if c.split_scale {
        let s1 = b.scalar(quarter);
        let qs = b.bin(Mul, qt, s1);
        let s2 = b.scalar(quarter);
        let ks = b.bin(Mul, kt, s2);
        b.matmul(qs, ks)
    } else {
        let m = b.matmul(qt, kt);
        let sq = b.scalar((d as f32).sqrt());
        b.bin(Div, m, sq)
    };
    let masked = match c.mask {
        1 => {
            let m = if c.symbolic {
                let sh = Shape(vec![Dim::sym("batch"), Dim::Known(1), Dim::Known(1), Dim::sym("seq")]);
                b.n.add_input("mask", DType::F32, sh)
            } else {
                b.input("mask", &[BATCH, 1, 1, SEQ])
            };
            b.bin(Add, scores, m)
        }
        3 => {
            // A mask broadcast over the keys: Attention would pad it with -inf.
            let m = b.input("mask", &[BATCH, 1, 1, 1]);
            b.bin(Add, scores, m)
        }
        2 => {
            let bm = b.n.add_input("bmask", DType::Bool, Shape::known(&[BATCH, 1, 1, SEQ]));
            let z = b.scalar(0.0);
            let ninf = b.scalar(f32::NEG_INFINITY);
            let m = b.op("where", Op::Elementwise(ElementwiseOp::Where), &[bm, z, ninf]);
            b.bin(Add, scores, m)
        }
        _ => scores,
    };
    let p = b.softmax(masked, c.softmax_axis);
    let p = if c.guard {
        let nan = b.op("isnan", Op::Elementwise(ElementwiseOp::IsNaN), &[p]);
        let z = b.scalar(0.0);
        b.op("where", Op::Elementwise(ElementwiseOp::Where), &[nan, z, p])
    } else {
        p
    };
    let y = b.matmul(p, vt);
    let yt = b.transpose(y, &[0, 2, 1, 3]);
    let out = b.reshape(yt, &[bs, ss, -1]);
    let _ = h;
    b.out(out)
}

fn the_attention(g: &Graph) -> &Attention {
    g.nodes
        .iter()
        .find_map(|n| match &n.op {
            Op::Attention(AttentionOp::Attention(a)) => Some(a),
            _ => None,
        })
        .expect("an Attention node")
}

#[test]
fn attention_as_torchscript_exports_it() {
    let g = attention_graph(BERT);
    let after = run(&g, attention::rewrites(), 40);
    assert_eq!(ops(&after), ["MatMul", "Add", "MatMul", "Add", "MatMul", "Add", "Attention"]);
    let a = the_attention(&after);
    assert_eq!((a.q_num_heads, a.kv_num_heads), (Some(2), Some(2)));
    assert!((a.scale.unwrap() - 0.5).abs() < 1e-6);
}

#[test]
fn attention_variants() {
    let cases = [
        AttnCase { k_path: KPath::Twice, split_scale: false, mask: 0, guard: false, ..BERT },
        AttnCase { k_path: KPath::Dynamo, ..BERT },
        AttnCase { heads: 4, k_heads: 4, k_path: KPath::Dynamo, split_scale: false, ..BERT },
        AttnCase { mask: 2, ..BERT },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let after = run(&attention_graph(c), attention::rewrites(), 41 + i as u64);
        assert_eq!(count(&after, "Attention"), 1, "case {i}");
        assert_eq!(count(&after, "Softmax") + count(&after, "Transpose") + count(&after, "Reshape"), 0, "case {i}");
    }
}

#[test]
fn attention_with_symbolic_batch_and_sequence() {
    let g = attention_graph(AttnCase { symbolic: true, ..BERT });
    let after = run(&g, attention::rewrites(), 51);
    assert_eq!(count(&after, "Attention"), 1);
}

#[test]
fn attention_bool_mask_is_passed_as_is_and_fully_masked_rows_give_zeros() {
    let g = attention_graph(AttnCase { mask: 2, ..BERT });
    let after = apply(&g, attention::rewrites());
    assert_eq!(count(&after, "Where"), 0, "the mask's Where(c, 0, -inf) is the bool mask itself");
    // Batch 0 attends to nothing: the guard's zeros, which the fused op reproduces.
    let mut inputs = random_inputs(&g, 45, 3, &|_| 3);
    let mask: Vec<bool> = (0..BATCH * SEQ).map(|i| i >= SEQ && i % 2 == 0).collect();
    inputs[1] = Tensor::from_bools(vec![BATCH, 1, 1, SEQ], mask).unwrap();
    assert_same_outputs(&g, &after, &inputs, 1e-5);
    let y = kiln_cpu::run(&after, &inputs).unwrap().remove(0).to_f64_vec().unwrap();
    assert!(y[..SEQ * HIDDEN].iter().all(|&v| v == 0.0));
}

#[test]
fn attention_near_miss_softmax_not_over_the_last_axis() {
    let after = run(&attention_graph(AttnCase { softmax_axis: 2, ..BERT }), attention::rewrites(), 46);
    assert_eq!(count(&after, "Attention"), 0);
    assert_eq!(count(&after, "Softmax"), 1);
}

#[test]
fn attention_near_miss_mask_broadcast_over_keys() {
    let after = run(&attention_graph(AttnCase { mask: 3, ..BERT }), attention::rewrites(), 50);
    assert_eq!(count(&after, "Attention"), 0);
}

#[test]
fn attention_near_miss_mismatched_head_counts() {
    // K has one head of size 4 broadcast over Q's two: not rewritten.
    let after = run(&attention_graph(AttnCase { k_heads: 1, ..BERT }), attention::rewrites(), 47);
    assert_eq!(count(&after, "Attention"), 0);
}

#[test]
fn attention_near_miss_probabilities_read_elsewhere() {
    let mut g = attention_graph(AttnCase { guard: false, ..BERT });
    let sm = g.nodes.iter().position(|n| n.op.name() == "Softmax").unwrap();
    g.outputs.push(OutletId::new(sm, 0));
    let after = run(&g, attention::rewrites(), 48);
    assert_eq!(count(&after, "Attention"), 0);
}

#[test]
fn attention_then_horizontal_fusion_reads_the_split() {
    let g = attention_graph(BERT);
    let after = run(&g, [attention::rewrites(), horizontal::rewrites()].concat(), 49);
    assert_eq!(ops(&after), ["MatMul", "Add", "Split", "Attention"]);
}

// ---------------------------------------------------------------------------------
// Horizontal fusion.

fn siblings_graph(n: usize, bias: bool, odd: Option<&str>) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[2, 3, 6]);
    let w_in = b.input("w", &[6, 4]);
    let mut outs = Vec::new();
    for i in 0..n {
        let w = match (odd, i) {
            (Some("input-weight"), 1) => w_in,
            (Some("3d-weight"), 1) => b.rand(&[1, 6, 4], -0.5, 0.5),
            _ => b.rand(&[6, 3 + i], -0.5, 0.5),
        };
        let m = b.matmul(x, w);
        let y = if bias {
            let c = b.rand(&[m_width(&b, m)], -0.5, 0.5);
            b.bin(Add, c, m)
        } else {
            m
        };
        outs.push(y);
    }
    for (i, &o) in outs.iter().enumerate().skip(1) {
        b.n.mark_output(o, &format!("y{i}")).unwrap();
    }
    b.out(outs[0])
}

fn m_width(b: &B, m: OutletId) -> usize {
    let s = b.n.graph().fact(m).unwrap().shape.clone().unwrap();
    s.as_known().unwrap().last().copied().unwrap()
}

#[test]
fn horizontal_matmul_siblings_with_biases() {
    let after = run(&siblings_graph(3, true, None), horizontal::rewrites(), 60);
    assert_eq!(ops(&after), ["MatMul", "Add", "Split"]);
}

#[test]
fn horizontal_matmul_siblings_without_biases() {
    let after = run(&siblings_graph(2, false, None), horizontal::rewrites(), 61);
    assert_eq!(ops(&after), ["MatMul", "Split"]);
}

#[test]
fn horizontal_near_miss_non_constant_weight() {
    let after = run(&siblings_graph(2, false, Some("input-weight")), horizontal::rewrites(), 62);
    assert_eq!(ops(&after), ["MatMul", "MatMul"]);
}

#[test]
fn horizontal_near_miss_weight_not_2d() {
    let after = run(&siblings_graph(2, false, Some("3d-weight")), horizontal::rewrites(), 63);
    assert_eq!(ops(&after), ["MatMul", "MatMul"]);
}

#[test]
fn horizontal_near_miss_single_matmul() {
    let after = run(&siblings_graph(1, true, None), horizontal::rewrites(), 64);
    assert_eq!(ops(&after), ["MatMul", "Add"]);
}

#[test]
fn horizontal_two_of_three_when_one_weight_is_an_input() {
    // Siblings 0 and 2 fuse; the one with a non-constant weight stays.
    let after = run(&siblings_graph(3, false, Some("input-weight")), horizontal::rewrites(), 65);
    assert_eq!(count(&after, "MatMul"), 2);
    assert_eq!(count(&after, "Split"), 1);
}

#[test]
fn horizontal_gemm_siblings_transposed_weights() {
    let mut b = B::new();
    let x = b.input("x", &[3, 6]);
    let mut outs = Vec::new();
    for n in [4, 5] {
        let w = b.rand(&[n, 6], -0.5, 0.5);
        let c = b.rand(&[n], -0.5, 0.5);
        let op = Op::Nn(NnOp::Gemm(Gemm { alpha: 0.5, beta: 2.0, trans_a: false, trans_b: true }));
        outs.push(b.op("gemm", op, &[x, w, c]));
    }
    b.n.mark_output(outs[1], "y1").unwrap();
    let after = run(&b.out(outs[0]), horizontal::rewrites(), 66);
    assert_eq!(ops(&after), ["Gemm", "Split"]);
}

fn conv_siblings(strides2: Vec<usize>) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[1, 3, 6, 6]);
    let mut outs = Vec::new();
    for (m, strides) in [(4, vec![1, 1]), (2, strides2)] {
        let w = b.rand(&[m, 3, 3, 3], -0.3, 0.3);
        let c = b.rand(&[m], -0.1, 0.1);
        let window = Window { pads: Some(vec![1, 1, 1, 1]), strides: Some(strides), ..Window::default() };
        outs.push(b.op("conv", Op::Nn(NnOp::Conv(Conv { window, group: 1 })), &[x, w, c]));
    }
    b.n.mark_output(outs[1], "y1").unwrap();
    b.out(outs[0])
}

#[test]
fn horizontal_conv_siblings() {
    let after = run(&conv_siblings(vec![1, 1]), horizontal::rewrites(), 67);
    assert_eq!(ops(&after), ["Conv", "Split"]);
}

#[test]
fn horizontal_near_miss_conv_other_strides() {
    let after = run(&conv_siblings(vec![2, 2]), horizontal::rewrites(), 68);
    assert_eq!(ops(&after), ["Conv", "Conv"]);
}

fn conv_siblings_with(acts: [Option<UnaryOp>; 2]) -> Graph {
    let mut b = B::new();
    let x = b.input("x", &[1, 3, 6, 6]);
    let mut outs = Vec::new();
    for (m, act) in [(4, acts[0]), (2, acts[1])] {
        let w = b.rand(&[m, 3, 1, 1], -0.3, 0.3);
        let c = b.op("conv", Op::Nn(NnOp::Conv(Conv { window: Window::default(), group: 1 })), &[x, w]);
        outs.push(match act {
            Some(u) => b.un(u, c),
            None => c,
        });
    }
    b.n.mark_output(outs[1], "y1").unwrap();
    b.out(outs[0])
}

#[test]
fn horizontal_conv_siblings_with_the_same_activation() {
    let after = run(&conv_siblings_with([Some(UnaryOp::Relu); 2]), horizontal::rewrites(), 69);
    assert_eq!(ops(&after), ["Conv", "Relu", "Split"]);
}

#[test]
fn horizontal_near_miss_siblings_with_different_epilogues() {
    let after = run(&conv_siblings_with([Some(UnaryOp::Relu), None]), horizontal::rewrites(), 72);
    assert_eq!(ops(&after), ["Conv", "Relu", "Conv"]);
    let after = run(&conv_siblings_with([Some(UnaryOp::Relu), Some(UnaryOp::Sigmoid)]), horizontal::rewrites(), 73);
    assert_eq!(count(&after, "Split"), 0);
}

// ---------------------------------------------------------------------------------
// The default pipeline on a whole BERT-style block.

#[test]
fn pipeline_recognises_attention_and_gelu() {
    let mut b = B::new();
    let x = b.input("x", &[1, 4, 8]);
    let c = b.scalar(std::f32::consts::SQRT_2);
    let d = b.bin(Div, x, c);
    let e = b.un(UnaryOp::Erf, d);
    let one = b.scalar(1.0);
    let p = b.bin(Add, e, one);
    let m = b.bin(Mul, x, p);
    let half = b.scalar(0.5);
    let y = b.bin(Mul, m, half);
    let (after, _) = check_pass(&b.out(y), 2, 70);
    assert_eq!(count(&after, "Gelu"), 1);
    let (after, _) = check_pass(&attention_graph(BERT), 3, 71);
    assert_eq!(count(&after, "Attention"), 1);
    assert_eq!(count(&after, "Softmax"), 0);
}

// ---------------------------------------------------------------------------------
// BERT-base, with its mask's shape arithmetic folded first (the simplify stage's job,
// done here by evaluating every node whose inputs are all constants).

fn prefold(g: &Graph) -> Graph {
    let mut out = Graph::new(g.name.clone());
    let mut map = std::collections::HashMap::new();
    for (id, n) in g.nodes.iter().enumerate() {
        let ins: Vec<Option<OutletId>> = n.inputs.iter().map(|o| o.map(|o| map[&o])).collect();
        if matches!(n.op, Op::Input) {
            out.nodes.push(n.clone());
            let o = OutletId::new(out.nodes.len() - 1, 0);
            out.inputs.push(o);
            map.insert(OutletId::new(id, 0), o);
            continue;
        }
        let consts: Option<Vec<Option<Tensor>>> = ins
            .iter()
            .map(|o| match o {
                None => Some(None),
                Some(o) => match &out.nodes[o.node].op {
                    Op::Constant(t) => Some(Some(t.clone())),
                    _ => None,
                },
            })
            .collect();
        if let (false, Some(c)) = (ins.is_empty(), consts)
            && let Ok(ts) = cpu_eval(&n.op, &c, n.outputs.len())
        {
            for (s, t) in ts.into_iter().enumerate() {
                let name = n.outputs[s].name.clone();
                let nid = out.add_node(name.clone(), Op::Constant(t), vec![], vec![name]).unwrap();
                map.insert(OutletId::new(id, s), OutletId::new(nid, 0));
            }
            continue;
        }
        let names = n.outputs.iter().map(|o| o.name.clone()).collect();
        let nid = out.add_node(n.name.clone(), n.op.clone(), ins, names).unwrap();
        for s in 0..n.outputs.len() {
            map.insert(OutletId::new(id, s), OutletId::new(nid, s));
        }
    }
    out.outputs = g.outputs.iter().map(|o| map[o]).collect();
    out
}

#[test]
fn bert_base_attention_gelu_and_qkv_after_folding() {
    for name in ["bert-base", "bert-base-dynamo"] {
        let m = support::models::torch_model(name);
        let g = prefold(&m.graph);
        // Level 2: the patterns are recognised.
        let (after, _) = optimize(&g, 2);
        assert_same_outputs(&m.graph, &after, &m.inputs, 1e-5);
        for op in ["Attention", "Gelu"] {
            assert_eq!(count(&after, op), 12, "{name}: {op}");
        }
        for op in ["Softmax", "IsNaN", "Transpose", "Erf"] {
            assert_eq!(count(&after, op), 0, "{name}: {op}");
        }
        // Level 3: Q, K and V projections in one MatMul per layer, split for Attention.
        let (after, report) = optimize(&g, kiln_opt::pipeline::DEFAULT_LEVEL);
        let err = assert_same_outputs(&m.graph, &after, &m.inputs, 1e-5);
        eprintln!("{name} (folded): {} -> {} layers, rel_l2 {err:.1e}", report.nodes_before, report.layers_after);
        assert_eq!(count(&after, "Split"), 12, "{name}");
        assert_eq!(count(&after, "Attention"), 12, "{name}");
    }
}

#[test]
fn horizontal_near_miss_conv_other_kernel_size() {
    // Same attributes, but 1×1 and 3×3 weights: the reduction (C·kh·kw) differs.
    let mut b = B::new();
    let x = b.input("x", &[1, 3, 6, 6]);
    let w1 = b.rand(&[4, 3, 1, 1], -0.3, 0.3);
    let w3 = b.rand(&[4, 3, 3, 3], -0.3, 0.3);
    let conv = || Op::Nn(NnOp::Conv(Conv { window: Window::default(), group: 1 }));
    let a = b.op("conv", conv(), &[x, w1]);
    let c = b.op("conv", conv(), &[x, w3]);
    b.n.mark_output(c, "y1").unwrap();
    let after = run(&b.out(a), horizontal::rewrites(), 74);
    assert_eq!(ops(&after), ["Conv", "Conv"]);
}
