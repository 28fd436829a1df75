//! Launchers of `pool.cu`: MaxPool (with its optional Indices output, row- or
//! column-major; floats and 8-bit integers), AveragePool (count_include_pad either way),
//! LpPool, over 1 to 3 spatial axes with pads, strides,
//! dilations and ceil_mode, and the global pools over any number of spatial axes.
//!
//! The window geometry comes from kiln_ir's [`Window::axis`] (through [`pool_geometry`]),
//! so output sizes agree with shape inference.

use kiln_ir::DType;
use kiln_ir::ops::nn::{AxisGeometry, Pool, PoolKind, Window};

use super::elementwise::Operand;
use super::{Buf, Launcher, check_buf, elems, float_suffix, grid, launch, row_grid, to_i64};
use crate::kernels::POOL;
use crate::{CudaError, Result};

/// Spatial axes the pool kernel walks (`KILN_POOL_AXES`).
pub const POOL_AXES: usize = 3;

/// The `PoolDesc` argument of `kiln_pool_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PoolDesc {
    pub input: [i64; POOL_AXES],
    pub output: [i64; POOL_AXES],
    pub kernel: [i64; POOL_AXES],
    pub stride: [i64; POOL_AXES],
    pub dilation: [i64; POOL_AXES],
    pub pad_begin: [i64; POOL_AXES],
    pub pad_end: [i64; POOL_AXES],
}

// SAFETY: plain old data, laid out as the kernel's `struct PoolDesc`.
unsafe impl cudarc::driver::DeviceRepr for PoolDesc {}

impl PoolDesc {
    /// The descriptor of `axes` (1 to 3), leading axes filled with size-1 ones.
    pub fn new(op: &str, axes: &[AxisGeometry]) -> Result<PoolDesc> {
        if axes.is_empty() || axes.len() > POOL_AXES {
            return Err(CudaError::unsupported(
                op,
                format!("{} spatial axes (the pool kernel takes 1 to {POOL_AXES})", axes.len()),
            ));
        }
        let mut d = PoolDesc {
            input: [1; POOL_AXES],
            output: [1; POOL_AXES],
            kernel: [1; POOL_AXES],
            stride: [1; POOL_AXES],
            dilation: [1; POOL_AXES],
            pad_begin: [0; POOL_AXES],
            pad_end: [0; POOL_AXES],
        };
        let skip = POOL_AXES - axes.len();
        for (i, a) in axes.iter().enumerate() {
            let j = skip + i;
            d.input[j] = to_i64(op, a.input)?;
            d.output[j] = to_i64(op, a.output)?;
            d.kernel[j] = to_i64(op, a.kernel)?;
            d.stride[j] = to_i64(op, a.stride)?;
            d.dilation[j] = to_i64(op, a.dilation)?;
            d.pad_begin[j] = to_i64(op, a.pad_begin)?;
            d.pad_end[j] = to_i64(op, a.pad_end)?;
        }
        Ok(d)
    }
}

/// The op name of a pool of `kind`.
pub fn pool_name(kind: PoolKind, global: bool) -> &'static str {
    match (kind, global) {
        (PoolKind::Max { .. }, false) => "MaxPool",
        (PoolKind::Average { .. }, false) => "AveragePool",
        (PoolKind::Lp { .. }, false) => "LpPool",
        (PoolKind::Max { .. }, true) => "GlobalMaxPool",
        (PoolKind::Average { .. }, true) => "GlobalAveragePool",
        (PoolKind::Lp { .. }, true) => "GlobalLpPool",
    }
}

/// The geometry of each spatial axis of `pool` on an input of shape `x` (`[N, C, …]`),
/// from kiln_ir's [`Window::axis`].
pub fn pool_geometry(pool: &Pool, x: &[usize]) -> Result<Vec<AxisGeometry>> {
    let op = pool_name(pool.kind, false);
    window_geometry(&pool.window, x, pool.ceil_mode, op)
}

fn window_geometry(w: &Window, x: &[usize], ceil_mode: bool, op: &str) -> Result<Vec<AxisGeometry>> {
    if x.len() < 3 {
        return Err(CudaError::invalid(op, format!("input of rank {} (needs N, C and spatial axes)", x.len())));
    }
    let n = x.len() - 2;
    let ir = |e: kiln_ir::IrError| CudaError::invalid(op, e.to_string());
    w.check(n, op).map_err(ir)?;
    let kernel = w.kernel_shape.as_deref().ok_or_else(|| CudaError::invalid(op, "kernel_shape is required"))?;
    (0..n).map(|i| w.axis(i, n, x[2 + i], kernel[i], ceil_mode, op).map_err(ir)).collect()
}

/// The output shape `[N, C, outputs…]` of a pool over `x` with `axes`.
pub fn pool_output_shape(x: &[usize], axes: &[AxisGeometry]) -> Vec<usize> {
    let mut s = x[..2.min(x.len())].to_vec();
    s.extend(axes.iter().map(|a| a.output));
    s
}

