//! Image kernels: resampling, RoiAlign, NonMaxSuppression, CenterCropPad.

mod crop;
mod grid;
mod nms;
mod num;
mod resize;
mod roi_align;

use kiln_ir::Tensor;
use kiln_ir::ops::VisionOp;

use crate::{EvalContext, Result};

pub fn eval(op: &VisionOp, inputs: &[Option<Tensor>], _n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let out = match op {
        VisionOp::Resize(r) => resize::resize(r, inputs)?,
        VisionOp::GridSample(g) => grid::grid_sample(g, inputs)?,
        VisionOp::AffineGrid { align_corners } => grid::affine_grid(*align_corners, inputs)?,
        VisionOp::RoiAlign(r) => roi_align::roi_align(r, inputs)?,
        VisionOp::NonMaxSuppression { center_point_box } => nms::nms(*center_point_box, inputs)?,
        VisionOp::CenterCropPad { axes } => crop::center_crop_pad(axes.as_deref(), inputs)?,
    };
    Ok(vec![out])
}
