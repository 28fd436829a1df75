//! Launchers of `convpool.cu`: BatchNormalization's per-channel affine, batch moments and
//! running statistics, Instance/GroupNormalization, LRN, MaxUnpool's scatter, Col2Im.
//! Per-channel parameters are f32 buffers (the lowering casts them first).

use kiln_ir::DType;

use super::{Buf, Launcher, check_buf, float_suffix, grid, launch, row_grid, storage_suffix, to_i64};
use crate::kernels::{CONVPOOL, MAX_RANK};
use crate::{CudaError, Result};

/// The `UnpoolDesc` argument of `kiln_max_unpool_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UnpoolDesc {
    pub rank: i64,
    pub inner: [i64; MAX_RANK],
    pub outer: [i64; MAX_RANK],
}
// SAFETY: plain old data, laid out as the kernel's `struct UnpoolDesc`.
unsafe impl cudarc::driver::DeviceRepr for UnpoolDesc {}

/// The `Col2ImDesc` argument of `kiln_col2im_*` (3 axes, leading ones of size 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Col2ImDesc {
    pub image: [i64; 3],
    pub blocks: [i64; 3],
    pub kernel: [i64; 3],
    pub stride: [i64; 3],
    pub dilation: [i64; 3],
    pub pad_begin: [i64; 3],
}
// SAFETY: plain old data, laid out as the kernel's `struct Col2ImDesc`.
unsafe impl cudarc::driver::DeviceRepr for Col2ImDesc {}

