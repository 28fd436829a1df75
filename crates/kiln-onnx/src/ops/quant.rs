use kiln_ir::Op;
use kiln_ir::ops::QuantOp;
use kiln_ir::ops::quant::{AutoPad, ConvGeometry, Dequantize, Quantize};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "QuantizeLinear" => quantize(ctx),
        "DequantizeLinear" => dequantize(ctx),
        "DynamicQuantizeLinear" => Ok(QuantOp::DynamicQuantize),
        "MatMulInteger" => Ok(QuantOp::MatMulInteger),
        "QLinearMatMul" => Ok(QuantOp::QLinearMatMul),
        "ConvInteger" => conv_geometry(ctx).map(QuantOp::ConvInteger),
        "QLinearConv" => conv_geometry(ctx).map(QuantOp::QLinearConv),
        _ => return None,
    };
    Some(op.map(Op::Quant))
}

fn block_size(ctx: &NodeCtx) -> Result<usize> {
    let b = ctx.int_or("block_size", 0)?;
    usize::try_from(b).map_err(|_| ctx.err(format!("block_size {b} is negative")))
}

fn quantize(ctx: &NodeCtx) -> Result<QuantOp> {
    // The zero-point-less default target is u8; output_dtype (opset 21) may name another.
    let output_dtype = if ctx.int_or("output_dtype", 0)? == 0 { None } else { ctx.dtype("output_dtype")? };
    let precision = if ctx.int_or("precision", 0)? == 0 { None } else { ctx.dtype("precision")? };
    if let (Some(o), Some(z)) = (output_dtype, ctx.input(2).and_then(|f| f.dtype))
        && o != z
    {
        return Err(ctx.err(format!("output_dtype {o} differs from the zero point's type {z}")));
    }
    Ok(QuantOp::Quantize(Quantize {
        axis: ctx.int_or("axis", 1)?,
        block_size: block_size(ctx)?,
        saturate: ctx.bool_or("saturate", true)?,
        output_dtype,
        precision,
    }))
}

fn dequantize(ctx: &NodeCtx) -> Result<QuantOp> {
    let output_dtype = if ctx.int_or("output_dtype", 0)? == 0 { None } else { ctx.dtype("output_dtype")? };
    Ok(QuantOp::Dequantize(Dequantize { axis: ctx.int_or("axis", 1)?, block_size: block_size(ctx)?, output_dtype }))
}

fn usizes(ctx: &NodeCtx, name: &str) -> Result<Option<Vec<usize>>> {
    ctx.ints(name)?
        .map(|v| {
            v.iter()
                .map(|&x| usize::try_from(x).map_err(|_| ctx.err(format!("{name} has a negative value {x}"))))
                .collect()
        })
        .transpose()
}

pub fn conv_geometry(ctx: &NodeCtx) -> Result<ConvGeometry> {
    let auto_pad = match ctx.string_or("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(ctx.err(format!("auto_pad '{other}' is not supported"))),
    };
    let group = ctx.int_or("group", 1)?;
    Ok(ConvGeometry {
        auto_pad,
        dilations: usizes(ctx, "dilations")?,
        group: usize::try_from(group).ok().filter(|&g| g > 0).ok_or_else(|| ctx.err(format!("group {group}")))?,
        kernel_shape: usizes(ctx, "kernel_shape")?,
        pads: usizes(ctx, "pads")?,
        strides: usizes(ctx, "strides")?,
    })
}
