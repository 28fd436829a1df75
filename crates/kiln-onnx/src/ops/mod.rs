//! ONNX node → typed [`Op`], one file per op family (mirroring `kiln_ir::ops`).
//! Each family's `convert` returns `None` for op types that are not its own.

mod attention;
mod control;
mod elementwise;
mod movement;
mod nn;
mod quant;
mod recurrent;
mod reduce;
mod vision;

use kiln_ir::Op;

use crate::error::{OnnxError, Result};
use crate::node::NodeCtx;

type Converter = fn(&mut NodeCtx) -> Option<Result<Op>>;

const FAMILIES: [Converter; 9] = [
    elementwise::convert,
    movement::convert,
    reduce::convert,
    nn::convert,
    vision::convert,
    attention::convert,
    quant::convert,
    recurrent::convert,
    control::convert,
];

pub fn convert(ctx: &mut NodeCtx) -> Result<Op> {
    if ctx.proto.domain.is_empty() || ctx.proto.domain == "ai.onnx" {
        for family in FAMILIES {
            if let Some(op) = family(ctx) {
                return op;
            }
        }
    }
    let domain = if ctx.proto.domain.is_empty() { String::new() } else { format!("{}.", ctx.proto.domain) };
    Err(OnnxError::UnsupportedOp {
        node: ctx.name().to_string(),
        op_type: ctx.op_type().to_string(),
        domain,
        opset: ctx.opset,
    })
}
