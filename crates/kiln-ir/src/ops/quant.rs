//! Quantization ops: (de)quantization between floats and small integers / FP8, and the
//! integer matmul / convolution ops that work on quantized tensors.

use super::{OpFamily, normalize_axis, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QuantOp {
    /// `y = saturate(round_half_even(x / scale) + zero_point)`.
    Quantize(Quantize),
    /// `y = (x - zero_point) * scale`.
    Dequantize(Dequantize),
    /// u8 quantization with scale and zero point computed from the data's range.
    DynamicQuantize,
    /// Integer matmul with zero points, i32 result.
    MatMulInteger,
    /// Integer convolution with zero points, i32 result.
    ConvInteger(ConvGeometry),
    /// Quantized convolution: quantized in, quantized out.
    QLinearConv(ConvGeometry),
    /// Quantized matmul: quantized in, quantized out.
    QLinearMatMul,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quantize {
    pub axis: i64,
    /// 0: per-tensor or per-axis; otherwise the block length along `axis`.
    pub block_size: usize,
    /// FP8 targets only: clamp out-of-range values to the largest finite value.
    pub saturate: bool,
    /// The target type when there is no zero point to tell it (default u8).
    pub output_dtype: Option<DType>,
    /// The type the division is done in (default: the wider of x and scale).
    pub precision: Option<DType>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dequantize {
    pub axis: i64,
    pub block_size: usize,
    /// The output type (default: the scale's type).
    pub output_dtype: Option<DType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Convolution attributes; `None` lists mean the ONNX default for the input's rank.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeometry {
    pub auto_pad: AutoPad,
    pub dilations: Option<Vec<usize>>,
    pub group: usize,
    pub kernel_shape: Option<Vec<usize>>,
    /// `[begin_0, begin_1, …, end_0, end_1, …]`.
    pub pads: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
}

/// Resolved per-spatial-axis convolution parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvPlan {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub out: Vec<usize>,
}

impl ConvGeometry {
    /// Resolves pads (auto_pad) and output sizes for `input` spatial sizes and `kernel`
    /// (from the weight's shape).
    pub fn plan(&self, input: &[usize], kernel: &[usize], op: &str) -> Result<ConvPlan> {
        let n = input.len();
        let list = |v: &Option<Vec<usize>>, what: &str, len: usize, default: usize| -> Result<Vec<usize>> {
            match v {
                None => Ok(vec![default; len]),
                Some(v) if v.len() == len => Ok(v.clone()),
                Some(v) => Err(IrError::invalid(op, format!("{what} has {} values, expected {len}", v.len()))),
            }
        };
        if kernel.len() != n {
            return Err(IrError::invalid(op, "weight and input ranks differ"));
        }
        if let Some(k) = &self.kernel_shape
            && k.as_slice() != kernel
        {
            return Err(IrError::invalid(op, format!("kernel_shape {k:?} differs from the weight's {kernel:?}")));
        }
        let strides = list(&self.strides, "strides", n, 1)?;
        let dilations = list(&self.dilations, "dilations", n, 1)?;
        let pads = list(&self.pads, "pads", 2 * n, 0)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(IrError::invalid(op, "strides and dilations must be positive"));
        }
        let mut pad_begin = vec![0; n];
        let mut out = vec![0; n];
        for i in 0..n {
            let eff = dilations[i] * (kernel[i].max(1) - 1) + 1;
            let (begin, total) = match self.auto_pad {
                AutoPad::NotSet => (pads[i], pads[i] + pads[i + n]),
                AutoPad::Valid => (0, 0),
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = input[i].div_ceil(strides[i]);
                    let total = ((o.saturating_sub(1)) * strides[i] + eff).saturating_sub(input[i]);
                    let begin = if self.auto_pad == AutoPad::SameUpper { total / 2 } else { total.div_ceil(2) };
                    (begin, total)
                }
            };
            let padded = input[i] + total;
            if padded < eff {
                return Err(IrError::invalid(op, format!("kernel extent {eff} exceeds padded input {padded}")));
            }
            pad_begin[i] = begin;
            out[i] = (padded - eff) / strides[i] + 1;
        }
        Ok(ConvPlan { kernel: kernel.to_vec(), strides, dilations, pad_begin, out })
    }
}

