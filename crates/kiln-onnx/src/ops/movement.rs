//! Data movement ops and `Constant`. Where ONNX moved an attribute to an input
//! (axes, split, pads, starts/ends), the attribute form is kept for old opsets.

use kiln_ir::ops::MovementOp;
use kiln_ir::ops::movement::{DepthToSpaceMode, PadMode, Reduction, SliceAttrs};
use kiln_ir::{DType, Op, Tensor};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "Constant" => return Some(constant(ctx)),
        "Reshape" => reshape(ctx),
        "Flatten" => ctx.int_or("axis", 1).map(|axis| MovementOp::Flatten { axis }),
        "Squeeze" => ctx.ints("axes").map(|axes| MovementOp::Squeeze { axes }),
        "Unsqueeze" => ctx.ints("axes").map(|axes| MovementOp::Unsqueeze { axes }),
        "Transpose" => ctx.ints("perm").map(|perm| MovementOp::Transpose { perm }),
        "Concat" => ctx.req("axis", ctx.int("axis")).map(|axis| MovementOp::Concat { axis }),
        "Split" => split(ctx),
        "Slice" => slice(ctx),
        "Gather" => ctx.int_or("axis", 0).map(|axis| MovementOp::Gather { axis }),
        "GatherElements" => ctx.int_or("axis", 0).map(|axis| MovementOp::GatherElements { axis }),
        "GatherND" => batch_dims(ctx).map(|batch_dims| MovementOp::GatherND { batch_dims }),
        "ScatterND" => reduction(ctx).map(|reduction| MovementOp::ScatterND { reduction }),
        "ScatterElements" | "Scatter" => scatter_elements(ctx),
        "Expand" => Ok(MovementOp::Expand),
        "Tile" => Ok(MovementOp::Tile),
        "Pad" => pad(ctx),
        "Range" => Ok(MovementOp::Range),
        "Trilu" => ctx.bool_or("upper", true).map(|upper| MovementOp::Trilu { upper }),
        "OneHot" => ctx.int_or("axis", -1).map(|axis| MovementOp::OneHot { axis }),
        "CumSum" => cumulative(ctx).map(|(exclusive, reverse)| MovementOp::CumSum { exclusive, reverse }),
        "CumProd" => cumulative(ctx).map(|(exclusive, reverse)| MovementOp::CumProd { exclusive, reverse }),
        "DepthToSpace" => depth_to_space(ctx),
        "SpaceToDepth" => blocksize(ctx).map(|blocksize| MovementOp::SpaceToDepth { blocksize }),
        "Compress" => ctx.int("axis").map(|axis| MovementOp::Compress { axis }),
        "NonZero" => Ok(MovementOp::NonZero),
        "Shape" => shape(ctx),
        "Size" => Ok(MovementOp::Size),
        "ConstantOfShape" => constant_of_shape(ctx),
        "EyeLike" => eye_like(ctx),
        "ReverseSequence" => reverse_sequence(ctx),
        "TensorScatter" => tensor_scatter(ctx),
        _ => return None,
    };
    Some(op.map(Op::Movement))
}

/// `Constant`: the value from whichever `value*` attribute is set.
fn constant(ctx: &NodeCtx) -> Result<Op> {
    if let Some(t) = ctx.tensor("value")? {
        return Ok(Op::Constant(t));
    }
    let t = if let Some(f) = ctx.float("value_float")? {
        Tensor::scalar(f)
    } else if let Some(v) = ctx.floats("value_floats")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else if let Some(i) = ctx.int("value_int")? {
        Tensor::scalar(i)
    } else if let Some(v) = ctx.ints("value_ints")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else {
        for unsupported in ["value_string", "value_strings", "sparse_value"] {
            if ctx.has_attr(unsupported) {
                return Err(ctx.err(format!("Constant with '{unsupported}' is not supported")));
            }
        }
        return Err(ctx.err("Constant has no value attribute"));
    };
    Ok(Op::Constant(t))
}

fn reshape(ctx: &NodeCtx) -> Result<MovementOp> {
    if ctx.opset < 5 {
        return Err(ctx.err("Reshape with a 'shape' attribute (opset < 5) is not supported"));
    }
    Ok(MovementOp::Reshape { allowzero: ctx.bool_or("allowzero", false)? })
}

fn split(ctx: &NodeCtx) -> Result<MovementOp> {
    let axis = ctx.int_or("axis", 0)?;
    let split = ctx.ints("split")?;
    let num_outputs = ctx.int("num_outputs")?;
    let num_outputs = match num_outputs {
        Some(n) if n < 1 => return Err(ctx.err(format!("num_outputs {n} must be positive"))),
        Some(n) if n as usize != ctx.n_outputs() => {
            return Err(ctx.err(format!("num_outputs {n} but the node has {} outputs", ctx.n_outputs())));
        }
        n => n.map(|n| n as usize),
    };
    Ok(MovementOp::Split { axis, split, num_outputs })
}

