//! Spatial sampling ops on kernels of `sample.cu`: GridSample (1 to 3 spatial dims),
//! AffineGrid, RoiAlign.

use kiln_ir::DType;
use kiln_ir::ops::VisionOp;
use kiln_ir::ops::vision::{GridPadding, GridSample, Interp, RoiAlign, RoiPool};

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
