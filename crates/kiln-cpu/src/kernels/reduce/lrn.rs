//! `LRN`: each element divided by a power of the sum of squares of its neighbours
//! across channels.

use kiln_ir::Tensor;
use kiln_ir::ops::reduce::Lrn;

use super::real::Real;
use super::rows::{map_rows, shaped};
use crate::array::{req, tensor, view};
use crate::{CpuError, Result, dispatch};

pub fn eval(l: &Lrn, inputs: &[Option<Tensor>], name: &str) -> Result<Tensor> {
    let x = req(inputs, 0, name)?;
    if x.rank() < 3 {
        return Err(CpuError::invalid(name, format!("input must have rank >= 3, got shape {:?}", x.shape())));
    }
    dispatch!(float, x.dtype(), name, T => typed::<T>(l, x))
}

fn typed<T: Real>(l: &Lrn, x: &Tensor) -> Result<Tensor> {
    let c = x.shape()[1];
    let s: usize = x.shape()[2..].iter().product();
    let xv = view::<T>(x)?;
    let xs = xv.as_standard_layout();
    let data = xs.as_slice().unwrap_or(&[]);
    // The window of channel ch is [ch - floor((size-1)/2), ch + ceil((size-1)/2)].
    let size = l.size as usize;
    let (before, after) = ((size - 1) / 2, size / 2);
    let coef = l.alpha as f64 / size as f64;
    let mut out = vec![T::default(); data.len()];
    map_rows(data, s, &mut out, s, |row, xr, yr| {
        let (n, ch) = (row / c, row % c);
        let window = ch.saturating_sub(before)..(ch + after + 1).min(c);
        for (j, (y, v)) in yr.iter_mut().zip(xr).enumerate() {
            let sq: f64 = window.clone().map(|k| data[(n * c + k) * s + j].to_f64().powi(2)).sum();
            *y = T::of_f64(v.to_f64() / (l.bias as f64 + coef * sq).powf(l.beta as f64));
        }
    });
    Ok(tensor(shaped(x.shape().to_vec(), out)?))
}