fn slice(ctx: &NodeCtx) -> Result<MovementOp> {
    if ctx.opset >= 10 {
        return Ok(MovementOp::Slice { attrs: None });
    }
    let starts = ctx.req("starts", ctx.ints("starts"))?;
    let ends = ctx.req("ends", ctx.ints("ends"))?;
    let axes = ctx.ints("axes")?;
    Ok(MovementOp::Slice { attrs: Some(SliceAttrs { starts, ends, axes }) })
}

fn batch_dims(ctx: &NodeCtx) -> Result<usize> {
    let b = ctx.int_or("batch_dims", 0)?;
    usize::try_from(b).map_err(|_| ctx.err(format!("batch_dims {b} must not be negative")))
}

fn reduction(ctx: &NodeCtx) -> Result<Reduction> {
    Ok(match ctx.string_or("reduction", "none")?.as_str() {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        other => return Err(ctx.err(format!("reduction '{other}' is not supported"))),
    })
}

fn scatter_elements(ctx: &NodeCtx) -> Result<MovementOp> {
    Ok(MovementOp::ScatterElements {
        axis: ctx.int_or("axis", 0)?,
        reduction: reduction(ctx)?,
        legacy: ctx.op_type() == "Scatter",
    })
}

fn pad(ctx: &NodeCtx) -> Result<MovementOp> {
    let mode = match ctx.string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(ctx.err(format!("pad mode '{other}' is not supported"))),
    };
    if ctx.opset >= 11 {
        return Ok(MovementOp::Pad { mode, pads: None, value: 0.0 });
    }
    let pads = ctx.req("pads", ctx.ints("pads"))?;
    Ok(MovementOp::Pad { mode, pads: Some(pads), value: ctx.float_or("value", 0.0)? })
}

/// CumSum's and CumProd's (exclusive, reverse).
fn cumulative(ctx: &NodeCtx) -> Result<(bool, bool)> {
    Ok((ctx.bool_or("exclusive", false)?, ctx.bool_or("reverse", false)?))
}

fn blocksize(ctx: &NodeCtx) -> Result<usize> {
    let b = ctx.req("blocksize", ctx.int("blocksize"))?;
    if b < 1 {
        return Err(ctx.err(format!("blocksize {b} must be positive")));
    }
    Ok(b as usize)
}

fn depth_to_space(ctx: &NodeCtx) -> Result<MovementOp> {
    let mode = match ctx.string_or("mode", "DCR")?.as_str() {
        "DCR" => DepthToSpaceMode::Dcr,
        "CRD" => DepthToSpaceMode::Crd,
        other => return Err(ctx.err(format!("DepthToSpace mode '{other}' is not supported"))),
    };
    Ok(MovementOp::DepthToSpace { blocksize: blocksize(ctx)?, mode })
}

fn shape(ctx: &NodeCtx) -> Result<MovementOp> {
    Ok(MovementOp::Shape { start: ctx.int_or("start", 0)?, end: ctx.int("end")? })
}

fn constant_of_shape(ctx: &NodeCtx) -> Result<MovementOp> {
    let value = match ctx.tensor("value")? {
        Some(t) if t.len() != 1 => return Err(ctx.err("ConstantOfShape value must have exactly one element")),
        Some(t) => t.reshaped(vec![])?,
        None => Tensor::scalar(0.0f32),
    };
    Ok(MovementOp::ConstantOfShape { value })
}

fn eye_like(ctx: &NodeCtx) -> Result<MovementOp> {
    let dtype: Option<DType> = ctx.dtype("dtype")?;
    Ok(MovementOp::EyeLike { dtype, k: ctx.int_or("k", 0)? })
}

fn reverse_sequence(ctx: &NodeCtx) -> Result<MovementOp> {
    let (b, t) = (ctx.int_or("batch_axis", 1)?, ctx.int_or("time_axis", 0)?);
    let ok = |v: i64| (0..=1).contains(&v);
    if !ok(b) || !ok(t) || b == t {
        return Err(ctx.err(format!("batch_axis {b} and time_axis {t} must be 0 and 1")));
    }
    Ok(MovementOp::ReverseSequence { batch_axis: b as usize, time_axis: t as usize })
}

fn tensor_scatter(ctx: &NodeCtx) -> Result<MovementOp> {
    let circular = match ctx.string_or("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        other => return Err(ctx.err(format!("TensorScatter mode '{other}' is not supported"))),
    };
    Ok(MovementOp::TensorScatter { axis: ctx.int_or("axis", -2)?, circular })
}
