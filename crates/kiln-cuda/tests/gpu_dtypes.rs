//! Dtype coverage of the elementwise kernels and small elementwise-like ops: integer
//! arithmetic, compare, Clip, Where, bit operations and BitShift over every integer
//! dtype; f64 arithmetic; Cast between every dtype (FP8 with and without saturation);
//! Pow with mixed dtypes; IsNaN/IsInf; Hardmax; CumSum/CumProd; Trilu; EyeLike;
//! ReverseSequence; Dropout in training mode. Each graph runs on the CUDA executor (with
//! and without a CUDA graph) against `kiln_cpu::run`: integers, bools and casts exactly,
//! FP32 to 1e-5 (relative L2), FP16 to 1e-2. The host test checks that every graph
//! plans and lowers without a GPU.

mod support;

use kiln_cuda::executor::{Options, lower};
use kiln_cuda::plan::ExecutionPlan;
use kiln_cuda::{Device, Executor};
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp, VariadicOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::reduce::{ReduceOp, Softmax, SoftmaxKind};
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Element, NetworkDefinition, OutletId, Shape, Tensor};
use support::*;

const INTS: [DType; 8] = [DType::I8, DType::U8, DType::I16, DType::U16, DType::I32, DType::U32, DType::I64, DType::U64];
const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A scalar constant `v` of `dtype` (through the CPU's Cast, so any dtype).
fn constant(net: &mut NetworkDefinition, name: &str, dtype: DType, v: f64) -> OutletId {
    let t = Tensor::from_vec(vec![], vec![v]).unwrap();
    let t = kiln_cpu::eval_op(
        &el(ElementwiseOp::Cast { to: dtype, saturate: true }),
        &[Some(t)],
        1,
        &kiln_cpu::EvalContext::default(),
    )
    .unwrap()
    .remove(0);
    net.add_constant(name, t)
}

fn cmp(c: CompareOp) -> Op {
    el(ElementwiseOp::Compare(c))
}

fn cast(to: DType, saturate: bool) -> Op {
    el(ElementwiseOp::Cast { to, saturate })
}

/// Arithmetic, compare, Where, Clip, variadic folds, bit ops, unary maps, Pow and a
/// cast of one integer dtype, broadcasting `[2, 3, 4]` with `[3, 1]`.
fn int_case(dt: DType) -> Case {
    let mut net = NetworkDefinition::new("ints");
    let a = net.add_input("a", dt, Shape::known(&[2, 3, 4]));
    let b = net.add_input("b", dt, Shape::known(&[3, 1]));
    let one = constant(&mut net, "one", dt, 1.0);
    let three = constant(&mut net, "three", dt, 3.0);
    let seven = constant(&mut net, "seven", dt, 7.0);
    // A divisor without zeros.
    let abs_b = net.add("abs_b", un(UnaryOp::Abs), &[b]).unwrap();
    let d = net.add("d", bin(BinaryOp::Add), &[abs_b, one]).unwrap();
    let mut outs = vec![];
    for (name, op) in [
        ("add", BinaryOp::Add),
        ("sub", BinaryOp::Sub),
        ("mul", BinaryOp::Mul),
        ("div", BinaryOp::Div),
        ("mod", BinaryOp::Mod { fmod: false }),
        ("fmod", BinaryOp::Mod { fmod: true }),
        ("and", BinaryOp::BitwiseAnd),
        ("or", BinaryOp::BitwiseOr),
        ("xor", BinaryOp::BitwiseXor),
    ] {
        outs.push((name, net.add(name, bin(op), &[a, d]).unwrap()));
    }
    if dt.is_signed() {
        let nd = net.add("neg_d", un(UnaryOp::Neg), &[d]).unwrap();
        outs.push(("div_neg", net.add("div_neg", bin(BinaryOp::Div), &[a, nd]).unwrap()));
        outs.push(("mod_neg", net.add("mod_neg", bin(BinaryOp::Mod { fmod: false }), &[a, nd]).unwrap()));
        outs.push(("fmod_neg", net.add("fmod_neg", bin(BinaryOp::Mod { fmod: true }), &[a, nd]).unwrap()));
    } else {
        let sh = net.add("count", bin(BinaryOp::BitwiseAnd), &[b, seven]).unwrap();
        outs.push(("shl", net.add("shl", bin(BinaryOp::BitShift { left: true }), &[a, sh]).unwrap()));
        outs.push(("shr", net.add("shr", bin(BinaryOp::BitShift { left: false }), &[a, sh]).unwrap()));
        outs.push(("shl_wide", net.add("shl_wide", bin(BinaryOp::BitShift { left: true }), &[a, b]).unwrap()));
    }
    for (name, op) in [("max", VariadicOp::Max), ("min", VariadicOp::Min), ("sum", VariadicOp::Sum)] {
        outs.push((name, net.add(name, el(ElementwiseOp::Variadic(op)), &[a, b]).unwrap()));
    }
    outs.push(("sum3", net.add("sum3", el(ElementwiseOp::Variadic(VariadicOp::Sum)), &[a, a, a]).unwrap()));
    for (name, c) in [
        ("eq", CompareOp::Equal),
        ("lt", CompareOp::Less),
        ("gt", CompareOp::Greater),
        ("le", CompareOp::LessOrEqual),
        ("ge", CompareOp::GreaterOrEqual),
    ] {
        outs.push((name, net.add(name, cmp(c), &[a, b]).unwrap()));
    }
    let lt = net.add("lt2", cmp(CompareOp::Less), &[a, b]).unwrap();
    outs.push(("where", net.add("where", el(ElementwiseOp::Where), &[lt, a, b]).unwrap()));
    let lo = constant(&mut net, "lo", dt, if dt.is_signed() { -20.0 } else { 10.0 });
    let hi = constant(&mut net, "hi", dt, 30.0);
    let clip = ElementwiseOp::Clip { min: None, max: None };
    outs.push(("clip", net.add("clip", el(clip.clone()), &[a, lo, hi]).unwrap()));
    outs.push(("clip_min", net.add("clip_min", el(clip), &[a, lo]).unwrap()));
    for (name, u) in [
        ("abs", UnaryOp::Abs),
        ("neg", UnaryOp::Neg),
        ("sign", UnaryOp::Sign),
        ("relu", UnaryOp::Relu),
        ("not", UnaryOp::BitwiseNot),
    ] {
        outs.push((name, net.add(name, un(u), &[a]).unwrap()));
    }
    let e = net.add("exp3", bin(BinaryOp::BitwiseAnd), &[b, three]).unwrap();
    outs.push(("pow", net.add("pow", bin(BinaryOp::Pow), &[a, e]).unwrap()));
    let two = constant(&mut net, "two", dt, 2.0);
    outs.push(("pow2", net.add("pow2", bin(BinaryOp::Pow), &[a, two]).unwrap()));
    let axis = net.add_constant("axis", ints(&[-1]));
    let cs = MovementOp::CumSum { exclusive: false, reverse: false };
    let short = net.add("short", bin(BinaryOp::BitwiseAnd), &[a, seven]).unwrap();
    outs.push(("cumsum", net.add("cumsum", mv(cs), &[short, axis]).unwrap()));
    outs.push(("to_f32", net.add("to_f32", cast(DType::F32, true), &[a]).unwrap()));
    outs.push(("to_i8", net.add("to_i8", cast(DType::I8, true), &[a]).unwrap()));
    outs.push(("to_bool", net.add("to_bool", cast(DType::Bool, true), &[a]).unwrap()));
    for (name, o) in outs {
        out(&mut net, o, name);
    }
    Case {
        name: leak(format!("ints_{dt}")),
        graph: net.build(),
        inputs: vec![(dt, vec![2, 3, 4]), (dt, vec![3, 1])],
        tol: 0.0,
    }
}

/// Binary arithmetic, compare, CumSum and casts of f64.
fn f64_case() -> Case {
    let dt = DType::F64;
    let mut net = NetworkDefinition::new("f64");
    let a = net.add_input("a", dt, Shape::known(&[2, 3, 4]));
    let b = net.add_input("b", dt, Shape::known(&[3, 1]));
    let mut outs = vec![];
    for (name, op) in [
        ("add", BinaryOp::Add),
        ("sub", BinaryOp::Sub),
        ("mul", BinaryOp::Mul),
        ("div", BinaryOp::Div),
        ("fmod", BinaryOp::Mod { fmod: true }),
        ("prelu", BinaryOp::PRelu),
    ] {
        outs.push((name, net.add(name, bin(op), &[a, b]).unwrap()));
    }
    let abs_a = net.add("abs_a", un(UnaryOp::Abs), &[a]).unwrap();
    outs.push(("pow", net.add("pow", bin(BinaryOp::Pow), &[abs_a, b]).unwrap()));
    for (name, op) in [("max", VariadicOp::Max), ("min", VariadicOp::Min), ("mean", VariadicOp::Mean)] {
        outs.push((name, net.add(name, el(ElementwiseOp::Variadic(op)), &[a, b]).unwrap()));
    }
    for (name, c) in [("eq", CompareOp::Equal), ("lt", CompareOp::Less), ("ge", CompareOp::GreaterOrEqual)] {
        outs.push((name, net.add(name, cmp(c), &[a, b]).unwrap()));
    }
    let axis = net.add_constant("axis", ints(&[1]));
    let cp = MovementOp::CumProd { exclusive: true, reverse: true };
    outs.push(("cumprod", net.add("cumprod", mv(cp), &[a, axis]).unwrap()));
    for to in [DType::F32, DType::F16, DType::BF16, DType::I64, DType::U8, DType::Bool] {
        let name = leak(format!("to_{to}"));
        outs.push((name, net.add(name, cast(to, true), &[a]).unwrap()));
    }
    for (name, o) in outs {
        out(&mut net, o, name);
    }
    Case { name: "f64", graph: net.build(), inputs: vec![(dt, vec![2, 3, 4]), (dt, vec![3, 1])], tol: 1e-12 }
}

/// Cast from `from` (scaled to cover the integer ranges and float rounding) to every
/// dtype but FP8.
fn cast_case(from: DType) -> Case {
    let mut net = NetworkDefinition::new("casts");
    let x = net.add_input("x", from, Shape::known(&[4, 8]));
    let src = if from.is_float() {
        let k = constant(&mut net, "k", from, 300.5);
        net.add("scaled", bin(BinaryOp::Mul), &[x, k]).unwrap()
    } else {
        x
    };
    for to in DType::ALL {
        if to == from || matches!(to, DType::F8E4M3FN | DType::F8E5M2) {
            continue;
        }
        let name = leak(format!("to_{to}"));
        let c = net.add(name, cast(to, true), &[src]).unwrap();
        out(&mut net, c, name);
    }
    // CastLike to f16 through a like-input.
    let like = net.add_constant("like", Tensor::from_vec(vec![1], vec![half::f16::ONE]).unwrap());
    let cl = net.add("castlike", el(ElementwiseOp::CastLike { saturate: true }), &[src, like]).unwrap();
    out(&mut net, cl, "castlike");
    Case { name: leak(format!("casts_from_{from}")), graph: net.build(), inputs: vec![(from, vec![4, 8])], tol: 0.0 }
}

/// FP8 round trips from f32 and f16, saturating or not, with values beyond each
/// format's range (infinities cut off by Clip, NaNs seen by IsNaN, so that every output
/// compares exactly).
fn fp8_case(src: DType) -> Case {
    let mut net = NetworkDefinition::new("fp8");
    let x = net.add_input("x", src, Shape::known(&[8, 16]));
    for (fp8, scale) in [(DType::F8E4M3FN, 500.0), (DType::F8E5M2, 70000.0)] {
        let k = constant(&mut net, &format!("k_{fp8}"), src, scale);
        let v = net.add(&format!("v_{fp8}"), bin(BinaryOp::Mul), &[x, k]).unwrap();
        for sat in [true, false] {
            let tag = format!("{fp8}_{}", if sat { "sat" } else { "nosat" });
            let q = net.add(&format!("q_{tag}"), cast(fp8, sat), &[v]).unwrap();
            let back = net.add(&format!("back_{tag}"), cast(DType::F32, true), &[q]).unwrap();
            let nan = net.add(&format!("nan_{tag}"), el(ElementwiseOp::IsNaN), &[back]).unwrap();
            out(&mut net, nan, &format!("nan_{tag}"));
            let inf = ElementwiseOp::IsInf { detect_positive: true, detect_negative: true };
            let isinf = net.add(&format!("inf_{tag}"), el(inf), &[back]).unwrap();
            out(&mut net, isinf, &format!("inf_{tag}"));
            let zero = constant(&mut net, &format!("zero_{tag}"), DType::F32, 0.0);
            let finite = net.add(&format!("finite_{tag}"), el(ElementwiseOp::Where), &[nan, zero, back]).unwrap();
            let clip = ElementwiseOp::Clip { min: Some(-1e6), max: Some(1e6) };
            let c = net.add(&format!("clip_{tag}"), el(clip), &[finite]).unwrap();
            out(&mut net, c, &format!("value_{tag}"));
            // FP8 to the other dtypes.
            let h = net.add(&format!("to_f16_{tag}"), cast(DType::F16, true), &[q]).unwrap();
            let hc = net.add(&format!("to_f16_clip_{tag}"), cast(DType::Bool, true), &[h]).unwrap();
            out(&mut net, hc, &format!("to_bool_{tag}"));
            let i = net.add(&format!("to_i32_{tag}"), cast(DType::I32, true), &[q]).unwrap();
            out(&mut net, i, &format!("to_i32_{tag}"));
        }
    }
    Case { name: leak(format!("fp8_from_{src}")), graph: net.build(), inputs: vec![(src, vec![8, 16])], tol: 0.0 }
}

/// IsNaN and IsInf (each detection) of infinities, NaNs and finite values.
fn classify_case(dt: DType) -> Case {
    let mut net = NetworkDefinition::new("classify");
    let x = net.add_input("x", dt, Shape::known(&[5, 7]));
    let zero = net.add("zero", bin(BinaryOp::Sub), &[x, x]).unwrap();
    let inf = net.add("inf", bin(BinaryOp::Div), &[x, zero]).unwrap();
    let nan = net.add("nan", un(UnaryOp::Log), &[x]).unwrap();
    let k = constant(&mut net, "k", dt, 0.3);
    let big = net.add("big", cmp(CompareOp::Greater), &[x, k]).unwrap();
    let mix = net.add("mix", el(ElementwiseOp::Where), &[big, inf, nan]).unwrap();
    let isnan = net.add("isnan", el(ElementwiseOp::IsNaN), &[mix]).unwrap();
    out(&mut net, isnan, "isnan");
    for (name, p, n) in [("isinf", true, true), ("isinf_pos", true, false), ("isinf_neg", false, true)] {
        let op = ElementwiseOp::IsInf { detect_positive: p, detect_negative: n };
        let o = net.add(name, el(op), &[mix]).unwrap();
        out(&mut net, o, name);
    }
    Case { name: leak(format!("classify_{dt}")), graph: net.build(), inputs: vec![(dt, vec![5, 7])], tol: 0.0 }
}

/// Hardmax along one axis (opset 13) and over the coerced 2-D rows (before).
fn hardmax_case(dt: DType) -> Case {
    let mut net = NetworkDefinition::new("hardmax");
    let x = net.add_input("x", dt, Shape::known(&[3, 4, 5]));
    for (name, axis, coerce_2d) in [("a0", 0, false), ("a1", 1, false), ("last", -1, false), ("rows1", 1, true)] {
        let s = Softmax { kind: SoftmaxKind::Hardmax, axis, coerce_2d };
        let o = net.add(name, red(ReduceOp::Softmax(s)), &[x]).unwrap();
        out(&mut net, o, name);
    }
    Case { name: leak(format!("hardmax_{dt}")), graph: net.build(), inputs: vec![(dt, vec![3, 4, 5])], tol: 0.0 }
}

/// CumSum and CumProd (exclusive, reverse) with constant axes.
fn cumulate_case(dt: DType) -> Case {
    let mut net = NetworkDefinition::new("cumulate");
    let x = net.add_input("x", dt, Shape::known(&[3, 4, 2]));
    for (i, (exclusive, reverse)) in
        [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate()
    {
        for axis in [0i64, -2, 2] {
            let a = net.add_constant(&format!("axis{i}_{axis}"), ints(&[axis]));
            let name = format!("cumsum{i}_{axis}");
            let o = net.add(&name, mv(MovementOp::CumSum { exclusive, reverse }), &[x, a]).unwrap();
            out(&mut net, o, &name);
            if dt.is_float() {
                let name = format!("cumprod{i}_{axis}");
                let o = net.add(&name, mv(MovementOp::CumProd { exclusive, reverse }), &[x, a]).unwrap();
                out(&mut net, o, &name);
            }
        }
    }
    let tol = if matches!(dt, DType::F16 | DType::BF16) { 1e-2 } else { 1e-6 };
    Case { name: leak(format!("cumulate_{dt}")), graph: net.build(), inputs: vec![(dt, vec![3, 4, 2])], tol }
}

/// Trilu with constant k (upper and lower, every storage size), EyeLike.
fn trilu_eye_case(dt: DType) -> Case {
    let mut net = NetworkDefinition::new("trilu");
    let x = net.add_input("x", dt, Shape::known(&[2, 4, 5]));
    for upper in [true, false] {
        for k in [-1i64, 0, 2, 7] {
            let name = format!("trilu_{upper}_{k}");
            let kc = net.add_constant(&format!("k_{upper}_{k}"), Tensor::from_vec(vec![], vec![k]).unwrap());
            let o = net.add(&name, mv(MovementOp::Trilu { upper }), &[x, kc]).unwrap();
            out(&mut net, o, &name);
        }
        let name = format!("trilu_{upper}");
        let o = net.add(&name, mv(MovementOp::Trilu { upper }), &[x]).unwrap();
        out(&mut net, o, &name);
    }
    let m = net.add_input("m", dt, Shape::known(&[4, 6]));
    for (name, dtype, k) in [("eye", None, 0), ("eye_i32", Some(DType::I32), 1), ("eye_bool", Some(DType::Bool), -2)] {
        let o = net.add(name, mv(MovementOp::EyeLike { dtype, k }), &[m]).unwrap();
        out(&mut net, o, name);
    }
    Case {
        name: leak(format!("trilu_eye_{dt}")),
        graph: net.build(),
        inputs: vec![(dt, vec![2, 4, 5]), (dt, vec![4, 6])],
        tol: 0.0,
    }
}

/// Range of constant start, limit and delta (read on the device) in several dtypes.
fn range_case() -> Case {
    let mut net = NetworkDefinition::new("range");
    let x = net.add_input("x", DType::F32, Shape::known(&[2]));
    for (dt, s, l, d) in [
        (DType::F32, 0.5, 10.0, 0.75),
        (DType::F16, -3.0, 4.0, 0.3),
        (DType::F64, 1.0, -2.0, -0.1),
        (DType::I32, 10.0, -3.0, -2.0),
        (DType::I64, -5.0, 7.0, 3.0),
        (DType::U8, 2.0, 90.0, 11.0),
    ] {
        let ins: Vec<OutletId> =
            [s, l, d].iter().enumerate().map(|(i, v)| constant(&mut net, &format!("{dt}_{i}"), dt, *v)).collect();
        let o = net.add(&format!("range_{dt}"), mv(MovementOp::Range), &ins).unwrap();
        out(&mut net, o, &format!("range_{dt}"));
    }
    let o = net.add("x_out", un(UnaryOp::Neg), &[x]).unwrap();
    out(&mut net, o, "x");
    Case { name: "range", graph: net.build(), inputs: vec![(DType::F32, vec![2])], tol: 0.0 }
}

fn cases() -> Vec<Case> {
    let mut c: Vec<Case> = INTS.iter().map(|&d| int_case(d)).collect();
    c.push(range_case());
    c.push(f64_case());
    for d in FLOATS.iter().chain(&INTS).chain(&[DType::Bool]) {
        c.push(cast_case(*d));
    }
    c.push(fp8_case(DType::F32));
    c.push(fp8_case(DType::F16));
    for d in [DType::F32, DType::F16, DType::BF16] {
        c.push(classify_case(d));
        c.push(hardmax_case(d));
    }
    c.push(classify_case(DType::F64));
    for d in [DType::F32, DType::F16, DType::F64, DType::I32, DType::I64, DType::U8] {
        c.push(cumulate_case(d));
    }
    for d in [DType::F32, DType::F16, DType::U8, DType::I64, DType::Bool] {
        c.push(trilu_eye_case(d));
    }
    c
}

// ---------------------------------------------------------------------------------------
// Graphs whose inputs need chosen values (a k, an axis, sequence lengths, a ratio)
// ---------------------------------------------------------------------------------------

fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Trilu with k, CumSum with an axis (i64 and i32), ReverseSequence, Dropout in
/// training mode, Pow of mixed dtypes: (case, inputs).
fn valued_cases() -> Vec<(Case, Vec<Tensor>)> {
    let mut v = vec![];
    for (k, upper) in [(-1i64, true), (2, false), (9, true)] {
        let mut net = NetworkDefinition::new("trilu_k");
        let x = net.add_input("x", DType::F32, Shape::known(&[3, 4, 5]));
        let kk = net.add_input("k", DType::I64, Shape::known(&[]));
        let o = net.add("trilu", mv(MovementOp::Trilu { upper }), &[x, kk]).unwrap();
        out(&mut net, o, "y");
        let case = Case { name: "trilu_k_input", graph: net.build(), inputs: vec![], tol: 0.0 };
        v.push((case, vec![tensor(DType::F32, &[3, 4, 5], 7), t(&[], vec![k])]));
    }
    for (axis, dt) in [(Tensor::from_vec(vec![], vec![1i64]).unwrap(), DType::F32), (t(&[1], vec![-1i32]), DType::I32)]
    {
        let mut net = NetworkDefinition::new("cumsum_axis");
        let x = net.add_input("x", dt, Shape::known(&[2, 3, 4]));
        let a = net.add_input("axis", axis.dtype(), Shape::known(axis.shape()));
        let o = net.add("cs", mv(MovementOp::CumSum { exclusive: true, reverse: false }), &[x, a]).unwrap();
        out(&mut net, o, "sum");
        let o = net.add("cp", mv(MovementOp::CumProd { exclusive: false, reverse: true }), &[x, a]).unwrap();
        out(&mut net, o, "prod");
        let case = Case { name: "cumulate_axis_input", graph: net.build(), inputs: vec![], tol: 1e-6 };
        v.push((case, vec![tensor(dt, &[2, 3, 4], 9), axis]));
    }
    for (batch_axis, time_axis, lens) in [(1usize, 0usize, vec![4i64, 2, 1]), (0, 1, vec![1, 3, 0])] {
        let mut net = NetworkDefinition::new("reverse_sequence");
        let shape = if batch_axis == 1 { [4usize, 3, 2] } else { [3, 4, 2] };
        let x = net.add_input("x", DType::I32, Shape::known(&shape));
        let l = net.add_input("lens", DType::I64, Shape::known(&[3]));
        let o = net.add("rs", mv(MovementOp::ReverseSequence { batch_axis, time_axis }), &[x, l]).unwrap();
        out(&mut net, o, "y");
        let case = Case { name: "reverse_sequence", graph: net.build(), inputs: vec![], tol: 0.0 };
        v.push((case, vec![tensor(DType::I32, &shape, 11), t(&[3], lens)]));
    }
    for (ratio, training) in [(0.0f32, true), (0.5, false)] {
        let mut net = NetworkDefinition::new("dropout");
        let x = net.add_input("x", DType::F32, Shape::known(&[3, 4]));
        let r = net.add_input("r", DType::F32, Shape::known(&[]));
        let tm = net.add_input("t", DType::Bool, Shape::known(&[]));
        let o = net.add_layer("dropout", el(ElementwiseOp::Dropout { mask_is_bool: true }), &[x, r, tm], 2).unwrap();
        out(&mut net, o[0], "y");
        out(&mut net, o[1], "mask");
        let case = Case { name: "dropout_training", graph: net.build(), inputs: vec![], tol: 0.0 };
        let inputs =
            vec![tensor(DType::F32, &[3, 4], 5), scalar(ratio), Tensor::from_bools(vec![], vec![training]).unwrap()];
        v.push((case, inputs));
    }
    // Pow: float base, integer exponent and the reverse; integers of one dtype.
    let pows: [(DType, DType, Tensor, Tensor); 5] = [
        (DType::F32, DType::I32, tensor(DType::F32, &[2, 3], 1), t(&[3], vec![2i32, 3, -1])),
        (DType::F32, DType::U64, tensor(DType::F32, &[2, 3], 2), t(&[3], vec![0u64, 5, 1])),
        (DType::I32, DType::F32, t(&[2, 3], vec![1i32, 2, 3, -4, 5, 6]), t(&[3], vec![2.0f32, 0.5, 3.0])),
        (DType::I64, DType::I64, t(&[2, 3], vec![1i64, -2, 3, 4, 5, 6]), t(&[3], vec![3i64, 5, 9])),
        (
            DType::F16,
            DType::F32,
            t(&[2, 3], [0.5f32, 1.25, 2.0, 0.75, 3.5, 1.0].map(half::f16::from_f32).to_vec()),
            t(&[3], vec![1.5f32, -2.0, 4.0]),
        ),
    ];
    for (bt, et, base, exp) in pows {
        let mut net = NetworkDefinition::new("pow");
        let a = net.add_input("a", bt, Shape::known(&[2, 3]));
        let b = net.add_input("b", et, Shape::known(&[3]));
        let o = net.add("pow", bin(BinaryOp::Pow), &[a, b]).unwrap();
        out(&mut net, o, "y");
        let case = Case { name: leak(format!("pow_{bt}_{et}")), graph: net.build(), inputs: vec![], tol: 1e-6 };
        v.push((case, vec![base, exp]));
    }
    v
}

#[test]
fn every_dtype_case_plans_and_lowers_on_the_host() {
    check_lowers(cases());
    for (c, inputs) in valued_cases() {
        let plan = ExecutionPlan::new(&c.graph).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        lower(&plan, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        kiln_cpu::run(&c.graph, &inputs).unwrap_or_else(|e| panic!("{}: cpu: {e}", c.name));
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_dtype_case_matches_the_cpu() {
    check_on_gpu(cases());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn valued_inputs_match_the_cpu() {
    let dev = Device::open(0).expect("a GPU");
    for (c, inputs) in valued_cases() {
        let want = kiln_cpu::run(&c.graph, &inputs).unwrap_or_else(|e| panic!("{}: cpu: {e}", c.name));
        for use_cuda_graph in [false, true] {
            let opts = Options { use_cuda_graph, check_each_launch: true, ..Options::default() };
            let mut ex = Executor::new(&dev, &c.graph, opts).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let got = ex.run(&inputs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                compare(c.name, &format!("output {k}"), w, g, c.tol);
            }
            eprintln!("{}: ok (cuda graph {use_cuda_graph})", c.name);
        }
    }
}