impl Launcher<'_> {
    /// `y = (x - mean[p]) · scale[p] / sqrt(var[p] + eps) + bias[p]` over `[n, c, s]`;
    /// the four f32 parameter buffers hold `c` values (or `c·s` when `per_activation`).
    #[allow(clippy::too_many_arguments)]
    pub fn channel_affine(
        &self,
        dtype: DType,
        x: &Buf,
        y: &Buf,
        params: [&Buf; 4],
        (n, c, s): (usize, usize, usize),
        per_activation: bool,
        eps: f32,
    ) -> Result<()> {
        let op = "BatchNormalization";
        let suffix = float_suffix(op, dtype)?;
        let total = n * c * s;
        check_buf(op, "input", x, total, dtype)?;
        check_buf(op, "output", y, total, dtype)?;
        let plen = if per_activation { c * s } else { c };
        for (b, what) in params.iter().zip(["scale", "bias", "mean", "var"]) {
            check_buf(op, what, b, plen, DType::F32)?;
        }
        if total == 0 {
            return Ok(());
        }
        let (xa, ya) = (x.addr(), y.addr());
        let [sa, ba, ma, va] = params.map(|b| b.addr());
        let (t, c_, s_, per) = (to_i64(op, total)?, to_i64(op, c)?, to_i64(op, s.max(1))?, per_activation as i32);
        launch!(self, CONVPOOL, format!("kiln_channel_affine_{suffix}"), grid(total); xa, ya, sa, ba, ma, va, t, c_, s_, per, eps)
    }

    /// Each channel's mean and biased variance over `[n, c, s]` into f32 `mean`, `var`.
    pub fn channel_moments(
        &self,
        dtype: DType,
        x: &Buf,
        (n, c, s): (usize, usize, usize),
        mean: &Buf,
        var: &Buf,
    ) -> Result<()> {
        let op = "BatchNormalization";
        let suffix = float_suffix(op, dtype)?;
        check_buf(op, "input", x, n * c * s, dtype)?;
        check_buf(op, "mean", mean, c, DType::F32)?;
        check_buf(op, "var", var, c, DType::F32)?;
        if c == 0 || n * s == 0 {
            return Err(CudaError::invalid(op, "empty channels"));
        }
        let (xa, ma, va) = (x.addr(), mean.addr(), var.addr());
        let (n_, c_, s_) = (to_i64(op, n)?, to_i64(op, c)?, to_i64(op, s)?);
        launch!(self, CONVPOOL, format!("kiln_channel_moments_{suffix}"), row_grid(c); xa, ma, va, n_, c_, s_)
    }

    /// `out = old · momentum + cur · (1 - momentum)` over `n` values (`cur` f32).
    pub fn running_stat(&self, dtype: DType, old: &Buf, cur: &Buf, out: &Buf, n: usize, momentum: f32) -> Result<()> {
        let op = "BatchNormalization";
        let suffix = float_suffix(op, dtype)?;
        check_buf(op, "running statistic", old, n, dtype)?;
        check_buf(op, "batch statistic", cur, n, DType::F32)?;
        check_buf(op, "output statistic", out, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (oa, ca, ya, n_) = (old.addr(), cur.addr(), out.addr(), to_i64(op, n)?);
        launch!(self, CONVPOOL, format!("kiln_running_stat_{suffix}"), grid(n); oa, ca, ya, n_, momentum)
    }

    /// Group normalisation of `x` (`[n, c, s]`) in `groups` groups; f32 `scale`/`bias`
    /// per group or (`per_channel`) per channel.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm(
        &self,
        dtype: DType,
        x: &Buf,
        y: &Buf,
        scale: &Buf,
        bias: &Buf,
        (n, c, s): (usize, usize, usize),
        groups: usize,
        per_channel: bool,
        eps: f32,
    ) -> Result<()> {
        let op = "GroupNormalization";
        let suffix = float_suffix(op, dtype)?;
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(CudaError::invalid(op, format!("{c} channels in {groups} groups")));
        }
        let total = n * c * s;
        check_buf(op, "input", x, total, dtype)?;
        check_buf(op, "output", y, total, dtype)?;
        let plen = if per_channel { c } else { groups };
        check_buf(op, "scale", scale, plen, DType::F32)?;
        check_buf(op, "bias", bias, plen, DType::F32)?;
        if total == 0 {
            return Ok(());
        }
        let rows = n * groups;
        let d = total / rows;
        let (xa, ya, sa, ba) = (x.addr(), y.addr(), scale.addr(), bias.addr());
        let (rows_, d_, g_, s_, pc) =
            (to_i64(op, rows)?, to_i64(op, d)?, to_i64(op, groups)?, to_i64(op, s)?, per_channel as i32);
        launch!(self, CONVPOOL, format!("kiln_group_norm_{suffix}"), row_grid(rows); xa, ya, sa, ba, rows_, d_, g_, s_, pc, eps)
    }

    /// LRN of `x` (`[n, c, s]`) across channels.
    #[allow(clippy::too_many_arguments)]
    pub fn lrn(
        &self,
        dtype: DType,
        x: &Buf,
        y: &Buf,
        (n, c, s): (usize, usize, usize),
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    ) -> Result<()> {
        let op = "LRN";
        let suffix = float_suffix(op, dtype)?;
        let total = n * c * s;
        check_buf(op, "input", x, total, dtype)?;
        check_buf(op, "output", y, total, dtype)?;
        if size == 0 {
            return Err(CudaError::invalid(op, "size 0"));
        }
        if total == 0 {
            return Ok(());
        }
        let (xa, ya) = (x.addr(), y.addr());
        let (t, c_, s_, size_) = (to_i64(op, total)?, to_i64(op, c)?, to_i64(op, s)?, to_i64(op, size)?);
        launch!(self, CONVPOOL, format!("kiln_lrn_{suffix}"), grid(total); xa, ya, t, c_, s_, size_, alpha, beta, bias)
    }

    /// MaxUnpool's scatter: `y[idx[i]] = x[i]` for the `n` values of `x`, the indices over
    /// the shape `inner`, placed at the same position of `y`'s shape `outer` (y zeroed
    /// before). Out-of-range indices are skipped (the host checks nothing on the GPU).
    #[allow(clippy::too_many_arguments)]
    pub fn max_unpool(
        &self,
        dtype: DType,
        x: &Buf,
        idx: &Buf,
        y: &Buf,
        n: usize,
        inner: &[usize],
        outer: &[usize],
    ) -> Result<()> {
        let op = "MaxUnpool";
        if inner.len() != outer.len() || inner.len() > MAX_RANK || inner.iter().zip(outer).any(|(i, o)| i > o) {
            return Err(CudaError::invalid(op, format!("shape {inner:?} inside {outer:?}")));
        }
        check_buf(op, "input", x, n, dtype)?;
        check_buf(op, "indices", idx, n, DType::I64)?;
        let olen: usize = outer.iter().product();
        check_buf(op, "output", y, olen, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let mut d = UnpoolDesc { rank: inner.len() as i64, ..Default::default() };
        for (k, (&i, &o)) in inner.iter().zip(outer).enumerate() {
            d.inner[k] = to_i64(op, i.max(1))?;
            d.outer[k] = to_i64(op, o.max(1))?;
        }
        let (xa, ia, ya) = (x.addr(), idx.addr(), y.addr());
        let (n_, il) = (to_i64(op, n)?, to_i64(op, inner.iter().product())?);
        launch!(self, CONVPOOL, format!("kiln_max_unpool_{}", storage_suffix(dtype)), grid(n); xa, ia, ya, n_, il, d)
    }

    /// Col2Im of `x` (`[planes · prod(kernel), L]` per batch) into `y` (`planes` images).
    pub fn col2im(&self, dtype: DType, x: &Buf, y: &Buf, planes: usize, d: &Col2ImDesc) -> Result<()> {
        let op = "Col2Im";
        let suffix = float_suffix(op, dtype)?;
        let p = |v: &[i64; 3]| v.iter().product::<i64>() as usize;
        check_buf(op, "input", x, planes * p(&d.kernel) * p(&d.blocks), dtype)?;
        let n = planes * p(&d.image);
        check_buf(op, "output", y, n, dtype)?;
        if d.stride.contains(&0) || d.dilation.contains(&0) {
            return Err(CudaError::invalid(op, "zero stride or dilation"));
        }
        if n == 0 {
            return Ok(());
        }
        let (xa, ya, pl, desc) = (x.addr(), y.addr(), to_i64(op, planes)?, *d);
        launch!(self, CONVPOOL, format!("kiln_col2im_{suffix}"), grid(n); xa, ya, pl, desc)
    }
}

