use kiln_ir::Op;
use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "Relu" => ElementwiseOp::Unary(UnaryOp::Relu),
        "Neg" => ElementwiseOp::Unary(UnaryOp::Neg),
        "Exp" => ElementwiseOp::Unary(UnaryOp::Exp),
        "Add" => ElementwiseOp::Binary(BinaryOp::Add),
        "Sub" => ElementwiseOp::Binary(BinaryOp::Sub),
        "Mul" => ElementwiseOp::Binary(BinaryOp::Mul),
        "Div" => ElementwiseOp::Binary(BinaryOp::Div),
        _ => return None,
    };
    Some(Ok(Op::Elementwise(op)))
}
