//! Launchers of `reduce.cu`: reductions over any axes (floats accumulated in f32; i32
//! and i64 too), Softmax/LogSoftmax over an axis, ArgMax/ArgMin (floats).

use kiln_ir::DType;
use kiln_ir::ops::reduce::ReduceKind;

use super::elementwise::Operand;
use super::{
    Buf, Launcher, check_buf, contiguous_strides, elems, float_suffix, grid, launch, numeric_suffix, row_grid, to_i64,
};
use crate::kernels::{MAX_RANK, REDUCE, ReduceCode, ReduceDesc};
use crate::{CudaError, Result};

pub fn reduce_code(kind: ReduceKind) -> ReduceCode {
    match kind {
        ReduceKind::Sum => ReduceCode::Sum,
        ReduceKind::Mean => ReduceCode::Mean,
        ReduceKind::Max => ReduceCode::Max,
        ReduceKind::Min => ReduceCode::Min,
        ReduceKind::Prod => ReduceCode::Prod,
        ReduceKind::L1 => ReduceCode::L1,
        ReduceKind::L2 => ReduceCode::L2,
        ReduceKind::LogSum => ReduceCode::LogSum,
        ReduceKind::LogSumExp => ReduceCode::LogSumExp,
        ReduceKind::SumSquare => ReduceCode::SumSquare,
    }
}

/// A tensor's dims grouped for a reduction: runs of neighbouring dims that are all kept
/// or all reduced, merged (dims of one element dropped), each with its input stride.
#[derive(Debug, PartialEq)]
pub struct ReducePlan {
    /// (elements, stride, reduced?) from outermost to innermost.
    pub groups: Vec<(usize, usize, bool)>,
}

impl ReducePlan {
    pub fn new(shape: &[usize], axes: &[usize]) -> ReducePlan {
        let strides = contiguous_strides(shape);
        let mut groups: Vec<(usize, usize, bool)> = Vec::new();
        for (k, &n) in shape.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let red = axes.contains(&k);
            match groups.last_mut() {
                // Row-major: a run of same-kind dims is one dim of their product.
                Some((pn, ps, pr)) if *pr == red => {
                    *pn *= n;
                    *ps = strides[k] as usize;
                }
                _ => groups.push((n, strides[k] as usize, red)),
            }
        }
        ReducePlan { groups }
    }

    /// The descriptor of the strided kernels, with the kept and reduced ranks.
    pub fn desc(&self, op: &str) -> Result<(ReduceDesc, i32, i32)> {
        let (kept, red): (Vec<&(usize, usize, bool)>, Vec<_>) = self.groups.iter().partition(|g| !g.2);
        if kept.len() > MAX_RANK || red.len() > MAX_RANK {
            return Err(CudaError::unsupported(op, format!("{} interleaved groups of axes", self.groups.len())));
        }
        let mut d = ReduceDesc::default();
        for (k, g) in kept.iter().enumerate() {
            d.kept_dims[k] = g.0 as i64;
            d.kept_strides[k] = g.1 as i64;
        }
        for (k, g) in red.iter().enumerate() {
            d.red_dims[k] = g.0 as i64;
            d.red_strides[k] = g.1 as i64;
        }
        Ok((d, kept.len() as i32, red.len() as i32))
    }

    /// `(outer, reduced, inner)` when at most one group is reduced.
    pub fn three(&self) -> Option<(usize, usize, usize)> {
        let reduced: Vec<usize> = (0..self.groups.len()).filter(|&i| self.groups[i].2).collect();
        match reduced[..] {
            [] => Some((1, 1, self.groups.iter().map(|g| g.0).product())),
            [r] => Some((
                self.groups[..r].iter().map(|g| g.0).product(),
                self.groups[r].0,
                self.groups[r + 1..].iter().map(|g| g.0).product(),
            )),
            _ => None,
        }
    }
}

