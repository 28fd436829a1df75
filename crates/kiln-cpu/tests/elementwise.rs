//! Elementwise kernels on small graphs, against hand-computed values.

use kiln_ir::ops::ElementwiseOp as E;
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, LogicOp, UnaryOp, VariadicOp};
use kiln_ir::{DType, NetworkDefinition, Op, Shape, Tensor};

/// Runs `op` on `inputs` (all graph inputs) and returns its outputs.
fn run_n(op: E, inputs: &[Tensor], n_outputs: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let ins: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| net.add_input(&format!("x{i}"), t.dtype(), Shape::known(t.shape())))
        .collect();
    let outs = net.add_layer("op", Op::Elementwise(op), &ins, n_outputs)?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("y{i}"))?;
    }
    kiln_cpu::run(&net.build(), inputs)
}

fn run(op: E, inputs: &[Tensor]) -> kiln_cpu::Result<Tensor> {
    Ok(run_n(op, inputs, 1)?.remove(0))
}

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "got {got:?}, want {want:?}");
    }
}

#[test]
fn add_broadcasts_rows_and_columns() {
    let a = f32s(&[2, 1], &[1.0, 2.0]);
    let b = f32s(&[3], &[10.0, 20.0, 30.0]);
    let y = run(E::Binary(BinaryOp::Add), &[a, b]).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
}

#[test]
fn large_same_shape_mul_takes_parallel_path() {
    let n = 100_000;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let y = run(E::Binary(BinaryOp::Mul), &[f32s(&[n], &a), f32s(&[n], &a)]).unwrap();
    let v = y.to_vec::<f32>().unwrap();
    assert_eq!(v[3], 2.25);
    assert_eq!(v[n - 1], a[n - 1] * a[n - 1]);
}

#[test]
fn integer_div_truncates_and_rejects_zero() {
    let a = Tensor::from_vec(vec![4], vec![7i32, -7, 7, -7]).unwrap();
    let b = Tensor::from_vec(vec![4], vec![2i32, 2, -2, -2]).unwrap();
    let y = run(E::Binary(BinaryOp::Div), &[a.clone(), b]).unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![3, -3, -3, 3]);
    let z = Tensor::from_vec(vec![4], vec![1i32, 0, 1, 1]).unwrap();
    assert!(run(E::Binary(BinaryOp::Div), &[a, z]).is_err());
}

#[test]
fn mod_sign_rules() {
    let a = Tensor::from_vec(vec![4], vec![7i64, -7, 7, -7]).unwrap();
    let b = Tensor::from_vec(vec![4], vec![3i64, 3, -3, -3]).unwrap();
    let py = run(E::Binary(BinaryOp::Mod { fmod: false }), &[a.clone(), b.clone()]).unwrap();
    assert_eq!(py.to_vec::<i64>().unwrap(), vec![1, 2, -2, -1]);
    let c = run(E::Binary(BinaryOp::Mod { fmod: true }), &[a, b]).unwrap();
    assert_eq!(c.to_vec::<i64>().unwrap(), vec![1, -1, 1, -1]);
    let x = f32s(&[2], &[5.5, -5.5]);
    let d = f32s(&[2], &[2.0, 2.0]);
    assert!(run(E::Binary(BinaryOp::Mod { fmod: false }), &[x.clone(), d.clone()]).is_err());
    let f = run(E::Binary(BinaryOp::Mod { fmod: true }), &[x, d]).unwrap();
    assert_eq!(f.to_vec::<f32>().unwrap(), vec![1.5, -1.5]);
}

#[test]
fn pow_mixed_dtypes() {
    let base = f32s(&[3], &[2.0, 3.0, 4.0]);
    let exp = Tensor::from_vec(vec![3], vec![3i64, 2, -1]).unwrap();
    let y = run(E::Binary(BinaryOp::Pow), &[base, exp]).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[8.0, 9.0, 0.25]);
    let ib = Tensor::from_vec(vec![2], vec![3i32, -2]).unwrap();
    let fe = f32s(&[2], &[2.0, 3.0]);
    let y = run(E::Binary(BinaryOp::Pow), &[ib, fe]).unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![9, -8]);
}

