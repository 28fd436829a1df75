use kiln_ir::Op;
use kiln_ir::ops::AttentionOp;
use kiln_ir::ops::attention::{Attention, QkOutputMode};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    match ctx.op_type() {
        "Attention" => Some(attention(ctx)),
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
