//! `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`, computed in f64 and
//! rounded once to the input's dtype.

use half::{bf16, f16};
use kiln_ir::ops::reduce::{Loss, LossKind, LossReduction};
use kiln_ir::{DType, Tensor};

use crate::array::{opt, req};
use crate::{CpuError, Result};

pub fn eval(l: &Loss, inputs: &[Option<Tensor>], name: &str) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0, name)?;
    let target = req(inputs, 1, name)?;
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(CpuError::invalid(name, format!("input must be [N, C, ...], got {shape:?}")));
    }
    let (n, c) = (shape[0], shape[1]);
    let d: usize = shape[2..].iter().product();
    let mut expected = vec![n];
    expected.extend(&shape[2..]);
    if target.shape() != expected.as_slice() {
        return Err(CpuError::invalid(name, format!("target shape {:?} must be {expected:?}", target.shape())));
    }
    let weights = opt(inputs, 2).map(|w| w.to_f64_vec()).transpose()?;
    if weights.as_ref().is_some_and(|w| w.len() != c) {
        return Err(CpuError::invalid(name, format!("weights must have {c} elements (one per class)")));
    }
    let mut logp = x.to_f64_vec()?;
    if l.kind == LossKind::SoftmaxCrossEntropy {
        log_softmax_axis1(&mut logp, n, c, d);
    }
    let targets = target.to_i64_vec()?;
    let mut losses = Vec::with_capacity(n * d);
    let mut weight_sum = 0.0;
    for (i, &t) in targets.iter().enumerate() {
        let (b, s) = (i / d.max(1), i % d.max(1));
        if Some(t) == l.ignore_index {
            losses.push(0.0);
            continue;
        }
        let class = usize::try_from(t)
            .ok()
            .filter(|&t| t < c)
            .ok_or_else(|| CpuError::invalid(name, format!("target {t} is not a class index in [0, {c})")))?;
        let w = weights.as_ref().map_or(1.0, |w| w[class]);
        weight_sum += w;
        losses.push(-logp[(b * c + class) * d + s] * w);
    }
    let out = match l.reduction {
        LossReduction::None => from_f64(x.dtype(), expected, losses, name)?,
        LossReduction::Sum => from_f64(x.dtype(), vec![], vec![losses.iter().sum()], name)?,
        LossReduction::Mean => from_f64(x.dtype(), vec![], vec![losses.iter().sum::<f64>() / weight_sum], name)?,
    };
    Ok(vec![out, from_f64(x.dtype(), shape.to_vec(), logp, name)?])
}

/// In place: each (n, ·, s) column of an [N, C, D] array becomes its log-softmax.
fn log_softmax_axis1(v: &mut [f64], n: usize, c: usize, d: usize) {
    for b in 0..n {
        for s in 0..d {
            let at = |k: usize| (b * c + k) * d + s;
            let max = (0..c).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let log_sum = (0..c).map(|k| (v[at(k)] - max).exp()).sum::<f64>().ln() + max;
            for k in 0..c {
                v[at(k)] -= log_sum;
            }
        }
    }
}

fn from_f64(dtype: DType, shape: Vec<usize>, v: Vec<f64>, name: &str) -> Result<Tensor> {
    Ok(match dtype {
        DType::F64 => Tensor::from_vec(shape, v)?,
        DType::F32 => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect())?,
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(f16::from_f64).collect())?,
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(bf16::from_f64).collect())?,
        other => return Err(CpuError::dtype(name, other)),
    })
}
