//! MatMul (numpy batched broadcasting, 1-D operands) and Gemm.

use kiln_ir::Tensor;
use kiln_ir::ops::nn::Gemm;
use rayon::prelude::*;

use super::scalar::{Acc, Mat, NnElem, acc_data, from_acc, gemm};
use crate::array::broadcast_shape;
use crate::{CpuError, Result};

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// For each index of the broadcast `batch` dims, the flat offset (in units of one
/// matrix) of the operand's matrix whose batch dims are `own`.
fn batch_offsets(own: &[usize], batch: &[usize]) -> Vec<usize> {
    let lead = batch.len() - own.len();
    let own_strides = strides(own);
    let total: usize = batch.iter().product();
    (0..total)
        .map(|mut flat| {
            let mut off = 0;
            for i in (0..batch.len()).rev() {
                let idx = flat % batch[i];
                flat /= batch[i];
                if i >= lead && own[i - lead] != 1 {
                    off += idx * own_strides[i - lead];
                }
            }
            off
        })
        .collect()
}

pub fn matmul<T: NnElem>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "MatMul";
    let (sa, sb) = (a.shape(), b.shape());
    if sa.is_empty() || sb.is_empty() {
        return Err(CpuError::invalid(op, "operands must have rank >= 1"));
    }
    // Promote 1-D operands to matrices; their unit dim is dropped from the output.
    let pa: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let pb: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (ra, rb) = (pa.len(), pb.len());
    let (m, k, n) = (pa[ra - 2], pa[ra - 1], pb[rb - 1]);
    if pb[rb - 2] != k {
        return Err(CpuError::invalid(op, format!("inner dimensions of {sa:?} and {sb:?} differ")));
    }
    let (ba, bb) = (&pa[..ra - 2], &pb[..rb - 2]);
    let batch = broadcast_shape(ba, bb, op)?;
    let count: usize = batch.iter().product();
    let (ad, bd) = (acc_data::<T>(a)?, acc_data::<T>(b)?);
    let mut out = vec![T::A::ZERO; count * m * n];
    let mut shape = batch.clone();
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    if out.is_empty() {
        return from_acc::<T>(shape, out);
    }
    if bb.iter().all(|&d| d == 1) && ba.iter().product::<usize>() == count {
        // One shared B: the batch folds into the rows of a single product.
        let am = Mat::row_major(&ad, count * m, k);
        gemm(T::A::ONE, am, Mat::row_major(&bd, k, n), T::A::ZERO, &mut out, n)?;
        return from_acc::<T>(shape, out);
    }
    let (oa, ob) = (batch_offsets(ba, &batch), batch_offsets(bb, &batch));
    let one = |i: usize, dst: &mut [T::A]| {
        let am = Mat::row_major(&ad[oa[i] * m * k..][..m * k], m, k);
        let bm = Mat::row_major(&bd[ob[i] * k * n..][..k * n], k, n);
        gemm(T::A::ONE, am, bm, T::A::ZERO, dst, n)
    };
    out.par_chunks_mut(m * n).enumerate().try_for_each(|(i, dst)| one(i, dst))?;
    from_acc::<T>(shape, out)
}

pub fn gemm_op<T: NnElem>(g: &Gemm, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
    let op = "Gemm";
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != 2 || sb.len() != 2 {
        return Err(CpuError::invalid(op, format!("A {sa:?} and B {sb:?} must be matrices")));
    }
    let (ad, bd) = (acc_data::<T>(a)?, acc_data::<T>(b)?);
    let mut am = Mat::row_major(&ad, sa[0], sa[1]);
    let mut bm = Mat::row_major(&bd, sb[0], sb[1]);
    if g.trans_a {
        am = am.t();
    }
    if g.trans_b {
        bm = bm.t();
    }
    let (m, n) = (am.rows, bm.cols);
    if am.cols != bm.rows {
        return Err(CpuError::invalid(op, format!("inner dimensions of A {sa:?} and B {sb:?} differ")));
    }
    let mut out = vec![T::A::ZERO; m * n];
    let mut beta = T::A::ZERO;
    if let Some(c) = c {
        // C broadcasts unidirectionally to [M, N].
        let sc = c.shape();
        let fits = sc.len() <= 2 && broadcast_shape(sc, &[m, n], op)? == [m, n];
        if !fits {
            return Err(CpuError::invalid(op, format!("C {sc:?} does not broadcast to [{m}, {n}]")));
        }
        let cd = acc_data::<T>(c)?;
        let (rows, cols) = match sc {
            [r, c] => (*r, *c),
            [c] => (1, *c),
            _ => (1, 1),
        };
        for (i, row) in out.chunks_mut(n.max(1)).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = cd[(if rows == 1 { 0 } else { i }) * cols + if cols == 1 { 0 } else { j }];
            }
        }
        beta = T::A::from_f64(g.beta as f64);
    }
    gemm(T::A::from_f64(g.alpha as f64), am, bm, beta, &mut out, n)?;
    from_acc::<T>(vec![m, n], out)
}
