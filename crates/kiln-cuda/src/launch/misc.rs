//! Launchers of `misc.cu`: Trilu, ReverseSequence, CumSum/CumProd, Hardmax.

use kiln_ir::DType;

use super::elementwise::{Operand, int_suffix};
use super::{Buf, Launcher, check_buf, elems, float_suffix, grid, launch, storage_suffix, to_i64};
use crate::kernels::{Dims, MISC};
use crate::{CudaError, Result};

/// `(outer, dim, inner)` of `shape` around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

impl Launcher<'_> {
    /// Trilu: the upper (lower) triangle of each matrix of the last two dims, from
    /// diagonal `k` on (up to `k`), the rest zeros. Any dtype. `k_dev`: k is the i64
    /// there, read on the device.
    pub fn trilu(&self, dtype: DType, upper: bool, k: i64, k_dev: Option<&Buf>, x: Operand, y: &Buf) -> Result<()> {
        let op = "Trilu";
        let shape = x.1;
        if shape.len() < 2 {
            return Err(CudaError::invalid(op, "input must have rank >= 2"));
        }
        let n = elems(shape);
        check_buf(op, "input", x.0, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        if let Some(b) = k_dev {
            check_buf(op, "k", b, 1, DType::I64)?;
        }
        let kp = k_dev.map_or(0u64, |b| b.addr());
        let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let (up, xa, ya, nn, r, c) = (i32::from(upper), x.0.addr(), y.addr(), to_i64(op, n)?, rows as i64, cols as i64);
        let name = format!("kiln_trilu_{}", storage_suffix(dtype));
        launch!(self, MISC, name, grid(n); up, k, kp, xa, ya, nn, r, c)
    }

    /// ReverseSequence: along `time_axis`, the first `lens[b]` steps of each batch `b`
    /// (along `batch_axis`; the two axes are 0 and 1) reversed. `lens` is i64.
    pub fn reverse_sequence(
        &self,
        dtype: DType,
        x: Operand,
        lens: &Buf,
        batch_axis: usize,
        time_axis: usize,
        y: &Buf,
    ) -> Result<()> {
        let op = "ReverseSequence";
        let shape = x.1;
        if shape.len() < 2 || batch_axis > 1 || time_axis > 1 || batch_axis == time_axis {
            return Err(CudaError::invalid(op, "the batch and time axes must be 0 and 1"));
        }
        let n = elems(shape);
        check_buf(op, "input", x.0, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        check_buf(op, "sequence_lens", lens, shape[batch_axis], DType::I64)?;
        if n == 0 {
            return Ok(());
        }
        let inner: usize = shape[2..].iter().product();
        let stride = |a: usize| if a == 1 { inner } else { shape[1] * inner };
        let (xa, la, ya, nn) = (x.0.addr(), lens.addr(), y.addr(), to_i64(op, n)?);
        let (nt, st, nb, sb) =
            (shape[time_axis] as i64, stride(time_axis) as i64, shape[batch_axis] as i64, stride(batch_axis) as i64);
        let name = format!("kiln_reverse_seq_{}", storage_suffix(dtype));
        launch!(self, MISC, name, grid(n); xa, la, ya, nn, nt, st, nb, sb)
    }

    /// CumSum (`prod` false) or CumProd along `axis`, accumulating in the element type.
    /// `axis_dev`: the axis is the integer (i32 or i64) there, read on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn cumulate(
        &self,
        dtype: DType,
        prod: bool,
        exclusive: bool,
        reverse: bool,
        x: Operand,
        axis: i64,
        axis_dev: Option<(&Buf, DType)>,
        y: &Buf,
    ) -> Result<()> {
        let op = if prod { "CumProd" } else { "CumSum" };
        let suffix = match dtype {
            DType::F64 => "f64",
            d => int_suffix(d).map_or_else(|| float_suffix(op, d), Ok)?,
        };
        let rank = x.1.len();
        let dims = Dims::of(x.1).ok_or_else(|| CudaError::unsupported(op, format!("rank {rank}")))?;
        if axis_dev.is_none() && !(-(rank as i64)..rank as i64).contains(&axis) {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {rank}")));
        }
        let (ap, a64) = match axis_dev {
            None => (0u64, 0i32),
            Some((b, t @ (DType::I32 | DType::I64))) => {
                check_buf(op, "axis", b, 1, t)?;
                (b.addr(), i32::from(t == DType::I64))
            }
            Some((_, t)) => return Err(CudaError::unsupported(op, format!("axis of dtype {t}"))),
        };
        let n = elems(x.1);
        check_buf(op, "input", x.0, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (p, e, r, xa, ya, rk, ax) =
            (i32::from(prod), i32::from(exclusive), i32::from(reverse), x.0.addr(), y.addr(), rank as i32, axis as i32);
        launch!(self, MISC, format!("kiln_cumulate_{suffix}"), grid(n); p, e, r, xa, ya, rk, dims, ax, ap, a64)
    }

    /// Hardmax: 1 at the first maximum of each row, 0 elsewhere. A row is `axis` alone,
    /// or every dim from `axis` on when `coerce_2d` (before opset 13).
    pub fn hardmax(&self, dtype: DType, x: Operand, axis: usize, coerce_2d: bool, y: &Buf) -> Result<()> {
        let op = "Hardmax";
        let suffix = float_suffix(op, dtype)?;
        if axis >= x.1.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", x.1.len())));
        }
        let n = elems(x.1);
        check_buf(op, "input", x.0, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        let (outer, mut len, mut inner) = split(x.1, axis);
        if coerce_2d {
            len *= inner;
            inner = 1;
        }
        if n == 0 {
            return Ok(());
        }
        let (xa, ya, o, l, i) = (x.0.addr(), y.addr(), to_i64(op, outer)?, to_i64(op, len)?, to_i64(op, inner)?);
        launch!(self, MISC, format!("kiln_hardmax_{suffix}"), grid(outer * inner); xa, ya, o, l, i)
    }
}
