use kiln_ir::Op;
use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, LogicOp, UnaryOp, VariadicOp};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = if let Some(u) = unary(ctx) { u.map(ElementwiseOp::Unary) } else { other(ctx)? };
    Some(op.map(Op::Elementwise))
}

fn unary(ctx: &NodeCtx) -> Option<Result<UnaryOp>> {
    use UnaryOp::*;
    let f = |name: &str, default: f32| ctx.float_or(name, default);
    let op = match ctx.op_type() {
        "Abs" => Abs,
        "Neg" => Neg,
        "Sign" => Sign,
        "Relu" => Relu,
        "BitwiseNot" => BitwiseNot,
        "Sqrt" => Sqrt,
        "Reciprocal" => Reciprocal,
        "Exp" => Exp,
        "Log" => Log,
        "Floor" => Floor,
        "Ceil" => Ceil,
        "Round" => Round,
        "Erf" => Erf,
        "Sin" => Sin,
        "Cos" => Cos,
        "Tan" => Tan,
        "Asin" => Asin,
        "Acos" => Acos,
        "Atan" => Atan,
        "Sinh" => Sinh,
        "Cosh" => Cosh,
        "Asinh" => Asinh,
        "Acosh" => Acosh,
        "Atanh" => Atanh,
        "Tanh" => Tanh,
        "Sigmoid" => Sigmoid,
        "HardSwish" => HardSwish,
        "Mish" => Mish,
        "Softplus" => Softplus,
        "Softsign" => Softsign,
        "HardSigmoid" => {
            return Some(f("alpha", 0.2).and_then(|alpha| Ok(HardSigmoid { alpha, beta: f("beta", 0.5)? })));
        }
        "LeakyRelu" => return Some(f("alpha", 0.01).map(|alpha| LeakyRelu { alpha })),
        "Elu" => return Some(f("alpha", 1.0).map(|alpha| Elu { alpha })),
        "Celu" => return Some(f("alpha", 1.0).map(|alpha| Celu { alpha })),
        "ThresholdedRelu" => return Some(f("alpha", 1.0).map(|alpha| ThresholdedRelu { alpha })),
        "Swish" => return Some(f("alpha", 1.0).map(|alpha| Swish { alpha })),
        "Selu" => {
            return Some(f("alpha", 1.673_263_2).and_then(|alpha| Ok(Selu { alpha, gamma: f("gamma", 1.050_701)? })));
        }
        "Shrink" => return Some(f("bias", 0.0).and_then(|bias| Ok(Shrink { bias, lambd: f("lambd", 0.5)? }))),
        "Gelu" => {
            return Some(ctx.string_or("approximate", "none").and_then(|a| match a.as_str() {
                "none" => Ok(Gelu { tanh: false }),
                "tanh" => Ok(Gelu { tanh: true }),
                other => Err(ctx.err(format!("unsupported approximate '{other}' (expected none or tanh)"))),
            }));
        }
        _ => return None,
    };
    Some(Ok(op))
}

fn other(ctx: &NodeCtx) -> Option<Result<ElementwiseOp>> {
    use ElementwiseOp as E;
    let op = match ctx.op_type() {
        "Add" => E::Binary(BinaryOp::Add),
        "Sub" => E::Binary(BinaryOp::Sub),
        "Mul" => E::Binary(BinaryOp::Mul),
        "Div" => E::Binary(BinaryOp::Div),
        "Pow" => E::Binary(BinaryOp::Pow),
        "BitwiseAnd" => E::Binary(BinaryOp::BitwiseAnd),
        "BitwiseOr" => E::Binary(BinaryOp::BitwiseOr),
        "BitwiseXor" => E::Binary(BinaryOp::BitwiseXor),
        "PRelu" => E::Binary(BinaryOp::PRelu),
        "Equal" => E::Compare(CompareOp::Equal),
        "Less" => E::Compare(CompareOp::Less),
        "Greater" => E::Compare(CompareOp::Greater),
        "LessOrEqual" => E::Compare(CompareOp::LessOrEqual),
        "GreaterOrEqual" => E::Compare(CompareOp::GreaterOrEqual),
        "And" => E::Logic(LogicOp::And),
        "Or" => E::Logic(LogicOp::Or),
        "Xor" => E::Logic(LogicOp::Xor),
        "Min" => E::Variadic(VariadicOp::Min),
        "Max" => E::Variadic(VariadicOp::Max),
        "Mean" => E::Variadic(VariadicOp::Mean),
        "Sum" => E::Variadic(VariadicOp::Sum),
        "Not" => E::Not,
        "IsNaN" => E::IsNaN,
        "Where" => E::Where,
        "Identity" => E::Identity,
        "Mod" => return Some(ctx.bool_or("fmod", false).map(|fmod| E::Binary(BinaryOp::Mod { fmod }))),
        "BitShift" => return Some(bit_shift(ctx)),
        "IsInf" => {
            return Some((|| {
                Ok(E::IsInf {
                    detect_positive: ctx.bool_or("detect_positive", true)?,
                    detect_negative: ctx.bool_or("detect_negative", true)?,
                })
            })());
        }
        "Clip" => return Some(clip(ctx)),
        "Cast" => return Some(cast(ctx)),
        "CastLike" => return Some(ctx.bool_or("saturate", true).map(|saturate| E::CastLike { saturate })),
        "Dropout" => return Some(dropout(ctx)),
        _ => return None,
    };
    Some(Ok(op))
}

fn bit_shift(ctx: &NodeCtx) -> Result<ElementwiseOp> {
    let dir = ctx.req("direction", ctx.string("direction"))?;
    let left = match dir.as_str() {
        "LEFT" => true,
        "RIGHT" => false,
        other => return Err(ctx.err(format!("unsupported direction '{other}' (expected LEFT or RIGHT)"))),
    };
    Ok(ElementwiseOp::Binary(BinaryOp::BitShift { left }))
}

fn clip(ctx: &NodeCtx) -> Result<ElementwiseOp> {
    // Before opset 11 the bounds are attributes (defaulting to the float range).
    if ctx.opset < 11 {
        Ok(ElementwiseOp::Clip { min: Some(ctx.float_or("min", f32::MIN)?), max: Some(ctx.float_or("max", f32::MAX)?) })
    } else {
        Ok(ElementwiseOp::Clip { min: None, max: None })
    }
}

fn cast(ctx: &NodeCtx) -> Result<ElementwiseOp> {
    let id = ctx.req("to", ctx.int("to"))?;
    // A Tensor error ("not supported") marks an unsupported dtype such as string.
    let to = crate::tensor::dtype_of(id as i32, "Cast 'to'")?;
    let saturate = ctx.bool_or("saturate", true)?;
    Ok(ElementwiseOp::Cast { to, saturate })
}

fn dropout(ctx: &NodeCtx) -> Result<ElementwiseOp> {
    if ctx.opset < 7 && ctx.int_or("is_test", 0)? == 0 {
        return Err(ctx.err("training-mode Dropout (is_test=0) is not supported"));
    }
    // training_mode (input 2) is checked when the kernel runs: with ratio 0 it is still the identity.
    Ok(ElementwiseOp::Dropout { mask_is_bool: ctx.opset >= 10 })
}
