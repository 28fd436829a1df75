//! Einsum: diagonals and single-operand sums first, then operands contracted left to
//! right, each pair as one batched matrix product.

use std::collections::HashMap;

use kiln_ir::Tensor;
use kiln_ir::ops::nn::Einsum;
use rayon::prelude::*;

use super::matmul::strides;
use super::scalar::{Acc, Mat, NnElem, acc_data, from_acc, gemm};
use crate::{CpuError, Result};

/// A tensor whose dims are named by labels.
struct Labeled<A> {
    data: Vec<A>,
    dims: Vec<usize>,
    labels: Vec<u16>,
}

/// Gathers `dims`-shaped data from `src` read with element `strides` (0 to broadcast).
fn gather<A: Acc>(src: &[A], dims: &[usize], strides: &[usize]) -> Vec<A> {
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let d = dims.len();
    let mut idx = vec![0usize; d];
    let mut off = 0usize;
    loop {
        out.push(src[off]);
        let mut i = d;
        loop {
            if i == 0 {
                return out;
            }
            i -= 1;
            idx[i] += 1;
            off += strides[i];
            if idx[i] < dims[i] {
                break;
            }
            off -= strides[i] * dims[i];
            idx[i] = 0;
        }
    }
}

impl<A: Acc> Labeled<A> {
    /// Merges repeated labels into one dim (the diagonal).
    fn diagonal(self) -> Result<Self> {
        let mut dims: Vec<usize> = Vec::new();
        let mut labels: Vec<u16> = Vec::new();
        let mut st: Vec<usize> = Vec::new();
        for ((&l, &d), s) in self.labels.iter().zip(&self.dims).zip(strides(&self.dims)) {
            match labels.iter().position(|&x| x == l) {
                Some(p) if dims[p] != d => {
                    return Err(CpuError::invalid(
                        "Einsum",
                        format!("a repeated subscript has sizes {} and {d}", dims[p]),
                    ));
                }
                Some(p) => st[p] += s,
                None => {
                    labels.push(l);
                    dims.push(d);
                    st.push(s);
                }
            }
        }
        if labels.len() == self.labels.len() {
            return Ok(self);
        }
        Ok(Labeled { data: gather(&self.data, &dims, &st), dims, labels })
    }

    /// The data permuted to `order`, broadcast to `sizes` (a dim of 1 repeats; a
    /// label this tensor lacks is a broadcast dim too).
    fn arranged(&self, order: &[u16], sizes: &[usize]) -> Vec<A> {
        let own = strides(&self.dims);
        let st: Vec<usize> = order
            .iter()
            .map(|l| match self.labels.iter().position(|x| x == l) {
                Some(p) if self.dims[p] != 1 => own[p],
                _ => 0,
            })
            .collect();
        gather(&self.data, sizes, &st)
    }

    /// Sums over every label not in `keep`.
    fn sum_except(self, keep: &[u16]) -> Self {
        let (kept, summed): (Vec<usize>, Vec<usize>) =
            (0..self.labels.len()).partition(|&i| keep.contains(&self.labels[i]));
        if summed.is_empty() {
            return self;
        }
        let order: Vec<u16> = kept.iter().chain(&summed).map(|&i| self.labels[i]).collect();
        let sizes: Vec<usize> = kept.iter().chain(&summed).map(|&i| self.dims[i]).collect();
        let data = self.arranged(&order, &sizes);
        let inner: usize = summed.iter().map(|&i| self.dims[i]).product();
        let dims: Vec<usize> = kept.iter().map(|&i| self.dims[i]).collect();
        let outer: usize = dims.iter().product();
        let data =
            (0..outer).map(|o| data[o * inner..(o + 1) * inner].iter().fold(A::ZERO, |s, &v| s.add(v))).collect();
        Labeled { data, dims, labels: kept.iter().map(|&i| self.labels[i]).collect() }
    }
}

