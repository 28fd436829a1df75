//! Spatial sampling ops on kernels of `sample.cu`: GridSample (1 to 3 spatial dims),
//! AffineGrid, RoiAlign.

use kiln_ir::DType;
use kiln_ir::ops::VisionOp;
use kiln_ir::ops::vision::{
    CoordMode, GridPadding, GridSample, Interp, NearestMode, Resize, RoiAlign, RoiPool, tensor_f32,
};

use super::attention::{float_code, suffix};
use super::{Cx, Lowered};
use crate::executor::Kernel;
use crate::kernels::SAMPLE;
use crate::launch::family::{FamGrid, FamilyCall};

pub(crate) fn lower(cx: &mut Cx, op: &VisionOp) -> Lowered {
    match op {
        VisionOp::GridSample(g) => grid_sample(cx, g),
        VisionOp::AffineGrid { align_corners } => affine_grid(cx, *align_corners),
        VisionOp::RoiAlign(r) => roi_align(cx, r),
        VisionOp::Resize(r) => resize(cx, r),
        VisionOp::CenterCropPad { .. } => super::movement::center_crop_pad(cx),
        _ => Err("no CUDA kernel for this op yet".into()),
    }
}

fn bytes(cx: &Cx, s: usize) -> Option<(usize, usize)> {
    Some((s, cx.len(s) * cx.dtype(s).size()))
}

