//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.

use kiln_ir::ops::quant::{Dequantize, Quantize};
use kiln_ir::{DType, Tensor};

use super::{Fp8, float_tensor, int_range, int_tensor, round_to, saturate_int, values_f64};
use crate::array::{opt, req};
use crate::{CpuError, Result};

/// Where each element of x finds its scale and zero point.
enum ParamLayout {
    PerTensor,
    /// One parameter per index along the axis (`dim` long, `inner` elements apart).
    PerAxis {
        dim: usize,
        inner: usize,
    },
    /// One parameter per block of `block` indices along the axis; the parameter tensor
    /// has `blocks` entries along it.
    Blocked {
        dim: usize,
        inner: usize,
        block: usize,
        blocks: usize,
    },
}

impl ParamLayout {
    fn new(x: &[usize], param: &[usize], axis: i64, block_size: usize, op: &str) -> Result<ParamLayout> {
        let n: usize = param.iter().product();
        if param.is_empty() || (n == 1 && block_size == 0 && param.len() == 1) {
            return Ok(ParamLayout::PerTensor);
        }
        let rank = x.len() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&a) {
            return Err(CpuError::invalid(op, format!("axis {axis} is out of range for rank {rank}")));
        }
        let a = a as usize;
        let (dim, inner) = (x[a], x[a + 1..].iter().product());
        if block_size == 0 {
            if param.len() != 1 || param[0] != dim {
                return Err(CpuError::invalid(op, format!("scale shape {param:?} does not fit x {x:?} on axis {a}")));
            }
            return Ok(ParamLayout::PerAxis { dim, inner });
        }
        let blocks = dim.div_ceil(block_size);
        let fits = param.len() == x.len()
            && param.iter().zip(x).enumerate().all(|(i, (&p, &d))| if i == a { p == blocks } else { p == d });
        if !fits {
            return Err(CpuError::invalid(
                op,
                format!("blocked scale shape {param:?} does not fit x {x:?} with block {block_size} on axis {a}"),
            ));
        }
        Ok(ParamLayout::Blocked { dim, inner, block: block_size, blocks })
    }

    fn index(&self, i: usize) -> usize {
        match *self {
            ParamLayout::PerTensor => 0,
            ParamLayout::PerAxis { dim, inner } => (i / inner) % dim,
            ParamLayout::Blocked { dim, inner, block, blocks } => {
                let (outer, d, r) = (i / (dim * inner), (i / inner) % dim, i % inner);
                (outer * blocks + d / block) * inner + r
            }
        }
    }
}

/// Scale and optional zero point, with the layout mapping x's elements onto them.
struct Params {
    layout: ParamLayout,
    scale: Vec<f64>,
    zero: Option<Vec<f64>>,
}

impl Params {
    fn new(inputs: &[Option<Tensor>], x: &Tensor, axis: i64, block_size: usize, op: &str) -> Result<Params> {
        let scale = req(inputs, 1, op)?;
        let layout = ParamLayout::new(x.shape(), scale.shape(), axis, block_size, op)?;
        let zero = opt(inputs, 2)
            .map(|z| {
                if z.len() != scale.len() {
                    return Err(CpuError::invalid(
                        op,
                        format!("zero point shape {:?} differs from scale {:?}", z.shape(), scale.shape()),
                    ));
                }
                values_f64(z)
            })
            .transpose()?;
        Ok(Params { layout, scale: values_f64(scale)?, zero })
    }

    fn at(&self, i: usize) -> (f64, f64) {
        let p = self.layout.index(i);
        (self.scale[p], self.zero.as_ref().map_or(0.0, |z| z[p]))
    }
}

/// The type numpy computes `a / b` or `a * b` in for two float types.
fn wider(a: DType, b: DType) -> DType {
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 => 2,
        DType::F16 | DType::BF16 => 1,
        // Integer x (QuantizeLinear-10 takes i32): numpy divides in f64.
        _ => 3,
    };
    if a == b && a.is_float() {
        a
    } else if rank(a) == 3 || rank(b) == 3 {
        DType::F64
    } else if rank(a) == rank(b) {
        DType::F32
    } else if rank(a) > rank(b) {
        a
    } else {
        b
    }
}

pub fn quantize(q: &Quantize, inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let x = req(inputs, 0, op)?;
    let scale_dtype = req(inputs, 1, op)?.dtype();
    let params = Params::new(inputs, x, q.axis, q.block_size, op)?;
    let target = opt(inputs, 2).map(|z| z.dtype()).or(q.output_dtype).unwrap_or(DType::U8);
    let precision = q.precision.unwrap_or_else(|| wider(x.dtype(), scale_dtype));
    let xs = values_f64(x)?;
    let scaled = xs.iter().enumerate().map(|(i, &v)| {
        let (s, z) = params.at(i);
        // Both operands are first converted to the precision type (lossless when it is
        // the wider of the two; an explicit `precision` may round them).
        (round_to(precision, round_to(precision, v) / round_to(precision, s)), z)
    });
    let shape = x.shape().to_vec();
    if let Some(f) = Fp8::of(target) {
        let bytes: Vec<u8> = scaled.map(|(v, z)| f.encode(v + z, q.saturate)).collect();
        return Ok(Tensor::from_vec_as(target, shape, bytes)?);
    }
    let range = int_range(target).filter(|_| target != DType::I32).ok_or_else(|| CpuError::dtype(op, target))?;
    let ints = scaled.map(|(v, z)| saturate_int(v.round_ties_even() + z, range)).collect();
    int_tensor(target, shape, ints, op)
}

pub fn dequantize(d: &Dequantize, inputs: &[Option<Tensor>], op: &str) -> Result<Tensor> {
    let x = req(inputs, 0, op)?;
    let scale_dtype = req(inputs, 1, op)?.dtype();
    if let Some(z) = opt(inputs, 2)
        && z.dtype() != x.dtype()
    {
        return Err(CpuError::invalid(op, format!("zero point type {} differs from x's {}", z.dtype(), x.dtype())));
    }
    if int_range(x.dtype()).is_none() && Fp8::of(x.dtype()).is_none() {
        return Err(CpuError::dtype(op, x.dtype()));
    }
    let params = Params::new(inputs, x, d.axis, d.block_size, op)?;
    let out_dtype = d.output_dtype.unwrap_or(scale_dtype);
    // (x - zero) is exact in f64 and the product of two f32-exact values too, so one
    // rounding to the output type gives what f32 arithmetic would.
    let ys = values_f64(x)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let (s, z) = params.at(i);
            (round_to(DType::F32, v - z)) * s
        })
        .collect();
    float_tensor(out_dtype, x.shape().to_vec(), ys, op)
}

pub fn dynamic_quantize(inputs: &[Option<Tensor>], op: &str) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0, op)?;
    if x.dtype() != DType::F32 {
        return Err(CpuError::dtype(op, x.dtype()));
    }
    let xs = x.to_vec::<f32>()?;
    // The range always includes 0 so that 0 is exactly representable.
    let max = xs.iter().fold(0f32, |m, &v| m.max(v));
    let min = xs.iter().fold(0f32, |m, &v| m.min(v));
    let scale = (if max == min { 1.0 } else { max - min }) / 255.0;
    let zero = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
    let y: Vec<u8> = xs.iter().map(|&v| ((v / scale).round_ties_even() + zero).clamp(0.0, 255.0) as u8).collect();
    Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?, Tensor::scalar(scale), Tensor::scalar(zero as u8)])
}
