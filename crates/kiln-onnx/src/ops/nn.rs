use kiln_ir::Op;
use kiln_ir::ops::NnOp;
use kiln_ir::ops::nn::{AutoPad, Conv, ConvTranspose, Einsum, Gemm, Pool, PoolKind, Window};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "MatMul" => Ok(NnOp::MatMul),
        "Gemm" => gemm(ctx),
        "Einsum" => einsum(ctx),
        "Conv" => conv(ctx),
        "ConvTranspose" => conv_transpose(ctx),
        "MaxPool" => pool(ctx, PoolKind::Max { column_major_indices: false }),
        "AveragePool" => pool(ctx, PoolKind::Average { count_include_pad: false }),
        "LpPool" => pool(ctx, PoolKind::Lp { p: 2.0 }),
        "GlobalMaxPool" => Ok(NnOp::GlobalPool(PoolKind::Max { column_major_indices: false })),
        "GlobalAveragePool" => Ok(NnOp::GlobalPool(PoolKind::Average { count_include_pad: false })),
        "GlobalLpPool" => lp_p(ctx).map(|p| NnOp::GlobalPool(PoolKind::Lp { p })),
        "MaxUnpool" => window(ctx).map(NnOp::MaxUnpool),
        "Col2Im" => window(ctx).map(NnOp::Col2Im),
        _ => return None,
    };
    Some(op.map(Op::Nn))
}

fn gemm(ctx: &NodeCtx) -> Result<NnOp> {
    // Before opset 7 a C of exactly [M, N] was required unless broadcast=1; broadcasting
    // covers both, so every version runs as the opset-7 form.
    Ok(NnOp::Gemm(Gemm {
        alpha: ctx.float_or("alpha", 1.0)?,
        beta: ctx.float_or("beta", 1.0)?,
        trans_a: ctx.bool_or("transA", false)?,
        trans_b: ctx.bool_or("transB", false)?,
    }))
}

fn einsum(ctx: &NodeCtx) -> Result<NnOp> {
    let eq = ctx.req("equation", ctx.string("equation"))?;
    Einsum::parse(&eq).map(NnOp::Einsum).map_err(|e| ctx.err(e.to_string()))
}

/// Non-negative integers from an ints attribute.
fn sizes(ctx: &NodeCtx, name: &str) -> Result<Option<Vec<usize>>> {
    let Some(v) = ctx.ints(name)? else { return Ok(None) };
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| ctx.err(format!("{name} has a negative value {x}"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn window(ctx: &NodeCtx) -> Result<Window> {
    let auto_pad = match ctx.string_or("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(ctx.err(format!("auto_pad '{other}' is not supported"))),
    };
    Ok(Window {
        kernel_shape: sizes(ctx, "kernel_shape")?,
        strides: sizes(ctx, "strides")?,
        dilations: sizes(ctx, "dilations")?,
        pads: sizes(ctx, "pads")?,
        auto_pad,
    })
}

fn group(ctx: &NodeCtx) -> Result<usize> {
    let g = ctx.int_or("group", 1)?;
    usize::try_from(g).ok().filter(|&g| g > 0).ok_or_else(|| ctx.err(format!("group {g} must be positive")))
}

fn conv(ctx: &NodeCtx) -> Result<NnOp> {
    Ok(NnOp::Conv(Conv { window: window(ctx)?, group: group(ctx)? }))
}

fn conv_transpose(ctx: &NodeCtx) -> Result<NnOp> {
    Ok(NnOp::ConvTranspose(ConvTranspose {
        window: window(ctx)?,
        group: group(ctx)?,
        output_padding: sizes(ctx, "output_padding")?,
        output_shape: sizes(ctx, "output_shape")?,
    }))
}

/// LpPool's `p`: a float before opset 2 (GlobalLpPool) / 11 (LpPool), an int after.
fn lp_p(ctx: &NodeCtx) -> Result<f32> {
    let p = match ctx.int("p") {
        Ok(Some(p)) => p as f32,
        Ok(None) => 2.0,
        Err(_) => ctx.float_or("p", 2.0)?,
    };
    if p <= 0.0 {
        return Err(ctx.err(format!("p {p} must be positive")));
    }
    Ok(p)
}

fn pool(ctx: &NodeCtx, kind: PoolKind) -> Result<NnOp> {
    let kind = match kind {
        PoolKind::Max { .. } => {
            let order = ctx.int_or("storage_order", 0)?;
            if !(0..=1).contains(&order) {
                return Err(ctx.err(format!("storage_order {order} is not 0 or 1")));
            }
            PoolKind::Max { column_major_indices: order == 1 }
        }
        PoolKind::Average { .. } => PoolKind::Average { count_include_pad: ctx.bool_or("count_include_pad", false)? },
        PoolKind::Lp { .. } => PoolKind::Lp { p: lp_p(ctx)? },
    };
    let window = window(ctx)?;
    if window.kernel_shape.is_none() {
        return Err(ctx.err("kernel_shape is required"));
    }
    Ok(NnOp::Pool(Pool { kind, window, ceil_mode: ctx.bool_or("ceil_mode", false)? }))
}
