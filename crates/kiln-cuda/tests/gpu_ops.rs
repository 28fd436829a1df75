//! Op families lowered through the launchers: small graphs per family run by the CUDA
//! executor (with and without a CUDA graph) against `kiln_cpu::run` on random non-zero
//! inputs. Tolerances (relative L2): FP32 1e-5 elementwise and movement, 1e-4 reductions,
//! normalisations and products; FP16 1e-2; integer and bool outputs exactly.
//! The host test checks that every graph here plans and lowers without a GPU.

mod support;

use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp, VariadicOp};
use kiln_ir::ops::movement::{MovementOp, PadMode};
use kiln_ir::ops::nn::NnOp;
use kiln_ir::ops::reduce::{
    ArgKind, ArgReduce, LayerNorm, Reduce, ReduceKind, ReduceOp, RmsNorm, Softmax, SoftmaxKind,
};
use kiln_ir::ops::{ElementwiseOp, Expr, ExprNode, FusedLayer, FusedOp, Op};
use kiln_ir::{DType, NetworkDefinition, Shape};
use support::*;

/// Unary maps, broadcasting binaries, compare/logic/Where, Cast, Clip, variadic Mean/Max,
/// Not, Dropout (f32).
fn elementwise() -> Case {
    let mut net = NetworkDefinition::new("elementwise");
    let x = net.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let b = net.add_input("b", DType::F32, Shape::known(&[3, 1]));
    let s = net.add("sig", un(UnaryOp::Sigmoid), &[x]).unwrap();
    let l = net.add("leaky", un(UnaryOp::LeakyRelu { alpha: 0.1 }), &[s]).unwrap();
    let sn = net.add("sin", un(UnaryOp::Sin), &[x]).unwrap();
    let sub = net.add("sub", bin(BinaryOp::Sub), &[l, b]).unwrap();
    let mul = net.add("mul", bin(BinaryOp::Mul), &[sub, sn]).unwrap();
    out(&mut net, mul, "mul");
    let gt = net.add("gt", el(ElementwiseOp::Compare(CompareOp::Greater)), &[x, b]).unwrap();
    let w = net.add("where", el(ElementwiseOp::Where), &[gt, x, b]).unwrap();
    out(&mut net, w, "where");
    let not = net.add("not", el(ElementwiseOp::Not), &[gt]).unwrap();
    out(&mut net, not, "not");
    let h = net.add("to_half", el(ElementwiseOp::Cast { to: DType::F16, saturate: true }), &[x]).unwrap();
    let back = net.add("to_float", el(ElementwiseOp::Cast { to: DType::F32, saturate: true }), &[h]).unwrap();
    let i = net.add("to_int", el(ElementwiseOp::Cast { to: DType::I64, saturate: true }), &[mul]).unwrap();
    out(&mut net, i, "int");
    let lo = net.add_constant("lo", scalar(-0.25));
    let hi = net.add_constant("hi", scalar(0.5));
    let c = net.add("clip", el(ElementwiseOp::Clip { min: None, max: None }), &[back, lo, hi]).unwrap();
    let m = net.add("mean", el(ElementwiseOp::Variadic(VariadicOp::Mean)), &[c, x, w]).unwrap();
    out(&mut net, m, "mean");
    let mx = net.add("max", el(ElementwiseOp::Variadic(VariadicOp::Max)), &[x, b]).unwrap();
    out(&mut net, mx, "max");
    let d = net.add("dropout", el(ElementwiseOp::Dropout { mask_is_bool: true }), &[mx]).unwrap();
    let g = net.add("gelu", un(UnaryOp::Gelu { tanh: true }), &[d]).unwrap();
    out(&mut net, g, "gelu");
    Case {
        name: "elementwise",
        graph: net.build(),
        inputs: vec![(DType::F32, vec![2, 3, 4]), (DType::F32, vec![3, 1])],
        tol: 1e-5,
    }
}

/// The same kind of chain in f16.
fn elementwise_f16() -> Case {
    let mut net = NetworkDefinition::new("elementwise_f16");
    let x = net.add_input("x", DType::F16, Shape::known(&[4, 33]));
    let b = net.add_input("b", DType::F16, Shape::known(&[33]));
    let t = net.add("tanh", un(UnaryOp::Tanh), &[x]).unwrap();
    let a = net.add("add", bin(BinaryOp::Add), &[t, b]).unwrap();
    let e = net.add("elu", un(UnaryOp::Elu { alpha: 1.0 }), &[a]).unwrap();
    let sm = net.add("softmax", red(ReduceOp::Softmax(softmax(SoftmaxKind::Softmax, -1))), &[e]).unwrap();
    out(&mut net, sm, "y");
    Case {
        name: "elementwise_f16",
        graph: net.build(),
        inputs: vec![(DType::F16, vec![4, 33]), (DType::F16, vec![33])],
        tol: 1e-2,
    }
}

