use kiln_ir::Op;
use kiln_ir::ops::VisionOp;
use kiln_ir::ops::vision::{
    CoordMode, GridPadding, GridSample, Interp, KeepAspect, NearestMode, Resize, ResizeInputs, ResizeKind, RoiAlign,
    RoiPool,
};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "Resize" => resize(ctx),
        "Upsample" => upsample(ctx),
        "GridSample" => grid_sample(ctx),
        "AffineGrid" => ctx.bool_or("align_corners", false).map(|align_corners| VisionOp::AffineGrid { align_corners }),
        "RoiAlign" => roi_align(ctx),
        "NonMaxSuppression" => ctx
            .bool_or("center_point_box", false)
            .map(|center_point_box| VisionOp::NonMaxSuppression { center_point_box }),
        "CenterCropPad" => ctx.ints("axes").map(|axes| VisionOp::CenterCropPad { axes }),
        _ => return None,
    };
    Some(op.map(Op::Vision))
}

fn interp(ctx: &NodeCtx, s: &str) -> Result<Interp> {
    Ok(match s {
        "nearest" => Interp::Nearest,
        "linear" | "bilinear" => Interp::Linear,
        "cubic" | "bicubic" => Interp::Cubic,
        _ => return Err(ctx.err(format!("unsupported mode '{s}'"))),
    })
}

fn resize(ctx: &NodeCtx) -> Result<VisionOp> {
    let mode = interp(ctx, &ctx.string_or("mode", "nearest")?)?;
    if ctx.opset < 11 {
        // Resize-10: X and scales; asymmetric coordinates, ORT's "simple" nearest rounding.
        return Ok(VisionOp::Resize(legacy(ResizeKind::Resize, ResizeInputs::Scales, mode)));
    }
    let coord = match ctx.string_or("coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => CoordMode::HalfPixel,
        "half_pixel_symmetric" if ctx.opset >= 19 => CoordMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        "tf_half_pixel_for_nn" if ctx.opset < 18 => CoordMode::TfHalfPixelForNn,
        "tf_crop_and_resize" => CoordMode::TfCropAndResize,
        s => return Err(ctx.err(format!("unsupported coordinate_transformation_mode '{s}'"))),
    };
    let nearest = match ctx.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        s => return Err(ctx.err(format!("unsupported nearest_mode '{s}'"))),
    };
    let keep_aspect = match ctx.string_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => KeepAspect::Stretch,
        "not_larger" => KeepAspect::NotLarger,
        "not_smaller" => KeepAspect::NotSmaller,
        s => return Err(ctx.err(format!("unsupported keep_aspect_ratio_policy '{s}'"))),
    };
    let antialias = ctx.bool_or("antialias", false)?;
    if antialias && mode == Interp::Nearest {
        return Err(ctx.err("antialias is not defined for nearest mode"));
    }
    Ok(VisionOp::Resize(Resize {
        kind: ResizeKind::Resize,
        inputs: ResizeInputs::Full,
        mode,
        coord,
        nearest,
        cubic_coeff_a: ctx.float_or("cubic_coeff_a", -0.75)?,
        exclude_outside: ctx.bool_or("exclude_outside", false)?,
        extrapolation_value: ctx.float_or("extrapolation_value", 0.0)?,
        antialias,
        axes: ctx.ints("axes")?,
        keep_aspect,
    }))
}

fn legacy(kind: ResizeKind, inputs: ResizeInputs, mode: Interp) -> Resize {
    Resize {
        kind,
        inputs,
        mode,
        coord: CoordMode::Asymmetric,
        nearest: NearestMode::Simple,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes: None,
        keep_aspect: KeepAspect::Stretch,
    }
}

fn upsample(ctx: &NodeCtx) -> Result<VisionOp> {
    let mode = interp(ctx, &ctx.string_or("mode", "nearest")?)?;
    if mode == Interp::Cubic {
        return Err(ctx.err("Upsample supports nearest and linear modes only"));
    }
    let inputs = if ctx.opset < 9 {
        ResizeInputs::ScalesAttr(ctx.req("scales", ctx.floats("scales"))?)
    } else {
        ResizeInputs::Scales
    };
    Ok(VisionOp::Resize(legacy(ResizeKind::Upsample, inputs, mode)))
}

fn grid_sample(ctx: &NodeCtx) -> Result<VisionOp> {
    let default = if ctx.opset >= 20 { "linear" } else { "bilinear" };
    let mode = interp(ctx, &ctx.string_or("mode", default)?)?;
    let padding = match ctx.string_or("padding_mode", "zeros")?.as_str() {
        "zeros" => GridPadding::Zeros,
        "border" => GridPadding::Border,
        "reflection" => GridPadding::Reflection,
        s => return Err(ctx.err(format!("unsupported padding_mode '{s}'"))),
    };
    Ok(VisionOp::GridSample(GridSample { mode, padding, align_corners: ctx.bool_or("align_corners", false)? }))
}

fn roi_align(ctx: &NodeCtx) -> Result<VisionOp> {
    let mode = match ctx.string_or("mode", "avg")?.as_str() {
        "avg" => RoiPool::Avg,
        "max" => RoiPool::Max,
        s => return Err(ctx.err(format!("unsupported mode '{s}'"))),
    };
    let default_ctm = if ctx.opset >= 16 { "half_pixel" } else { "output_half_pixel" };
    let half_pixel = match ctx.string_or("coordinate_transformation_mode", default_ctm)?.as_str() {
        "half_pixel" => true,
        "output_half_pixel" => false,
        s => return Err(ctx.err(format!("unsupported coordinate_transformation_mode '{s}'"))),
    };
    let non_neg = |name: &str, default: i64| -> Result<usize> {
        let v = ctx.int_or(name, default)?;
        usize::try_from(v).map_err(|_| ctx.err(format!("{name} must be non-negative, got {v}")))
    };
    Ok(VisionOp::RoiAlign(RoiAlign {
        mode,
        output_height: non_neg("output_height", 1)?,
        output_width: non_neg("output_width", 1)?,
        sampling_ratio: non_neg("sampling_ratio", 0)?,
        spatial_scale: ctx.float_or("spatial_scale", 1.0)?,
        half_pixel,
    }))
}