impl Launcher<'_> {
    /// MaxPool or AveragePool of `x` (`[N, C, spatial…]`, 1 to 3 spatial axes) with the
    /// window `axes` (see [`pool_geometry`]) into `y`. `indices` (MaxPool only) receives
    /// each maximum's flat row-major index in `x` as int64.
    pub fn pool(
        &self,
        dtype: DType,
        kind: PoolKind,
        x: Operand,
        axes: &[AxisGeometry],
        y: &Buf,
        indices: Option<&Buf>,
    ) -> Result<()> {
        let op = pool_name(kind, false);
        let (x, shape) = x;
        let suffix = match dtype {
            DType::U8 if matches!(kind, PoolKind::Max { .. }) => "u8",
            DType::I8 if matches!(kind, PoolKind::Max { .. }) => "i8",
            d => float_suffix(op, d)?,
        };
        let (mut p, mut col_major) = (1f32, 0i32);
        let code: i32 = match kind {
            PoolKind::Max { column_major_indices } => {
                col_major = column_major_indices as i32;
                0
            }
            PoolKind::Average { count_include_pad: false } => 1,
            PoolKind::Average { count_include_pad: true } => 2,
            PoolKind::Lp { p: power } => {
                p = power;
                3
            }
        };
        if indices.is_some() && code != 0 {
            return Err(CudaError::invalid(op, "only MaxPool has an Indices output"));
        }
        if shape.len() != axes.len() + 2 {
            return Err(CudaError::invalid(op, format!("input {shape:?} for {} spatial axes", axes.len())));
        }
        for (i, a) in axes.iter().enumerate() {
            if a.input != shape[2 + i] {
                return Err(CudaError::invalid(
                    op,
                    format!("axis {i}: geometry for size {}, input {shape:?}", a.input),
                ));
            }
            if a.stride == 0 || a.dilation == 0 || a.kernel == 0 {
                return Err(CudaError::invalid(op, format!("axis {i}: zero kernel, stride or dilation")));
            }
        }
        let desc = PoolDesc::new(op, axes)?;
        let out = pool_output_shape(shape, axes);
        let planes = elems(&shape[..2]);
        check_buf(op, "input", x, elems(shape), dtype)?;
        check_buf(op, "output", y, elems(&out), dtype)?;
        if let Some(ix) = indices {
            check_buf(op, "indices", ix, elems(&out), DType::I64)?;
        }
        let n = elems(&out);
        if n == 0 {
            return Ok(());
        }
        let (xa, ya, ia) = (x.addr(), y.addr(), indices.map_or(0, |b| b.addr()));
        let planes = to_i64(op, planes)?;
        launch!(self, POOL, format!("kiln_pool_{suffix}"), grid(n); xa, ya, ia, desc, planes, code, p, col_major)
    }

    /// GlobalAveragePool or GlobalMaxPool of `x` (`[N, C, spatial…]`) into `y`
    /// (`[N, C, 1, …]`).
    pub fn global_pool(&self, dtype: DType, kind: PoolKind, x: Operand, y: &Buf) -> Result<()> {
        let op = pool_name(kind, true);
        let (x, shape) = x;
        let suffix = float_suffix(op, dtype)?;
        let (mean, p): (i32, f32) = match kind {
            PoolKind::Max { .. } => (0, 1.0),
            PoolKind::Average { .. } => (1, 1.0),
            PoolKind::Lp { p } => (2, p),
        };
        if shape.len() < 2 {
            return Err(CudaError::invalid(op, format!("input of rank {}", shape.len())));
        }
        let (planes, d) = (elems(&shape[..2]), elems(&shape[2..]));
        check_buf(op, "input", x, planes * d, dtype)?;
        check_buf(op, "output", y, planes, dtype)?;
        if planes == 0 {
            return Ok(());
        }
        if d == 0 {
            return Err(CudaError::invalid(op, "empty spatial axes"));
        }
        let (xa, ya) = (x.addr(), y.addr());
        let (planes_, d_) = (to_i64(op, planes)?, to_i64(op, d)?);
        launch!(self, POOL, format!("kiln_global_pool_{suffix}"), row_grid(planes); xa, ya, planes_, d_, mean, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: PoolKind, kernel: &[usize], strides: &[usize], pads: &[usize], ceil_mode: bool) -> Pool {
        Pool {
            kind,
            window: Window {
                kernel_shape: Some(kernel.to_vec()),
                strides: Some(strides.to_vec()),
                pads: Some(pads.to_vec()),
                ..Window::default()
            },
            ceil_mode,
        }
    }

    #[test]
    fn resnet_max_pool_geometry() {
        let p = pool(PoolKind::Max { column_major_indices: false }, &[3, 3], &[2, 2], &[1, 1, 1, 1], false);
        let axes = pool_geometry(&p, &[1, 64, 112, 112]).unwrap();
        assert_eq!(pool_output_shape(&[1, 64, 112, 112], &axes), vec![1, 64, 56, 56]);
        let d = PoolDesc::new("MaxPool", &axes).unwrap();
        assert_eq!(d.input, [1, 112, 112]);
        assert_eq!(d.output, [1, 56, 56]);
        assert_eq!(d.kernel, [1, 3, 3]);
        assert_eq!(d.pad_begin, [0, 1, 1]);
    }

    #[test]
    fn ceil_mode_adds_a_window() {
        let p = pool(PoolKind::Average { count_include_pad: false }, &[2], &[2], &[0, 0], true);
        let axes = pool_geometry(&p, &[1, 1, 5]).unwrap();
        assert_eq!(axes[0].output, 3);
        let p = pool(PoolKind::Average { count_include_pad: false }, &[2], &[2], &[0, 0], false);
        assert_eq!(pool_geometry(&p, &[1, 1, 5]).unwrap()[0].output, 2);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let p = pool(PoolKind::Max { column_major_indices: false }, &[3, 3], &[1, 1], &[0, 0, 0, 0], false);
        assert!(pool_geometry(&p, &[1, 1, 2, 2]).is_err());
        assert!(pool_geometry(&p, &[1, 4]).is_err());
        let a = AxisGeometry { input: 1, output: 1, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0 };
        assert!(PoolDesc::new("MaxPool", &[a; 4]).is_err());
        assert!(PoolDesc::new("MaxPool", &[]).is_err());
    }
}