/// Transpose, Slice (constant bounds, a negative step), Concat, Split, Expand, Gather,
/// Pad (constant and reflect), Tile.
fn movement() -> Case {
    let mut net = NetworkDefinition::new("movement");
    let x = net.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let t = net.add("transpose", mv(MovementOp::Transpose { perm: Some(vec![2, 0, 1]) }), &[x]).unwrap();
    out(&mut net, t, "transpose");
    let (st, en, ax, sp) = (
        net.add_constant("st", ints(&[3, 0])),
        net.add_constant("en", ints(&[0, 2])),
        net.add_constant("ax", ints(&[2, 1])),
        net.add_constant("sp", ints(&[-1, 1])),
    );
    let s = net.add("slice", mv(MovementOp::Slice { attrs: None }), &[x, st, en, ax, sp]).unwrap();
    out(&mut net, s, "slice");
    let parts =
        net.add_layer("split", mv(MovementOp::Split { axis: 2, split: None, num_outputs: Some(2) }), &[x], 2).unwrap();
    out(&mut net, parts[0], "split0");
    out(&mut net, parts[1], "split1");
    let cat = net.add("concat2", mv(MovementOp::Concat { axis: -1 }), &[parts[1], x, parts[0]]).unwrap();
    out(&mut net, cat, "concat");
    let shape = net.add_constant("shape", ints(&[2, 2, 3, 4]));
    let e = net.add("expand", mv(MovementOp::Expand), &[x, shape]).unwrap();
    out(&mut net, e, "expand");
    let idx = net.add_constant("idx", ints(&[2, -1, 0]));
    let g = net.add("gather", mv(MovementOp::Gather { axis: 1 }), &[x, idx]).unwrap();
    out(&mut net, g, "gather");
    let pads = net.add_constant("pads", ints(&[0, 1, 2, 1, 0, 1]));
    let pv = net.add_constant("pv", scalar(0.75));
    let p = net.add("pad", mv(MovementOp::Pad { mode: PadMode::Constant, pads: None, value: 0.0 }), &[x, pads, pv]);
    out(&mut net, p.unwrap(), "pad");
    let pads2 = net.add_constant("pads2", ints(&[0, 1, 2, 0, 1, 1]));
    let r = net.add("reflect", mv(MovementOp::Pad { mode: PadMode::Reflect, pads: None, value: 0.0 }), &[x, pads2]);
    out(&mut net, r.unwrap(), "reflect");
    let reps = net.add_constant("reps", ints(&[1, 2, 3]));
    let tl = net.add("tile", mv(MovementOp::Tile), &[x, reps]).unwrap();
    out(&mut net, tl, "tile");
    Case { name: "movement", graph: net.build(), inputs: vec![(DType::F32, vec![2, 3, 4])], tol: 1e-5 }
}

fn softmax(kind: SoftmaxKind, axis: i64) -> Softmax {
    Softmax { kind, axis, coerce_2d: false }
}

fn reduce(kind: ReduceKind, keepdims: bool) -> Op {
    red(ReduceOp::Reduce(Reduce { kind, axes: None, keepdims, noop_with_empty_axes: false }))
}

