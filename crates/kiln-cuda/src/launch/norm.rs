//! Launchers of `norm.cu`: LayerNormalization and RMSNormalization over the trailing
//! axes `axis..`, statistics in f32.

use kiln_ir::DType;

use super::elementwise::Operand;
use super::{Buf, Launcher, check_buf, elems, float_suffix, launch, row_grid, to_i64};
use crate::kernels::NORM;
use crate::{CudaError, Result};

/// The element count of a scale or bias of `shape` that broadcasts to the normalised
/// dims `norm` as a suffix (leading ones, then the same trailing dims), so element j of a
/// row reads element `j % len`. Other broadcasts are not supported.
fn suffix_len(op: &str, what: &str, shape: &[usize], norm: &[usize]) -> Result<usize> {
    let lead = shape.iter().take_while(|&&n| n == 1).count();
    let rest = &shape[lead..];
    if rest.len() > norm.len() || rest != &norm[norm.len() - rest.len()..] {
        return Err(CudaError::unsupported(
            op,
            format!("{what} of shape {shape:?} for normalised dims {norm:?} (only a trailing part of them)"),
        ));
    }
    Ok(elems(rest).max(1))
}

impl Launcher<'_> {
    /// LayerNormalization of `x` over `axis..`:
    /// `y = (x - mean) / sqrt(var + eps) * scale + bias`. `stats`, when given, receives
    /// each row's mean and 1/std as f32 (the Mean and InvStdDev outputs, stash_type f32).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        dtype: DType,
        x: Operand,
        axis: usize,
        scale: Operand,
        bias: Option<Operand>,
        eps: f32,
        y: &Buf,
        stats: Option<(&Buf, &Buf)>,
    ) -> Result<()> {
        let op = "LayerNormalization";
        let (x, shape) = x;
        let suffix = float_suffix(op, dtype)?;
        if axis >= shape.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", shape.len())));
        }
        let (rows, d) = (elems(&shape[..axis]), elems(&shape[axis..]));
        let scale_len = suffix_len(op, "scale", scale.1, &shape[axis..])?;
        let bias_len = bias.map(|b| suffix_len(op, "bias", b.1, &shape[axis..])).transpose()?.unwrap_or(1);
        check_buf(op, "input", x, rows * d, dtype)?;
        check_buf(op, "output", y, rows * d, dtype)?;
        check_buf(op, "scale", scale.0, scale_len, dtype)?;
        if let Some(b) = bias {
            check_buf(op, "bias", b.0, bias_len, dtype)?;
        }
        if let Some((m, r)) = stats {
            check_buf(op, "mean", m, rows, DType::F32)?;
            check_buf(op, "inverse std", r, rows, DType::F32)?;
        }
        if rows * d == 0 {
            return Ok(());
        }
        let (xa, sa, ba, ya) = (x.addr(), scale.0.addr(), bias.map_or(0, |b| b.0.addr()), y.addr());
        let (ma, ra) = stats.map_or((0, 0), |(m, r)| (m.addr(), r.addr()));
        let (rows_, d_, sl, bl) = (to_i64(op, rows)?, to_i64(op, d)?, to_i64(op, scale_len)?, to_i64(op, bias_len)?);
        launch!(self, NORM, format!("kiln_layer_norm_{suffix}"), row_grid(rows); xa, sa, ba, ya, ma, ra, rows_, d_, sl, bl, eps)
    }

    /// RMSNormalization of `x` over `axis..`: `y = x / sqrt(mean(x²) + eps) * scale`.
    pub fn rms_norm(&self, dtype: DType, x: Operand, axis: usize, scale: Operand, eps: f32, y: &Buf) -> Result<()> {
        let op = "RMSNormalization";
        let (x, shape) = x;
        let suffix = float_suffix(op, dtype)?;
        if axis >= shape.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", shape.len())));
        }
        let (rows, d) = (elems(&shape[..axis]), elems(&shape[axis..]));
        let scale_len = suffix_len(op, "scale", scale.1, &shape[axis..])?;
        check_buf(op, "input", x, rows * d, dtype)?;
        check_buf(op, "output", y, rows * d, dtype)?;
        check_buf(op, "scale", scale.0, scale_len, dtype)?;
        if rows * d == 0 {
            return Ok(());
        }
        let (xa, sa, ya) = (x.addr(), scale.0.addr(), y.addr());
        let (rows_, d_, sl) = (to_i64(op, rows)?, to_i64(op, d)?, to_i64(op, scale_len)?);
        launch!(self, NORM, format!("kiln_rms_norm_{suffix}"), row_grid(rows); xa, sa, ya, rows_, d_, sl, eps)
    }
}
