use kiln_ir::Op;
use kiln_ir::ops::AttentionOp;
use kiln_ir::ops::attention::{Attention, LinearAttention, QkOutputMode, UpdateRule};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    match ctx.op_type() {
        "Attention" => Some(attention(ctx)),
        "LinearAttention" => Some(linear_attention(ctx)),
        _ => None,
    }
}

fn attention(ctx: &NodeCtx) -> Result<Op> {
    let heads = |name: &str| -> Result<Option<usize>> {
        match ctx.int(name)? {
            Some(n) if n <= 0 => Err(ctx.err(format!("{name} must be positive, got {n}"))),
            n => Ok(n.map(|n| n as usize)),
        }
    };
    let mode = ctx.int_or("qk_matmul_output_mode", 0)?;
    let qk_output =
        QkOutputMode::from_onnx(mode).ok_or_else(|| ctx.err(format!("unsupported qk_matmul_output_mode {mode}")))?;
    Ok(Op::Attention(AttentionOp::Attention(Attention {
        is_causal: ctx.bool_or("is_causal", false)?,
        q_num_heads: heads("q_num_heads")?,
        kv_num_heads: heads("kv_num_heads")?,
        qk_output,
        scale: ctx.float("scale")?,
        softcap: ctx.float_or("softcap", 0.0)?,
        softmax_precision: ctx.dtype("softmax_precision")?,
    })))
}

fn linear_attention(ctx: &NodeCtx) -> Result<Op> {
    let heads = |name: &str| -> Result<usize> {
        let n = ctx.req(name, ctx.int(name))?;
        usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| ctx.err(format!("{name} must be positive, got {n}")))
    };
    let rule = match ctx.string_or("update_rule", "gated_delta")?.as_str() {
        "linear" => UpdateRule::Linear,
        "gated" => UpdateRule::Gated,
        "delta" => UpdateRule::Delta,
        "gated_delta" => UpdateRule::GatedDelta,
        s => return Err(ctx.err(format!("unsupported update_rule '{s}'"))),
    };
    // chunk_size is a tuning hint with no effect on the result.
    let scale = ctx.float("scale")?.filter(|&s| s != 0.0);
    Ok(Op::Attention(AttentionOp::LinearAttention(LinearAttention {
        q_num_heads: heads("q_num_heads")?,
        kv_num_heads: heads("kv_num_heads")?,
        scale,
        rule,
    })))
}
