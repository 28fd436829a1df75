//! Pad: each output coordinate maps, per axis, to an input coordinate (or to the
//! constant); negative pads crop.

use kiln_ir::ops::movement::{PadMode, pad_amounts, strides_of};
use kiln_ir::{Tensor, with_storage};

use super::{ints, scalar_of};
use crate::{CpuError, Result};

/// For each output index along one axis, the input index it reads (`None`: constant).
fn axis_map(dim: usize, begin: i64, end: i64, mode: PadMode) -> Result<Vec<Option<usize>>> {
    let out = dim as i64 + begin + end;
    if out < 0 {
        return Err(CpuError::invalid("Pad", format!("pads ({begin}, {end}) remove more than the dim {dim}")));
    }
    let d = dim as i64;
    if d == 0 && out > 0 && mode != PadMode::Constant {
        return Err(CpuError::invalid("Pad", "cannot pad an empty axis except with a constant"));
    }
    (0..out)
        .map(|j| {
            let p = j - begin;
            Ok(match mode {
                _ if (0..d).contains(&p) => Some(p as usize),
                PadMode::Constant => None,
                PadMode::Edge => Some(p.clamp(0, d - 1) as usize),
                PadMode::Wrap => Some(p.rem_euclid(d) as usize),
                PadMode::Reflect => Some(reflect(p, d) as usize),
            })
        })
        .collect()
}

/// Mirror `p` into [0, d) without repeating the edge (numpy's "reflect").
fn reflect(p: i64, d: i64) -> i64 {
    if d == 1 {
        return 0;
    }
    let period = 2 * (d - 1);
    let m = p.rem_euclid(period);
    if m < d { m } else { period - m }
}

pub fn pad(
    x: &Tensor,
    mode: PadMode,
    pads_attr: Option<&[i64]>,
    value: f32,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let op = "Pad";
    let input = |i: usize| inputs.get(i).and_then(Option::as_ref);
    let pads = match pads_attr {
        Some(p) => p.to_vec(),
        None => ints(input(1).ok_or_else(|| CpuError::invalid(op, "pads (input 1) is required"))?)?,
    };
    let axes = input(3).map(ints).transpose()?;
    let amounts = pad_amounts(x.rank(), &pads, axes.as_deref())?;
    let constant = match input(2) {
        Some(c) if c.dtype() != x.dtype() || c.len() != 1 => {
            return Err(CpuError::invalid(op, "constant_value must be one element of the input's dtype"));
        }
        Some(c) => c.clone(),
        None => scalar_of(x.dtype(), value as f64, op)?,
    };
    let maps =
        x.shape().iter().zip(&amounts).map(|(&d, &(b, e))| axis_map(d, b, e, mode)).collect::<Result<Vec<_>>>()?;
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let st = strides_of(x.shape());
    with_storage!(x.dtype(), T => {
        let src = x.as_slice::<T>()?;
        let fill = constant.as_slice::<T>()?[0];
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        if n > 0 {
            fill_rows(&src, &maps, &st, fill, &mut out);
        }
        Ok(Tensor::from_vec_as(x.dtype(), shape, out)?)
    })
}

/// Writes the padded tensor row by row (the last axis is one row).
fn fill_rows<T: Copy>(src: &[T], maps: &[Vec<Option<usize>>], st: &[usize], fill: T, out: &mut Vec<T>) {
    let Some((last, outer)) = maps.split_last() else {
        out.push(src[0]);
        return;
    };
    let last_stride = st[st.len() - 1];
    let mut c = vec![0usize; outer.len()];
    loop {
        let base: Option<usize> =
            outer.iter().zip(&c).zip(st).try_fold(0usize, |acc, ((m, &ci), &s)| m[ci].map(|p| acc + p * s));
        match base {
            None => out.extend(std::iter::repeat_n(fill, last.len())),
            Some(b) => out.extend(last.iter().map(|m| m.map_or(fill, |p| src[b + p * last_stride]))),
        }
        let mut k = outer.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            c[k] += 1;
            if c[k] < outer[k].len() {
                break;
            }
            c[k] = 0;
        }
    }
}