/// Reduce* (constant axes, all axes), ArgMax/ArgMin, Softmax/LogSoftmax, LayerNorm, RMSNorm.
fn reductions() -> Case {
    let mut net = NetworkDefinition::new("reduce");
    let x = net.add_input("x", DType::F32, Shape::known(&[3, 5, 70]));
    let a1 = net.add_constant("a1", ints(&[1]));
    let s = net.add("sum", reduce(ReduceKind::Sum, true), &[x, a1]).unwrap();
    out(&mut net, s, "sum");
    let a02 = net.add_constant("a02", ints(&[0, -1]));
    let m = net.add("mean", reduce(ReduceKind::Mean, false), &[x, a02]).unwrap();
    out(&mut net, m, "mean");
    let mx = net.add("max", reduce(ReduceKind::Max, false), &[x]).unwrap();
    out(&mut net, mx, "max");
    let l2 = net.add("l2", reduce(ReduceKind::L2, true), &[x, a1]).unwrap();
    out(&mut net, l2, "l2");
    let lse = net.add("lse", reduce(ReduceKind::LogSumExp, false), &[x, a02]).unwrap();
    out(&mut net, lse, "lse");
    let arg = ArgReduce { kind: ArgKind::Max, axis: 1, keepdims: true, select_last_index: false };
    let am = net.add("argmax", red(ReduceOp::Arg(arg)), &[x]).unwrap();
    out(&mut net, am, "argmax");
    let arg = ArgReduce { kind: ArgKind::Min, axis: -1, keepdims: false, select_last_index: true };
    let an = net.add("argmin", red(ReduceOp::Arg(arg)), &[x]).unwrap();
    out(&mut net, an, "argmin");
    let sm = net.add("softmax", red(ReduceOp::Softmax(softmax(SoftmaxKind::Softmax, -1))), &[x]).unwrap();
    out(&mut net, sm, "softmax");
    let ls = net.add("logsoftmax", red(ReduceOp::Softmax(softmax(SoftmaxKind::LogSoftmax, 1))), &[x]).unwrap();
    out(&mut net, ls, "logsoftmax");
    let scale = net.add_constant("scale", tensor(DType::F32, &[70], 7));
    let bias = net.add_constant("bias", tensor(DType::F32, &[70], 8));
    let ln = LayerNorm { axis: -1, epsilon: 1e-5, stash_type: DType::F32 };
    let l = net.add("layernorm", red(ReduceOp::LayerNorm(ln)), &[x, scale, bias]).unwrap();
    out(&mut net, l, "layernorm");
    let rms = RmsNorm { axis: -1, epsilon: 1e-6, stash_type: DType::F32 };
    let r = net.add("rmsnorm", red(ReduceOp::RmsNorm(rms)), &[x, scale]).unwrap();
    out(&mut net, r, "rmsnorm");
    Case { name: "reductions", graph: net.build(), inputs: vec![(DType::F32, vec![3, 5, 70])], tol: 1e-4 }
}

/// kiln-opt's fused ops: an elementwise expression with a scalar and a broadcast input,
/// and a MatMul whose epilogue cuBLASLt cannot run (GELU of a residual add).
fn fused() -> Case {
    let mut net = NetworkDefinition::new("fused");
    let x = net.add_input("x", DType::F32, Shape::known(&[4, 16]));
    let b = net.add_input("b", DType::F32, Shape::known(&[16]));
    let w = net.add_constant("w", tensor(DType::F32, &[16, 16], 9));
    // x * sigmoid(x) + 0.5 * b
    let e = Expr {
        nodes: vec![
            ExprNode::Input(0),
            ExprNode::Unary(UnaryOp::Sigmoid, 0),
            ExprNode::Binary(BinaryOp::Mul, 0, 1),
            ExprNode::Scalar(0.5),
            ExprNode::Input(1),
            ExprNode::Binary(BinaryOp::Mul, 3, 4),
            ExprNode::Binary(BinaryOp::Add, 2, 5),
            ExprNode::Clip { x: 6, min: Some(-0.5), max: None },
        ],
    };
    let f = net.add("fused_swish", Op::Fused(FusedOp::Elementwise(e)), &[x, b]).unwrap();
    out(&mut net, f, "swish");
    let epi = Expr {
        nodes: vec![
            ExprNode::Input(0),
            ExprNode::Input(1),
            ExprNode::Binary(BinaryOp::Add, 0, 1),
            ExprNode::Unary(UnaryOp::Gelu { tanh: false }, 2),
        ],
    };
    let layer = FusedLayer { core: Box::new(Op::Nn(NnOp::MatMul)), core_inputs: 2, epilogue: epi };
    let l = net.add("fc_gelu", Op::Fused(FusedOp::Layer(layer)), &[f, w, x]).unwrap();
    out(&mut net, l, "fc");
    Case {
        name: "fused",
        graph: net.build(),
        inputs: vec![(DType::F32, vec![4, 16]), (DType::F32, vec![16])],
        tol: 1e-4,
    }
}

fn cases() -> Vec<Case> {
    vec![elementwise(), elementwise_f16(), movement(), reductions(), fused()]
}

#[test]
fn every_family_plans_and_lowers_on_the_host() {
    check_lowers(cases());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_family_matches_the_cpu_with_and_without_a_cuda_graph() {
    check_on_gpu(cases());
}