#[test]
fn activations() {
    let x = f32s(&[4], &[-2.0, -0.5, 0.5, 3.0]);
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let y = run(E::Unary(UnaryOp::Sigmoid), std::slice::from_ref(&x)).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[sig(-2.0), sig(-0.5), sig(0.5), sig(3.0)]);
    let y = run(E::Unary(UnaryOp::HardSwish), std::slice::from_ref(&x)).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[-2.0 / 6.0, -0.5 * 2.5 / 6.0, 0.5 * 3.5 / 6.0, 3.0]);
    let y = run(E::Unary(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }), std::slice::from_ref(&x)).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[0.1, 0.4, 0.6, 1.0]);
    let y = run(E::Unary(UnaryOp::LeakyRelu { alpha: 0.1 }), std::slice::from_ref(&x)).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[-0.2, -0.05, 0.5, 3.0]);
    let y = run(E::Unary(UnaryOp::Erf), std::slice::from_ref(&x)).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[-0.995_322_3, -0.520_499_9, 0.520_499_9, 0.999_977_9]);
    let y = run(E::Unary(UnaryOp::Round), &[f32s(&[4], &[0.5, 1.5, 2.5, -2.5])]).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 2.0, 2.0, -2.0]);
}

#[test]
fn f16_computes_in_f32() {
    let x = Tensor::from_vec(vec![2], vec![half::f16::from_f32(4.0), half::f16::from_f32(0.25)]).unwrap();
    let y = run(E::Unary(UnaryOp::Sqrt), &[x]).unwrap();
    assert_eq!(y.to_f64_vec().unwrap(), vec![2.0, 0.5]);
}

#[test]
fn prelu_slope_broadcasts_to_input_only() {
    let x = f32s(&[2, 2], &[-1.0, 2.0, -3.0, 4.0]);
    let s = f32s(&[2], &[0.1, 0.2]);
    let y = run(E::Binary(BinaryOp::PRelu), &[x.clone(), s]).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &[-0.1, 2.0, -0.3, 4.0]);
    let big = f32s(&[3, 2, 2], &[0.1; 12]);
    assert!(run(E::Binary(BinaryOp::PRelu), &[x, big]).is_err());
}

#[test]
fn comparisons_and_logic() {
    let a = Tensor::from_vec(vec![3], vec![1i64, 5, 3]).unwrap();
    let b = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    let lt = run(E::Compare(CompareOp::Less), &[a.clone(), b.clone()]).unwrap();
    assert_eq!(lt.to_bools().unwrap(), vec![true, false, false]);
    let ge = run(E::Compare(CompareOp::GreaterOrEqual), &[a, b]).unwrap();
    assert_eq!(ge.to_bools().unwrap(), vec![false, true, true]);
    let x = run(E::Logic(LogicOp::Xor), &[lt, ge.clone()]).unwrap();
    assert_eq!(x.to_bools().unwrap(), vec![true, true, true]);
    assert_eq!(run(E::Not, &[ge]).unwrap().to_bools().unwrap(), vec![true, false, false]);
}

#[test]
fn variadic_min_max_mean_with_nan() {
    let a = f32s(&[3], &[1.0, f32::NAN, 5.0]);
    let b = f32s(&[1], &[3.0]);
    let c = f32s(&[3], &[2.0, 2.0, 2.0]);
    let mx = run(E::Variadic(VariadicOp::Max), &[a.clone(), b.clone(), c.clone()]).unwrap().to_vec::<f32>().unwrap();
    assert_eq!((mx[0], mx[2]), (3.0, 5.0));
    assert!(mx[1].is_nan());
    let mn = run(E::Variadic(VariadicOp::Min), &[a.clone(), b.clone()]).unwrap().to_vec::<f32>().unwrap();
    assert_eq!((mn[0], mn[2]), (1.0, 3.0));
    let mean = run(E::Variadic(VariadicOp::Mean), &[b, c]).unwrap();
    assert_eq!(mean.to_vec::<f32>().unwrap(), vec![2.5, 2.5, 2.5]);
}

