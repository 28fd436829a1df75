//! Quantization ops on small hand-computed cases.

use kiln_ir::ops::QuantOp;
use kiln_ir::ops::quant::{AutoPad, ConvGeometry, Dequantize, Quantize};
use kiln_ir::{DType, NetworkDefinition, Op, Shape, Tensor};

fn quantize(axis: i64, block_size: usize, saturate: bool) -> Op {
    Op::Quant(QuantOp::Quantize(Quantize { axis, block_size, saturate, output_dtype: None, precision: None }))
}

/// Runs a one-layer graph on constant inputs (`None` = omitted).
fn run_layer(op: Op, inputs: Vec<Option<Tensor>>, n_outputs: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let ids: Vec<_> =
        inputs.into_iter().enumerate().map(|(i, t)| t.map(|t| net.add_constant(&format!("c{i}"), t))).collect();
    let outs = net.add_layer_opt("op", op, ids, n_outputs)?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("y{i}"))?;
    }
    kiln_cpu::run(&net.build(), &[])
}

fn t<T: kiln_ir::Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

#[test]
fn quantize_per_axis_rounds_half_to_even_and_saturates() {
    let x = t(&[2, 3], vec![2.5f32, 3.5, -1.0, 1000.0, 7.0, -600.0]);
    let scale = t(&[2], vec![1.0f32, 2.0]);
    let zero = t(&[2], vec![10u8, 128]);
    let y = run_layer(quantize(0, 0, true), vec![Some(x), Some(scale), Some(zero)], 1).unwrap();
    // Row 0: 2.5→2, 3.5→4, -1 (+10). Row 1: 500→255, 3.5→4 (+128), -300+128→0.
    assert_eq!(y[0].to_vec::<u8>().unwrap(), vec![12, 14, 9, 255, 132, 0]);
}

#[test]
fn dequantize_blocked_int8() {
    let x = t(&[1, 4], vec![-10i8, 20, 5, 7]);
    let scale = t(&[1, 2], vec![0.5f32, 2.0]);
    let zero = t(&[1, 2], vec![2i8, -1]);
    let op = Op::Quant(QuantOp::Dequantize(Dequantize { axis: 1, block_size: 2, output_dtype: None }));
    let y = run_layer(op, vec![Some(x), Some(scale), Some(zero)], 1).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![-6.0, 9.0, 12.0, 16.0]);
}

#[test]
fn quantize_fp8_saturates_or_overflows() {
    let x = t(&[4], vec![1.0f32, 1000.0, -0.3, 0.0]);
    let zero = Tensor::from_vec_as(DType::F8E4M3FN, vec![], vec![0u8]).unwrap();
    let scale = Tensor::scalar(1.0f32);
    let sat = run_layer(quantize(1, 0, true), vec![Some(x.clone()), Some(scale.clone()), Some(zero.clone())], 1);
    // 1.0 = 0x38; 448 = 0x7E; -0.3 → -0.3125 = 0xAA (sign, exp field 5, mantissa 2).
    assert_eq!(sat.unwrap()[0].bytes().to_vec(), vec![0x38, 0x7E, 0xAA, 0x00]);
    let nosat = run_layer(quantize(1, 0, false), vec![Some(x), Some(scale), Some(zero)], 1).unwrap();
    assert_eq!(nosat[0].bytes()[1], 0x7F);
}

#[test]
fn dynamic_quantize_covers_the_range_and_zero() {
    let x = t(&[4], vec![-1.0f32, 0.0, 1.55, 2.55]);
    let y = run_layer(Op::Quant(QuantOp::DynamicQuantize), vec![Some(x)], 3).unwrap();
    let scale = y[1].to_vec::<f32>().unwrap()[0];
    assert!((scale - 3.55 / 255.0).abs() < 1e-7);
    let zp = y[2].to_vec::<u8>().unwrap()[0];
    assert_eq!(zp, 72); // round(1 / (3.55/255)) = round(71.83)
    assert_eq!(y[0].to_vec::<u8>().unwrap(), vec![0, 72, 183, 255]);
}

#[test]
fn matmul_integer_with_row_and_column_zero_points() {
    let a = t(&[2, 3], vec![1u8, 2, 3, 4, 5, 6]);
    let b = t(&[3, 2], vec![7u8, 8, 9, 10, 11, 12]);
    let az = t(&[2], vec![1u8, 2]);
    let bz = t(&[2], vec![3u8, 0]);
    let y = run_layer(Op::Quant(QuantOp::MatMulInteger), vec![Some(a), Some(b), Some(az), Some(bz)], 1).unwrap();
    // A-az = [[0,1,2],[2,3,4]]; B-bz = [[4,8],[6,10],[8,12]].
    assert_eq!(y[0].shape(), &[2, 2]);
    assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![22, 34, 58, 94]);
}

fn geometry(pads: Option<Vec<usize>>) -> ConvGeometry {
    ConvGeometry { auto_pad: AutoPad::NotSet, dilations: None, group: 1, kernel_shape: None, pads, strides: None }
}

#[test]
fn conv_integer_with_padding_and_zero_point() {
    let x = t(&[1, 1, 2, 2], vec![2u8, 3, 4, 5]);
    let w = t(&[1, 1, 2, 2], vec![1u8, 1, 1, 1]);
    let xz = Tensor::scalar(1u8);
    let op = Op::Quant(QuantOp::ConvInteger(geometry(Some(vec![1, 1, 1, 1]))));
    let y = run_layer(op, vec![Some(x), Some(w), Some(xz)], 1).unwrap();
    // x - 1 = [[1,2],[3,4]] padded by one; 2x2 all-ones kernel sums windows.
    assert_eq!(y[0].shape(), &[1, 1, 3, 3]);
    assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![1, 3, 2, 4, 10, 6, 3, 7, 4]);
}

#[test]
fn qlinear_matmul_requantizes() {
    let a = t(&[1, 2], vec![130u8, 140]);
    let b = t(&[2, 1], vec![129u8, 131]);
    let (sa, sb, sy) = (Tensor::scalar(0.1f32), Tensor::scalar(0.2f32), Tensor::scalar(0.05f32));
    let (za, zb, zy) = (Tensor::scalar(128u8), Tensor::scalar(128u8), Tensor::scalar(100u8));
    let inputs = vec![Some(a), Some(sa), Some(za), Some(b), Some(sb), Some(zb), Some(sy), Some(zy)];
    let y = run_layer(Op::Quant(QuantOp::QLinearMatMul), inputs, 1).unwrap();
    // (2·1 + 12·3) = 38; 38 · 0.1·0.2/0.05 = 15.2 → 15; + 100.
    assert_eq!(y[0].to_vec::<u8>().unwrap(), vec![115]);
}

#[test]
fn bad_axis_and_shapes_are_errors() {
    let x = t(&[2, 3], vec![0f32; 6]);
    let scale = t(&[3], vec![1f32; 3]);
    let mut net = NetworkDefinition::new("bad");
    let xi = net.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let s = net.add_constant("s", scale.clone());
    assert!(net.add("q", quantize(5, 0, true), &[xi, s]).is_err());
    // Per-axis scale of the wrong length, caught at run time too.
    assert!(run_layer(quantize(0, 0, true), vec![Some(x.clone()), Some(scale)], 1).is_err());
    let w = t(&[1, 2, 1, 1], vec![1u8, 1]);
    let op = Op::Quant(QuantOp::ConvInteger(geometry(None)));
    assert!(run_layer(op, vec![Some(t(&[1, 1, 2, 2], vec![1u8; 4])), Some(w)], 1).is_err());
}
