//! Movement ops as strided copies (Transpose, Slice, Concat, Split, Expand, Tile and
//! kiln-opt's in-place Concat and slice views), Gather and Pad. Their shape-like
//! operands (slice bounds, pads) are read from the plan's constants.

use kiln_ir::DType;
use kiln_ir::ops::movement::{MovementOp, PadMode, slice_axes, slice_layout};

use super::{Cx, Lowered, axis, contiguous, is_storage};
use crate::executor::{CopySpec, Kernel};
use crate::kernels::MAX_RANK;
use crate::plan::SlotId;

pub(crate) fn lower(cx: &mut Cx, op: &MovementOp) -> Lowered {
    let dtype_ok = |cx: &Cx, s: SlotId| -> Result<DType, String> {
        let d = cx.dtype(s);
        if is_storage(d) { Ok(d) } else { Err(format!("dtype {d}")) }
    };
    match op {
        MovementOp::Transpose { perm } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let shape = cx.shape(x);
            let perm: Vec<usize> = match perm {
                Some(p) => p.iter().map(|&a| axis(a, shape.len())).collect::<Result<_, _>>()?,
                None => (0..shape.len()).rev().collect(),
            };
            let xs = contiguous(&shape);
            let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let copy = CopySpec {
                src_offset: 0,
                src_strides: perm.iter().map(|&p| xs[p]).collect(),
                dst_offset: 0,
                dst_strides: contiguous(&dims),
                dims,
            };
            Ok(vec![Kernel::Copy { dtype: dtype_ok(cx, y)?, src: x, dst: y, copy }])
        }
        MovementOp::Slice { attrs } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let shape = cx.shape(x);
            let slices = match attrs {
                Some(a) => slice_axes(&shape, &a.starts, &a.ends, a.axes.as_deref(), None),
                None => {
                    let starts = cx.const_ints(1, "starts")?;
                    let ends = cx.const_ints(2, "ends")?;
                    let axes = cx.opt_input(3).map(|_| cx.const_ints(3, "axes")).transpose()?;
                    let steps = cx.opt_input(4).map(|_| cx.const_ints(4, "steps")).transpose()?;
                    slice_axes(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())
                }
            }
            .map_err(|e| e.to_string())?;
            let (offset, dims, strides) = slice_layout(&shape, &slices);
            if dims.iter().product::<usize>() != cx.len(y) {
                return Err(format!("the slice has dims {dims:?}, the output {:?}", cx.shape(y)));
            }
            let copy = CopySpec {
                src_offset: offset,
                src_strides: strides,
                dst_offset: 0,
                dst_strides: contiguous(&dims),
                dims,
            };
            Ok(vec![Kernel::Copy { dtype: dtype_ok(cx, y)?, src: x, dst: y, copy }])
        }
        MovementOp::Concat { axis: a } => {
            let y = cx.single_output()?;
            let a = axis(*a, cx.shape(y).len())?;
            concat(cx, a, y)
        }
        MovementOp::Split { axis: a, .. } => {
            let x = cx.input(0)?;
            let a = axis(*a, cx.shape(x).len())?;
            let windows = split_windows(cx, a)?;
            split(cx, x, a, &windows)
        }
        MovementOp::Expand => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let copy = expand_spec(&cx.shape(x), &cx.shape(y))?;
            Ok(vec![Kernel::Copy { dtype: dtype_ok(cx, y)?, src: x, dst: y, copy }])
        }
        MovementOp::Tile => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let (xs, ys) = (cx.shape(x), cx.shape(y));
            if xs.len() != ys.len() || xs.iter().zip(&ys).any(|(&a, &b)| a == 0 || b % a != 0) {
                return Err(format!("tiling {xs:?} into {ys:?}"));
            }
            // Each axis as (repeat, element): the source ignores the repeat.
            let (sx, sy) = (contiguous(&xs), contiguous(&ys));
            let mut copy = CopySpec::default();
            for k in 0..xs.len() {
                copy.dims.extend([ys[k] / xs[k], xs[k]]);
                copy.src_strides.extend([0, sx[k]]);
                copy.dst_strides.extend([sy[k] * xs[k] as isize, sy[k]]);
            }
            Ok(vec![Kernel::Copy { dtype: dtype_ok(cx, y)?, src: x, dst: y, copy }])
        }
        MovementOp::Gather { axis: a } => {
            let (data, idx, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let a = axis(*a, cx.shape(data).len())?;
            if !matches!(cx.dtype(idx), DType::I32 | DType::I64) {
                return Err(format!("indices of dtype {}", cx.dtype(idx)));
            }
            Ok(vec![Kernel::Gather { dtype: dtype_ok(cx, y)?, data, axis: a, indices: idx, y }])
        }
        MovementOp::Pad { mode, pads, value } => {
            let (x, y) = (cx.input(0)?, cx.single_output()?);
            let rank = cx.shape(x).len();
            if rank > MAX_RANK {
                return Err(format!("rank {rank}"));
            }
            let (pads, value) = match pads {
                Some(p) => (p.clone(), f64::from(*value)),
                None => {
                    let p = cx.const_ints(1, "pads")?;
                    let v = match cx.opt_input(2) {
                        None => 0.0,
                        Some(_) => {
                            let t = cx.constant(2).ok_or("the pad value is not a constant")?;
                            t.to_f64_vec().map_err(|e| e.to_string())?.first().copied().unwrap_or(0.0)
                        }
                    };
                    let p = match cx.opt_input(3) {
                        None => p,
                        Some(_) => {
                            let axes = cx.const_ints(3, "axes")?;
                            let mut full = vec![0i64; 2 * rank];
                            for (k, &ax) in axes.iter().enumerate() {
                                let a = axis(ax, rank)?;
                                full[a] = p[k];
                                full[a + rank] = p[k + axes.len()];
                            }
                            full
                        }
                    };
                    (p, v)
                }
            };
            if pads.len() != 2 * rank {
                return Err(format!("{} pads for rank {rank}", pads.len()));
            }
            let pairs: Vec<(i64, i64)> = (0..rank).map(|k| (pads[k], pads[k + rank])).collect();
            if *mode != PadMode::Constant && cx.len(x) == 0 && cx.len(y) != 0 {
                return Err("padding an empty tensor except with a constant".into());
            }
            Ok(vec![Kernel::Pad { dtype: dtype_ok(cx, y)?, mode: *mode, x, pads: pairs, value, y }])
        }
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

/// Expand's copy: `x` broadcast (numpy rules) into row-major `out`.
pub(crate) fn expand_spec(xs: &[usize], out: &[usize]) -> Result<CopySpec, String> {
    if xs.len() > out.len() {
        return Err(format!("{xs:?} has a higher rank than {out:?}"));
    }
    let sx = contiguous(xs);
    let lead = out.len() - xs.len();
    let mut src_strides = vec![0isize; out.len()];
    for (k, &n) in xs.iter().enumerate() {
        if n != 1 && n != out[lead + k] {
            return Err(format!("{xs:?} does not broadcast to {out:?}"));
        }
        src_strides[lead + k] = if n == 1 { 0 } else { sx[k] };
    }
    Ok(CopySpec { dims: out.to_vec(), src_offset: 0, src_strides, dst_offset: 0, dst_strides: contiguous(out) })
}

/// Each input copied into its place along `axis` of `y`.
pub(crate) fn concat(cx: &Cx, a: usize, y: SlotId) -> Lowered {
    let out = cx.shape(y);
    let dtype = cx.dtype(y);
    if !is_storage(dtype) {
        return Err(format!("dtype {dtype}"));
    }
    let so = contiguous(&out);
    let mut at = 0usize;
    let mut ks = Vec::new();
    for i in 0..cx.step.inputs.len() {
        let x = cx.input(i)?;
        let xs = cx.shape(x);
        if xs.len() != out.len() || cx.dtype(x) != dtype {
            return Err(format!("input {i} of shape {xs:?} does not fit {out:?}"));
        }
        let copy = CopySpec {
            src_offset: 0,
            src_strides: contiguous(&xs),
            dst_offset: at as isize * so[a],
            dst_strides: so.clone(),
            dims: xs.clone(),
        };
        at += xs[a];
        ks.push(Kernel::Copy { dtype, src: x, dst: y, copy });
    }
    if at != out[a] {
        return Err(format!("inputs add up to {at} along axis {a}, the output has {}", out[a]));
    }
    Ok(ks)
}

/// The `(start, len)` of each output of a Split along `a`, from the outputs' shapes.
fn split_windows(cx: &Cx, a: usize) -> Result<Vec<(usize, usize)>, String> {
    let mut at = 0;
    let mut w = Vec::new();
    for &o in &cx.step.outputs {
        let len = cx.shape(o).get(a).copied().ok_or("an output of another rank")?;
        w.push((at, len));
        at += len;
    }
    Ok(w)
}

/// Output `k` = the window `windows[k]` of `x` along `a`.
pub(crate) fn split(cx: &Cx, x: SlotId, a: usize, windows: &[(usize, usize)]) -> Lowered {
    let xs = cx.shape(x);
    let dtype = cx.dtype(x);
    if !is_storage(dtype) {
        return Err(format!("dtype {dtype}"));
    }
    if windows.len() != cx.step.outputs.len() {
        return Err(format!("{} windows for {} outputs", windows.len(), cx.step.outputs.len()));
    }
    let sx = contiguous(&xs);
    let mut ks = Vec::new();
    for (&(start, len), &y) in windows.iter().zip(&cx.step.outputs) {
        let mut dims = xs.clone();
        if a >= dims.len() || start + len > xs[a] {
            return Err(format!("window ({start}, {len}) of axis {a} of {xs:?}"));
        }
        dims[a] = len;
        if dims.iter().product::<usize>() != cx.len(y) || cx.dtype(y) != dtype {
            return Err(format!("output of shape {:?} for window {dims:?}", cx.shape(y)));
        }
        let copy = CopySpec {
            src_offset: start as isize * sx[a],
            src_strides: sx.clone(),
            dst_offset: 0,
            dst_strides: contiguous(&dims),
            dims,
        };
        ks.push(Kernel::Copy { dtype, src: x, dst: y, copy });
    }
    Ok(ks)
}

/// CenterCropPad: the centred overlap of input and output copied (crop start or pad
/// start `floor(|n - m| / 2)` per axis), the rest of a padded output zero.
pub(crate) fn center_crop_pad(cx: &mut Cx) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.single_output()?);
    let (xs, ys) = (cx.shape(x), cx.shape(y));
    if xs.len() != ys.len() {
        return Err(format!("input rank {} but output rank {}", xs.len(), ys.len()));
    }
    let (xst, yst) = (super::contiguous(&xs), super::contiguous(&ys));
    let (mut src_offset, mut dst_offset) = (0isize, 0isize);
    let mut dims = Vec::with_capacity(xs.len());
    for (a, (&n, &m)) in xs.iter().zip(&ys).enumerate() {
        if n >= m {
            src_offset += ((n - m) / 2) as isize * xst[a];
        } else {
            dst_offset += ((m - n) / 2) as isize * yst[a];
        }
        dims.push(n.min(m));
    }
    let dtype = cx.dtype(y);
    if !is_storage(dtype) {
        return Err(format!("dtype {dtype}"));
    }
    let mut kernels = Vec::new();
    if xs.iter().zip(&ys).any(|(n, m)| n < m) {
        kernels.push(Kernel::Fill { dtype, y, value: 0.0 });
    }
    let copy = CopySpec { dims, src_offset, src_strides: xst, dst_offset, dst_strides: yst };
    kernels.push(Kernel::Copy { dtype, src: x, dst: y, copy });
    Ok(kernels)
}