#[test]
fn clip_with_attributes_and_integer_inputs() {
    let x = f32s(&[4], &[-2.0, 0.3, 0.7, 9.0]);
    let y = run(E::Clip { min: Some(0.0), max: Some(1.0) }, &[x]).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 0.3, 0.7, 1.0]);
    let xi = Tensor::from_vec(vec![3], vec![-5i32, 2, 50]).unwrap();
    let y = run(E::Clip { min: None, max: None }, &[xi, Tensor::scalar(0i32), Tensor::scalar(10i32)]).unwrap();
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![0, 2, 10]);
}

#[test]
fn where_broadcasts_condition() {
    let c = Tensor::from_bools(vec![2, 1], vec![true, false]).unwrap();
    let x = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
    let y = Tensor::from_vec(vec![2], vec![-1i64, -2]).unwrap();
    let w = run(E::Where, &[c, x, y]).unwrap();
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(w.to_vec::<i64>().unwrap(), vec![1, 2, -1, -2]);
}

#[test]
fn cast_between_kinds() {
    let x = f32s(&[5], &[-1.7, 0.0, 2.9, f32::NAN, 300.0]);
    let i = run(E::Cast { to: DType::I32, saturate: true }, std::slice::from_ref(&x)).unwrap();
    assert_eq!(&i.to_vec::<i32>().unwrap()[..3], &[-1, 0, 2]);
    let b = run(E::Cast { to: DType::Bool, saturate: true }, std::slice::from_ref(&x)).unwrap();
    assert_eq!(b.to_bools().unwrap(), vec![true, false, true, true, true]);
    let wide = Tensor::from_vec(vec![2], vec![200i16, -1]).unwrap();
    let n = run(E::Cast { to: DType::I8, saturate: true }, &[wide]).unwrap();
    assert_eq!(n.to_vec::<i8>().unwrap(), vec![-56, -1]);
    // FP8: 300 → 288 (e4m3fn spacing 32 near 256), 500 saturates to 448 or is NaN.
    let big = f32s(&[2], &[300.0, 500.0]);
    let sat = run(E::Cast { to: DType::F8E4M3FN, saturate: true }, std::slice::from_ref(&big)).unwrap();
    let back = run(E::Cast { to: DType::F32, saturate: true }, &[sat]).unwrap();
    assert_eq!(back.to_vec::<f32>().unwrap(), vec![288.0, 448.0]);
    let nosat = run(E::Cast { to: DType::F8E4M3FN, saturate: false }, &[big]).unwrap();
    assert_eq!(nosat.to_vec::<u8>().unwrap()[1], 0x7F);
}

#[test]
fn dropout_is_identity_with_true_mask() {
    let x = f32s(&[2], &[1.5, -2.0]);
    let out = run_n(E::Dropout { mask_is_bool: true }, std::slice::from_ref(&x), 2).unwrap();
    assert_eq!(out[0], x);
    assert_eq!(out[1].to_bools().unwrap(), vec![true, true]);
}

#[test]
fn bad_shapes_and_dtypes_are_errors() {
    let a = f32s(&[2], &[1.0, 2.0]);
    let b = f32s(&[3], &[1.0, 2.0, 3.0]);
    let mut net = NetworkDefinition::new("t");
    let (x, y) =
        (net.add_input("a", DType::F32, Shape::known(&[2])), net.add_input("b", DType::F32, Shape::known(&[3])));
    assert!(net.add("add", Op::Elementwise(E::Binary(BinaryOp::Add)), &[x, y]).is_err());
    let i = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
    assert!(run(E::Binary(BinaryOp::Add), &[a.clone(), i]).is_err());
    assert!(run(E::Unary(UnaryOp::Sqrt), &[Tensor::from_vec(vec![1], vec![4i32]).unwrap()]).is_err());
    let _ = b;
}