/// The `ConvIntDesc` argument of `kiln_conv_int_*` (3 spatial axes, leading ones of size 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ConvIntDesc {
    pub batch: i64,
    pub c: i64,
    pub m: i64,
    pub group: i64,
    pub input: [i64; 3],
    pub output: [i64; 3],
    pub kernel: [i64; 3],
    pub stride: [i64; 3],
    pub dilation: [i64; 3],
    pub pad_begin: [i64; 3],
}
// SAFETY: plain old data, laid out as the kernel's `struct ConvIntDesc`.
unsafe impl cudarc::driver::DeviceRepr for ConvIntDesc {}

/// QLinearConv's requantization operands: x_scale, (w_scale, its length), y_scale,
/// y_zero_point (f32 scales).
pub type Requant<'a, 'b> = (&'a Buf<'b>, (&'a Buf<'b>, usize), &'a Buf<'b>, Option<&'a Buf<'b>>);

fn int8_suffix(op: &str, d: DType) -> Result<&'static str> {
    match d {
        DType::U8 => Ok("u8"),
        DType::I8 => Ok("i8"),
        d => Err(CudaError::unsupported(op, format!("dtype {d} (8-bit integers only)"))),
    }
}

impl Launcher<'_> {
    /// ConvInteger (`y` int32, `requant` None) or QLinearConv (`y` u8/i8): a direct
    /// convolution of 8-bit `x` by 8-bit `w` with zero points, exact int32 sums.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_int(
        &self,
        (xd, wd, yd): (DType, DType, DType),
        x: &Buf,
        w: &Buf,
        xz: Option<&Buf>,
        wz: Option<(&Buf, usize)>,
        bias: Option<&Buf>,
        y: &Buf,
        requant: Option<Requant>,
        d: &ConvIntDesc,
    ) -> Result<()> {
        let op = if requant.is_some() { "QLinearConv" } else { "ConvInteger" };
        let (sx, sw) = (int8_suffix(op, xd)?, int8_suffix(op, wd)?);
        let (sy, lo, hi) = match (yd, requant.is_some()) {
            (DType::I32, false) => ("i32", 0.0, 0.0),
            (DType::U8, true) => ("u8", 0.0, 255.0),
            (DType::I8, true) => ("i8", -128.0, 127.0),
            (t, _) => return Err(CudaError::unsupported(op, format!("output dtype {t}"))),
        };
        let p = |v: &[i64; 3]| v.iter().product::<i64>().max(0) as usize;
        let (batch, c, m, g) = (d.batch as usize, d.c as usize, d.m as usize, d.group as usize);
        if g == 0 || !c.is_multiple_of(g) || !m.is_multiple_of(g) {
            return Err(CudaError::invalid(op, format!("channels {c} → {m} in {g} groups")));
        }
        check_buf(op, "input", x, batch * c * p(&d.input), xd)?;
        check_buf(op, "weights", w, m * (c / g) * p(&d.kernel), wd)?;
        let n = batch * m * p(&d.output);
        check_buf(op, "output", y, n, yd)?;
        if let Some(z) = xz {
            check_buf(op, "x_zero_point", z, 1, xd)?;
        }
        let wz_len = match wz {
            Some((z, len)) if len == 1 || len == m => {
                check_buf(op, "w_zero_point", z, len, wd)?;
                len
            }
            Some((_, len)) => return Err(CudaError::invalid(op, format!("w_zero_point of {len} values"))),
            None => 1,
        };
        if let Some(b) = bias {
            check_buf(op, "bias", b, m, DType::I32)?;
        }
        let mut ws_len = 1usize;
        if let Some((xs, (ws, wl), ys, yz)) = requant {
            check_buf(op, "x_scale", xs, 1, DType::F32)?;
            if wl != 1 && wl != m {
                return Err(CudaError::invalid(op, format!("w_scale of {wl} values")));
            }
            check_buf(op, "w_scale", ws, wl, DType::F32)?;
            check_buf(op, "y_scale", ys, 1, DType::F32)?;
            if let Some(z) = yz {
                check_buf(op, "y_zero_point", z, 1, yd)?;
            }
            ws_len = wl;
        }
        if d.stride.contains(&0) || d.dilation.contains(&0) {
            return Err(CudaError::invalid(op, "zero stride or dilation"));
        }
        if n == 0 {
            return Ok(());
        }
        let (xa, wa, ya) = (x.addr(), w.addr(), y.addr());
        let xza = xz.map_or(0, |b| b.addr());
        let wza = wz.map_or(0, |(b, _)| b.addr());
        let ba = bias.map_or(0, |b| b.addr());
        let (xsa, wsa, ysa, yza) = requant.map_or((0, 0, 0, 0), |(xs, (ws, _), ys, yz)| {
            (xs.addr(), ws.addr(), ys.addr(), yz.map_or(0, |b| b.addr()))
        });
        let (wzl, wsl, desc, mode) = (to_i64(op, wz_len)?, to_i64(op, ws_len)?, *d, requant.is_some() as i32);
        let (lo, hi): (f32, f32) = (lo, hi);
        launch!(self, CONVPOOL, format!("kiln_conv_int_{sx}{sw}_{sy}"), grid(n);
            xa, wa, xza, wza, wzl, ba, ya, xsa, wsa, wsl, ysa, yza, desc, mode, lo, hi)
    }
}