impl Launcher<'_> {
    /// `Reduce*` of `x` over `axes` (normalised, each once; see
    /// `kiln_ir::ops::reduce::resolve_reduce_axes`) into `y`, whose element count is the
    /// product of the kept dims (keepdims or not: same data). Floats: every kind,
    /// accumulated in f32. i32/i64: Sum, Prod, L1, SumSquare (wrapping), Max, Min, Mean.
    pub fn reduce(&self, kind: ReduceKind, dtype: DType, x: Operand, axes: &[usize], y: &Buf) -> Result<()> {
        let op = kind.name();
        let (x, shape) = x;
        let int = matches!(dtype, DType::I32 | DType::I64);
        if int && matches!(kind, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp) {
            return Err(CudaError::unsupported(op, format!("dtype {dtype}")));
        }
        let suffix = if int { numeric_suffix(op, dtype)? } else { float_suffix(op, dtype)? };
        if let Some(&a) = axes.iter().find(|&&a| a >= shape.len()) {
            return Err(CudaError::invalid(op, format!("axis {a} for rank {}", shape.len())));
        }
        check_buf(op, "input", x, elems(shape), dtype)?;
        let n_out: usize = shape.iter().enumerate().filter(|(k, _)| !axes.contains(k)).map(|(_, &n)| n).product();
        check_buf(op, "output", y, n_out, dtype)?;
        if n_out == 0 {
            return Ok(());
        }
        let code = reduce_code(kind) as i32;
        let (xa, ya) = (x.addr(), y.addr());
        let plan = ReducePlan::new(shape, axes);
        let r_total: usize = axes.iter().map(|&a| shape[a]).product();
        match plan.three() {
            Some((outer, r, inner)) if !int => {
                let (outer_, r_, inner_) = (to_i64(op, outer)?, to_i64(op, r)?, to_i64(op, inner)?);
                if inner == 1 {
                    launch!(self, REDUCE, format!("kiln_reduce_rows_{suffix}"), row_grid(outer); code, xa, ya, outer_, r_)
                } else {
                    let name = format!("kiln_reduce_mid_{suffix}");
                    launch!(self, REDUCE, name, grid(outer * inner); code, xa, ya, outer_, r_, inner_)
                }
            }
            _ => {
                let (d, kr, rr) = plan.desc(op)?;
                let (nn, r) = (to_i64(op, n_out)?, to_i64(op, r_total)?);
                let name =
                    if int { format!("kiln_reduce_int_{suffix}") } else { format!("kiln_reduce_strided_{suffix}") };
                launch!(self, REDUCE, name, grid(n_out); code, xa, ya, nn, kr, rr, r, d)
            }
        }
    }

    /// Softmax (or LogSoftmax with `log`) of `x` over `axis`; with `coerce_2d` (opsets
    /// before 13) over all of `axis..` as one row. `y` has `x`'s shape.
    pub fn softmax(&self, log: bool, dtype: DType, x: Operand, axis: usize, coerce_2d: bool, y: &Buf) -> Result<()> {
        let op = if log { "LogSoftmax" } else { "Softmax" };
        let (x, shape) = x;
        let suffix = float_suffix(op, dtype)?;
        if axis > shape.len() || (axis == shape.len() && !coerce_2d) {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", shape.len())));
        }
        let n = elems(shape);
        check_buf(op, "input", x, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let outer = elems(&shape[..axis]);
        let (r, inner) = if coerce_2d { (elems(&shape[axis..]), 1) } else { (shape[axis], elems(&shape[axis + 1..])) };
        let (lg, xa, ya) = (i32::from(log), x.addr(), y.addr());
        let (outer_, r_, inner_) = (to_i64(op, outer)?, to_i64(op, r)?, to_i64(op, inner)?);
        if inner == 1 {
            launch!(self, REDUCE, format!("kiln_softmax_rows_{suffix}"), row_grid(outer); lg, xa, ya, outer_, r_)
        } else {
            launch!(self, REDUCE, format!("kiln_softmax_mid_{suffix}"), grid(outer * inner); lg, xa, ya, outer_, r_, inner_)
        }
    }

    /// ArgMax (`max`) or ArgMin of `x` along `axis`: i64 indices, the first extreme (the
    /// last with `last`); NaN counts as the extreme.
    pub fn arg_reduce(&self, max: bool, last: bool, dtype: DType, x: Operand, axis: usize, y: &Buf) -> Result<()> {
        let op = if max { "ArgMax" } else { "ArgMin" };
        let (x, shape) = x;
        let suffix = float_suffix(op, dtype)?;
        if axis >= shape.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", shape.len())));
        }
        if shape[axis] == 0 {
            return Err(CudaError::invalid(op, "the axis is empty"));
        }
        let (outer, r, inner) = (elems(&shape[..axis]), shape[axis], elems(&shape[axis + 1..]));
        check_buf(op, "input", x, elems(shape), dtype)?;
        check_buf(op, "output", y, outer * inner, DType::I64)?;
        if outer * inner == 0 {
            return Ok(());
        }
        let (mx, ls, xa, ya) = (i32::from(max), i32::from(last), x.addr(), y.addr());
        let (outer_, r_, inner_) = (to_i64(op, outer)?, to_i64(op, r)?, to_i64(op, inner)?);
        launch!(self, REDUCE, format!("kiln_arg_reduce_{suffix}"), grid(outer * inner); mx, ls, xa, ya, outer_, r_, inner_)
    }
}