impl OpFamily for QuantOp {
    fn name(&self) -> &'static str {
        match self {
            QuantOp::Quantize(_) => "QuantizeLinear",
            QuantOp::Dequantize(_) => "DequantizeLinear",
            QuantOp::DynamicQuantize => "DynamicQuantizeLinear",
            QuantOp::MatMulInteger => "MatMulInteger",
            QuantOp::ConvInteger(_) => "ConvInteger",
            QuantOp::QLinearConv(_) => "QLinearConv",
            QuantOp::QLinearMatMul => "QLinearMatMul",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let x = required(inputs, 0, name)?;
        match self {
            QuantOp::Quantize(q) => {
                let scale = required(inputs, 1, name)?;
                let dtype = optional(inputs, 2).and_then(|z| z.dtype).or(q.output_dtype).unwrap_or(DType::U8);
                check_params(x, scale, q.axis, q.block_size, name)?;
                Ok(vec![Fact { dtype: Some(dtype), shape: x.shape.clone(), value: None }])
            }
            QuantOp::Dequantize(d) => {
                let scale = required(inputs, 1, name)?;
                check_params(x, scale, d.axis, d.block_size, name)?;
                let dtype = d.output_dtype.or(scale.dtype);
                Ok(vec![Fact { dtype, shape: x.shape.clone(), value: None }])
            }
            QuantOp::DynamicQuantize => Ok(vec![
                Fact { dtype: Some(DType::U8), shape: x.shape.clone(), value: None },
                Fact::new(DType::F32, Shape(vec![])),
                Fact::new(DType::U8, Shape(vec![])),
            ]),
            QuantOp::MatMulInteger => {
                let b = required(inputs, 1, name)?;
                Ok(vec![Fact { dtype: Some(DType::I32), shape: matmul_shape(x, b, name)?, value: None }])
            }
            QuantOp::QLinearMatMul => {
                let b = required(inputs, 3, name)?;
                let dtype = optional(inputs, 7).and_then(|z| z.dtype).or(x.dtype);
                Ok(vec![Fact { dtype, shape: matmul_shape(x, b, name)?, value: None }])
            }
            QuantOp::ConvInteger(g) => {
                let w = required(inputs, 1, name)?;
                Ok(vec![Fact { dtype: Some(DType::I32), shape: conv_shape(g, x, w, name)?, value: None }])
            }
            QuantOp::QLinearConv(g) => {
                let w = required(inputs, 3, name)?;
                let dtype = optional(inputs, 7).and_then(|z| z.dtype).or(x.dtype);
                Ok(vec![Fact { dtype, shape: conv_shape(g, x, w, name)?, value: None }])
            }
        }
    }
}

/// Checks the axis and, where shapes are known, the scale's shape against x's.
fn check_params(x: &Fact, scale: &Fact, axis: i64, block_size: usize, op: &str) -> Result<()> {
    let (Some(xs), Some(ss)) = (&x.shape, &scale.shape) else { return Ok(()) };
    let per_tensor = ss.rank() == 0 || (ss.rank() == 1 && ss.0[0] == Dim::Known(1) && block_size == 0);
    if per_tensor {
        return Ok(());
    }
    let axis = normalize_axis(axis, xs.rank(), op)?;
    if block_size == 0 {
        if ss.rank() != 1 {
            return Err(IrError::invalid(op, format!("scale of shape {ss} is neither a scalar nor 1-D")));
        }
        if let (Dim::Known(a), Dim::Known(b)) = (&xs.0[axis], &ss.0[0])
            && a != b
        {
            return Err(IrError::invalid(op, format!("scale has {b} values, axis {axis} has {a}")));
        }
    } else if ss.rank() != xs.rank() {
        return Err(IrError::invalid(op, format!("blocked scale {ss} must have the rank of x {xs}")));
    }
    Ok(())
}

/// Numpy matmul output shape (1-D operands promoted then their axis dropped).
fn matmul_shape(a: &Fact, b: &Fact, op: &str) -> Result<Option<Shape>> {
    let (Some(a), Some(b)) = (&a.shape, &b.shape) else { return Ok(None) };
    if a.rank() == 0 || b.rank() == 0 {
        return Err(IrError::invalid(op, "matmul operands must have rank >= 1"));
    }
    let (ar, br) = (a.rank(), b.rank());
    let k_a = &a.0[ar - 1];
    let k_b = if br == 1 { &b.0[0] } else { &b.0[br - 2] };
    if let (Dim::Known(x), Dim::Known(y)) = (k_a, k_b)
        && x != y
    {
        return Err(IrError::invalid(op, format!("inner dims differ: {a} and {b}")));
    }
    let batch_a = Shape(a.0[..ar.saturating_sub(2)].to_vec());
    let batch_b = Shape(b.0[..br.saturating_sub(2)].to_vec());
    let mut out =
        Shape::broadcast(&[&batch_a, &batch_b]).ok_or_else(|| IrError::invalid(op, "batch dims do not broadcast"))?.0;
    if ar >= 2 {
        out.push(a.0[ar - 2].clone());
    }
    if br >= 2 {
        out.push(b.0[br - 1].clone());
    }
    Ok(Some(Shape(out)))
}

fn conv_shape(g: &ConvGeometry, x: &Fact, w: &Fact, op: &str) -> Result<Option<Shape>> {
    let (Some(xs), Some(ws)) = (&x.shape, &w.shape) else { return Ok(None) };
    if xs.rank() < 3 || ws.rank() != xs.rank() {
        return Err(IrError::invalid(op, format!("input {xs} and weight {ws} must have the same rank >= 3")));
    }
    let mut out = vec![xs.0[0].clone(), ws.0[0].clone()];
    match (xs.as_known(), ws.as_known()) {
        (Some(xd), Some(wd)) => {
            if g.group == 0 || xd[1] != wd[1] * g.group || wd[0] % g.group != 0 {
                return Err(IrError::invalid(op, format!("channels of {xs} and {ws} do not fit group {}", g.group)));
            }
            let plan = g.plan(&xd[2..], &wd[2..], op)?;
            out.extend(plan.out.into_iter().map(Dim::Known));
        }
        _ => out.extend(std::iter::repeat_n(Dim::Unknown, xs.rank() - 2)),
    }
    Ok(Some(Shape(out)))
}