fn grid_sample(cx: &mut Cx, g: &GridSample) -> Lowered {
    let (x, grid, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
    let dtype = cx.dtype(x);
    let sfx = suffix(dtype)?;
    let (xs, gs) = (cx.shape(x), cx.shape(grid));
    let r = xs.len().saturating_sub(2);
    if xs.len() < 3 || gs.len() != xs.len() || gs[0] != xs[0] || gs[gs.len() - 1] != r {
        return Err(format!("X {xs:?} and grid {gs:?} do not fit"));
    }
    if r > 3 {
        return Err(format!("{r} spatial dims (at most 3)"));
    }
    let points: usize = gs[1..gs.len() - 1].iter().product();
    if xs[2..].contains(&0) && points > 0 {
        return Err(format!("cannot sample an empty image {xs:?}"));
    }
    if cx.dtype(y) != dtype || cx.len(y) != xs[0] * xs[1] * points {
        return Err(format!("output of shape {:?}", cx.shape(y)));
    }
    let mut call = FamilyCall::new(SAMPLE, format!("kiln_grid_sample_{sfx}"), FamGrid::Elems(cx.len(y)));
    call.ptrs = vec![bytes(cx, x), bytes(cx, grid), bytes(cx, y)];
    let mut dims = [1i64; 3];
    for (d, &n) in xs[2..].iter().enumerate() {
        dims[d] = n as i64;
    }
    let mode = match g.mode {
        Interp::Nearest => 0,
        Interp::Linear => 1,
        Interp::Cubic => 2,
    };
    let padding = match g.padding {
        GridPadding::Zeros => 0,
        GridPadding::Border => 1,
        GridPadding::Reflection => 2,
    };
    call.ints = vec![
        xs[0] as i64,
        xs[1] as i64,
        r as i64,
        dims[0],
        dims[1],
        dims[2],
        points as i64,
        mode,
        padding,
        i64::from(g.align_corners),
        float_code(cx.dtype(grid))?,
    ];
    Ok(vec![Kernel::Family(Box::new(call))])
}

fn affine_grid(cx: &mut Cx, align_corners: bool) -> Lowered {
    let (theta, y) = (cx.input(0)?, cx.single_output()?);
    let dtype = cx.dtype(theta);
    let sfx = suffix(dtype)?;
    let (ts, ys) = (cx.shape(theta), cx.shape(y));
    if ys.len() < 3 {
        return Err(format!("output of shape {ys:?}"));
    }
    let r = ys.len() - 2;
    let n = ys[0];
    if !(1..=3).contains(&r) || ts != [n, r, r + 1] || ys[ys.len() - 1] != r || cx.dtype(y) != dtype {
        return Err(format!("theta {ts:?} and output {ys:?} do not fit"));
    }
    let mut lens = [1i64; 3];
    for (d, &l) in ys[1..1 + r].iter().enumerate() {
        lens[d] = l as i64;
    }
    let mut call = FamilyCall::new(SAMPLE, format!("kiln_affine_grid_{sfx}"), FamGrid::Elems(cx.len(y)));
    call.ptrs = vec![bytes(cx, theta), bytes(cx, y)];
    call.ints = vec![n as i64, r as i64, lens[0], lens[1], lens[2], i64::from(align_corners)];
    Ok(vec![Kernel::Family(Box::new(call))])
}

fn roi_align(cx: &mut Cx, r: &RoiAlign) -> Lowered {
    let (x, rois, idx, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
    let dtype = cx.dtype(x);
    let sfx = suffix(dtype)?;
    let (xs, rs) = (cx.shape(x), cx.shape(rois));
    let &[n, c, h, w] = &xs[..] else { return Err(format!("X must be 4-D, got {xs:?}")) };
    let &[nr, 4] = &rs[..] else { return Err(format!("rois must be [num_rois, 4], got {rs:?}")) };
    let (oh, ow) = (r.output_height, r.output_width);
    if (h == 0 || w == 0) && nr * c * oh * ow > 0 {
        return Err(format!("cannot pool from an empty image {xs:?}"));
    }
    let icode = match cx.dtype(idx) {
        DType::I32 => 1,
        DType::I64 => 2,
        d => return Err(format!("batch_indices of dtype {d}")),
    };
    if cx.len(idx) != nr || cx.shape(y) != [nr, c, oh, ow] || cx.dtype(y) != dtype {
        return Err("batch_indices or the output do not fit".into());
    }
    let mut call = FamilyCall::new(SAMPLE, format!("kiln_roi_align_{sfx}"), FamGrid::Elems(cx.len(y)));
    call.ptrs = vec![bytes(cx, x), bytes(cx, rois), bytes(cx, idx), bytes(cx, y)];
    call.ints = vec![
        n as i64,
        c as i64,
        h as i64,
        w as i64,
        nr as i64,
        oh as i64,
        ow as i64,
        r.sampling_ratio as i64,
        i64::from(r.mode == RoiPool::Max),
        i64::from(r.half_pixel),
        float_code(cx.dtype(rois))?,
        icode,
    ];
    call.floats = vec![r.spatial_scale];
    Ok(vec![Kernel::Family(Box::new(call))])
}

/// The bits of `v` as one element of `dtype` (the nearest-mode extrapolation value).
fn element_bits(dtype: DType, v: f32) -> u64 {
    match dtype {
        DType::F32 => u64::from(v.to_bits()),
        DType::F64 => f64::from(v).to_bits(),
        DType::F16 => u64::from(half::f16::from_f32(v).to_bits()),
        DType::BF16 => u64::from(half::bf16::from_f32(v).to_bits()),
        d if d.is_signed() => {
            let bits = v as i64 as u64;
            if d.size() == 8 { bits } else { bits & ((1u64 << (8 * d.size())) - 1) }
        }
        DType::Bool => u64::from(v != 0.0),
        _ => v as u64,
    }
}

/// Resize / Upsample: the plan (output shape, scales, roi) from the constant scales,
/// sizes and roi, then one pass per resized axis (f32 temporaries between passes of the
/// interpolating modes; nearest copies elements of any dtype).
fn resize(cx: &mut Cx, r: &Resize) -> Lowered {
    let (x, y) = (cx.input(0)?, cx.single_output()?);
    let dtype = cx.dtype(x);
    let (xs, ys) = (cx.shape(x), cx.shape(y));
    let (si, zi, ri) = r.input_slots();
    let read = |cx: &Cx, i: Option<usize>, what: &str| -> Result<Option<kiln_ir::Tensor>, String> {
        match i.and_then(|i| cx.opt_input(i).map(|_| i)) {
            None => Ok(None),
            Some(i) => Ok(Some(cx.constant(i).ok_or_else(|| format!("{what} (input {i}) is not a constant"))?.clone())),
        }
    };
    let scales = read(cx, si, "scales")?.map(|t| tensor_f32(&t)).transpose().map_err(|e| e.to_string())?;
    let sizes = read(cx, zi, "sizes")?.map(|t| t.to_i64_vec()).transpose().map_err(|e| e.to_string())?;
    let roi = read(cx, ri, "roi")?.map(|t| t.to_f64_vec()).transpose().map_err(|e| e.to_string())?;
    let (scales, sizes, roi) =
        (scales.filter(|v| !v.is_empty()), sizes.filter(|v| !v.is_empty()), roi.filter(|v| !v.is_empty()));
    let plan = r.plan(&xs, scales.as_deref(), sizes.as_deref(), roi.as_deref()).map_err(|e| e.to_string())?;
    if plan.out_shape != ys || cx.dtype(y) != dtype {
        return Err(format!("the output {ys:?}, the plan gives {:?}", plan.out_shape));
    }
    let nearest = r.mode == Interp::Nearest;
    if !nearest && !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        return Err(format!("dtype {dtype}"));
    }
    if nearest && !super::is_storage(dtype) {
        return Err(format!("dtype {dtype}"));
    }
    // An axis of scale 1 and the same length maps each position to itself, except under
    // tf_half_pixel_for_nn (x = j + 0.5) and tf_crop_and_resize (the roi), which resample
    // it like any other.
    let shifts = matches!(r.coord, CoordMode::TfHalfPixelForNn | CoordMode::TfCropAndResize);
    let axes: Vec<usize> = (0..xs.len()).filter(|&a| xs[a] != ys[a] || plan.scales[a] != 1.0 || shifts).collect();
    for &a in &axes {
        if xs[a] == 0 && ys[a] > 0 {
            return Err(format!("cannot resize an empty axis {a} to {}", ys[a]));
        }
    }
    if cx.len(y) == 0 {
        return Ok(vec![]);
    }
    if axes.is_empty() {
        return Ok(vec![cx.copy_all(x, y)]);
    }
    let coord = match r.coord {
        CoordMode::HalfPixel => 0,
        CoordMode::HalfPixelSymmetric => 1,
        CoordMode::PytorchHalfPixel => 2,
        CoordMode::AlignCorners => 3,
        CoordMode::Asymmetric => 4,
        CoordMode::TfHalfPixelForNn => 5,
        CoordMode::TfCropAndResize => 6,
    };
    let nmode = match r.nearest {
        NearestMode::RoundPreferFloor => 0,
        NearestMode::RoundPreferCeil => 1,
        NearestMode::Floor => 2,
        NearestMode::Ceil => 3,
        NearestMode::Simple => 4,
    };
    let mode = match r.mode {
        Interp::Nearest => 0,
        Interp::Linear => 1,
        Interp::Cubic => 2,
    };
    let storage = match dtype.size() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    };
    let mut kernels = Vec::new();
    let (mut src, mut shape) = (x, xs.clone());
    for (k, &a) in axes.iter().enumerate() {
        let last = k + 1 == axes.len();
        let mut next = shape.clone();
        next[a] = ys[a];
        let tdtype = if nearest { dtype } else { DType::F32 };
        let dst = if last { y } else { cx.temp(tdtype, &next) };
        let (outer, inner): (usize, usize) = (shape[..a].iter().product(), shape[a + 1..].iter().product());
        let n_out = outer * ys[a] * inner;
        let name = if nearest { format!("kiln_resize_nearest_{storage}") } else { "kiln_resize_interp".to_string() };
        let mut call = FamilyCall::new(SAMPLE, name, FamGrid::Elems(n_out));
        let (sd, dd) = (cx.dtype(src), cx.dtype(dst));
        call.ptrs = vec![Some((src, cx.len(src) * sd.size())), Some((dst, n_out * dd.size()))];
        call.ints = vec![
            outer as i64,
            shape[a] as i64,
            ys[a] as i64,
            inner as i64,
            mode,
            coord,
            nmode,
            i64::from(r.exclude_outside),
            i64::from(r.antialias),
            if nearest { 0 } else { float_code(sd)? },
            if nearest { 0 } else { float_code(dd)? },
            element_bits(dtype, r.extrapolation_value) as i64,
            plan.scales[a].to_bits() as i64,
            plan.roi[a].0.to_bits() as i64,
            plan.roi[a].1.to_bits() as i64,
        ];
        call.floats = vec![r.cubic_coeff_a, r.extrapolation_value];
        kernels.push(Kernel::Family(Box::new(call)));
        src = dst;
        shape = next;
    }
    Ok(kernels)
}