/// Contracts two operands over their shared labels not in `keep`, as a batched
/// product `[batch, left, shared] · [batch, shared, right]`.
fn contract<A: Acc>(x: Labeled<A>, y: Labeled<A>, keep: &[u16], sizes: &HashMap<u16, usize>) -> Result<Labeled<A>> {
    let in_y = |l: &u16| y.labels.contains(l);
    let batch: Vec<u16> = x.labels.iter().copied().filter(|l| in_y(l) && keep.contains(l)).collect();
    let shared: Vec<u16> = x.labels.iter().copied().filter(|l| in_y(l) && !keep.contains(l)).collect();
    let left: Vec<u16> = x.labels.iter().copied().filter(|l| !in_y(l)).collect();
    let right: Vec<u16> = y.labels.iter().copied().filter(|l| !x.labels.contains(l)).collect();
    let size = |ls: &[u16]| -> Vec<usize> { ls.iter().map(|l| sizes[l]).collect() };
    let prod = |ls: &[u16]| -> usize { size(ls).iter().product() };
    let (nb, m, k, n) = (prod(&batch), prod(&left), prod(&shared), prod(&right));
    let xo: Vec<u16> = [&batch[..], &left, &shared].concat();
    let yo: Vec<u16> = [&batch[..], &shared, &right].concat();
    let (xd, yd) = (x.arranged(&xo, &size(&xo)), y.arranged(&yo, &size(&yo)));
    let mut out = vec![A::ZERO; nb * m * n];
    if m * n > 0 {
        out.par_chunks_mut(m * n).enumerate().try_for_each(|(b, dst)| {
            let xm = Mat::row_major(&xd[b * m * k..][..m * k], m, k);
            let ym = Mat::row_major(&yd[b * k * n..][..k * n], k, n);
            gemm(A::ONE, xm, ym, A::ZERO, dst, n)
        })?;
    }
    let labels: Vec<u16> = [&batch[..], &left, &right].concat();
    Ok(Labeled { data: out, dims: size(&labels), labels })
}

pub fn einsum<T: NnElem>(e: &Einsum, inputs: &[&Tensor]) -> Result<Tensor> {
    let ranks: Vec<usize> = inputs.iter().map(|t| t.rank()).collect();
    let (labels, _) = e.labels(&ranks)?;
    let (out_labels, in_labels) = labels.split_last().ok_or_else(|| CpuError::invalid("Einsum", "no output"))?;
    // Each label's size, broadcasting ellipsis dims of 1.
    let mut sizes: HashMap<u16, usize> = HashMap::new();
    for (ls, t) in in_labels.iter().zip(inputs) {
        for (&l, &d) in ls.iter().zip(t.shape()) {
            let s = sizes.entry(l).or_insert(d);
            if *s == 1 {
                *s = d;
            } else if d != 1 && d != *s {
                return Err(CpuError::invalid(
                    "Einsum",
                    format!("equation '{}': sizes {s} and {d} differ", e.equation),
                ));
            }
        }
    }
    let mut ops = Vec::with_capacity(inputs.len());
    for (ls, t) in in_labels.iter().zip(inputs) {
        let data = acc_data::<T>(t)?.into_owned();
        ops.push(Labeled { data, dims: t.shape().to_vec(), labels: ls.clone() }.diagonal()?);
    }
    // Labels still needed after operand i: by the output or a later operand.
    let needed_after = |i: usize| -> Vec<u16> {
        let mut v = out_labels.clone();
        for ls in &in_labels[i + 1..] {
            v.extend(ls);
        }
        v
    };
    let mut ops = ops.into_iter();
    let first = ops.next().ok_or_else(|| CpuError::invalid("Einsum", "no inputs"))?;
    let mut cur = first.sum_except(&[needed_after(0), in_labels.get(1).cloned().unwrap_or_default()].concat());
    for (i, next) in ops.enumerate() {
        let i = i + 1;
        let keep = needed_after(i);
        let next = next.sum_except(&[keep.clone(), cur.labels.clone()].concat());
        cur = contract(cur, next, &keep, &sizes)?;
    }
    let cur = cur.sum_except(out_labels);
    let out_sizes: Vec<usize> = out_labels.iter().map(|l| sizes.get(l).copied().unwrap_or(1)).collect();
    let data = cur.arranged(out_labels, &out_sizes);
    from_acc::<T>(out_sizes, data)
}
