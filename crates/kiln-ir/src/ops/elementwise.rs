//! Elementwise ops: each output element comes from the same position of the (broadcast)
//! inputs. Grouped by signature: unary maps, binary arithmetic, comparisons and logic
//! (bool outputs), variadic folds, and a few ops with their own rules (Clip, Where, Cast…).

use super::{OpFamily, broadcast_shape, first_dtype, optional, required};
use crate::{DType, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ElementwiseOp {
    /// One input, one output of the same dtype.
    Unary(UnaryOp),
    /// Two inputs, multidirectional broadcast, output of the first input's dtype.
    Binary(BinaryOp),
    /// Two inputs of one dtype, bool output.
    Compare(CompareOp),
    /// Two bool inputs, bool output.
    Logic(LogicOp),
    /// One or more inputs of one dtype, multidirectional broadcast.
    Variadic(VariadicOp),
    /// Bool negation.
    Not,
    IsNaN,
    IsInf {
        detect_positive: bool,
        detect_negative: bool,
    },
    /// `min`/`max` attributes (opset < 11); from opset 11 they are optional inputs 1 and 2.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Where,
    Cast {
        to: DType,
        /// FP8 targets only: clamp out-of-range values to the largest finite value.
        saturate: bool,
    },
    /// Cast to the dtype of input 1.
    CastLike {
        saturate: bool,
    },
    Identity,
    /// Inference-time Dropout: identity, with an optional all-true mask output.
    /// `mask_dtype` is bool from opset 10, the data dtype before.
    Dropout {
        mask_is_bool: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    // numeric (integers too)
    Abs,
    Neg,
    Sign,
    Relu,
    BitwiseNot,
    // float math
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Erf,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Tanh,
    // activations
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    Gelu {
        tanh: bool,
    },
    Mish,
    Softplus,
    Softsign,
    ThresholdedRelu {
        alpha: f32,
    },
    Shrink {
        bias: f32,
        lambd: f32,
    },
    Swish {
        alpha: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero; division by zero is an error.
    Div,
    /// Exponent may have another dtype than the base (opset 12+).
    Pow,
    /// `fmod`: C remainder (sign of the dividend); otherwise Python's (sign of the divisor).
    Mod {
        fmod: bool,
    },
    BitShift {
        left: bool,
    },
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    /// The slope broadcasts unidirectionally to the input.
    PRelu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareOp {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LogicOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VariadicOp {
    Min,
    Max,
    Mean,
    Sum,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Abs => "Abs",
            Neg => "Neg",
            Sign => "Sign",
            Relu => "Relu",
            BitwiseNot => "BitwiseNot",
            Sqrt => "Sqrt",
            Reciprocal => "Reciprocal",
            Exp => "Exp",
            Log => "Log",
            Floor => "Floor",
            Ceil => "Ceil",
            Round => "Round",
            Erf => "Erf",
            Sin => "Sin",
            Cos => "Cos",
            Tan => "Tan",
            Asin => "Asin",
            Acos => "Acos",
            Atan => "Atan",
            Sinh => "Sinh",
            Cosh => "Cosh",
            Asinh => "Asinh",
            Acosh => "Acosh",
            Atanh => "Atanh",
            Tanh => "Tanh",
            Sigmoid => "Sigmoid",
            HardSigmoid { .. } => "HardSigmoid",
            HardSwish => "HardSwish",
            LeakyRelu { .. } => "LeakyRelu",
            Elu { .. } => "Elu",
            Selu { .. } => "Selu",
            Celu { .. } => "Celu",
            Gelu { .. } => "Gelu",
            Mish => "Mish",
            Softplus => "Softplus",
            Softsign => "Softsign",
            ThresholdedRelu { .. } => "ThresholdedRelu",
            Shrink { .. } => "Shrink",
            Swish { .. } => "Swish",
        }
    }
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Pow => "Pow",
            BinaryOp::Mod { .. } => "Mod",
            BinaryOp::BitShift { .. } => "BitShift",
            BinaryOp::BitwiseAnd => "BitwiseAnd",
            BinaryOp::BitwiseOr => "BitwiseOr",
            BinaryOp::BitwiseXor => "BitwiseXor",
            BinaryOp::PRelu => "PRelu",
        }
    }

    /// Integer (or float) arithmetic that shape computations use; folded at import.
    fn folds(self) -> bool {
        matches!(self, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod { .. })
    }
}

impl CompareOp {
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Equal => "Equal",
            CompareOp::Less => "Less",
            CompareOp::Greater => "Greater",
            CompareOp::LessOrEqual => "LessOrEqual",
            CompareOp::GreaterOrEqual => "GreaterOrEqual",
        }
    }
}

impl LogicOp {
    pub fn name(self) -> &'static str {
        match self {
            LogicOp::And => "And",
            LogicOp::Or => "Or",
            LogicOp::Xor => "Xor",
        }
    }
}

impl VariadicOp {
    pub fn name(self) -> &'static str {
        match self {
            VariadicOp::Min => "Min",
            VariadicOp::Max => "Max",
            VariadicOp::Mean => "Mean",
            VariadicOp::Sum => "Sum",
        }
    }
}

impl OpFamily for ElementwiseOp {
    fn name(&self) -> &'static str {
        match self {
            ElementwiseOp::Unary(u) => u.name(),
            ElementwiseOp::Binary(b) => b.name(),
            ElementwiseOp::Compare(c) => c.name(),
            ElementwiseOp::Logic(l) => l.name(),
            ElementwiseOp::Variadic(v) => v.name(),
            ElementwiseOp::Not => "Not",
            ElementwiseOp::IsNaN => "IsNaN",
            ElementwiseOp::IsInf { .. } => "IsInf",
            ElementwiseOp::Clip { .. } => "Clip",
            ElementwiseOp::Where => "Where",
            ElementwiseOp::Cast { .. } => "Cast",
            ElementwiseOp::CastLike { .. } => "CastLike",
            ElementwiseOp::Identity => "Identity",
            ElementwiseOp::Dropout { .. } => "Dropout",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let req = |i| required(inputs, i, name);
        let same = |x: &Fact, dtype: Option<DType>| Fact { dtype, shape: x.shape.clone(), value: None };
        Ok(match self {
            ElementwiseOp::Unary(_) => vec![same(req(0)?, req(0)?.dtype)],
            ElementwiseOp::Binary(BinaryOp::PRelu) => {
                let (x, slope) = (req(0)?, req(1)?);
                if let (Some(xs), Some(_)) = (&x.shape, &slope.shape) {
                    let b = broadcast_shape(&[x, slope], name)?.unwrap_or_default();
                    if b.rank() != xs.rank() || b.0.iter().zip(&xs.0).any(|(a, c)| a != c && c.known().is_some()) {
                        return Err(IrError::invalid(name, format!("slope does not broadcast to input shape {xs}")));
                    }
                }
                vec![same(x, x.dtype)]
            }
            ElementwiseOp::Binary(b) => {
                let (x, y) = (req(0)?, req(1)?);
                let shape = broadcast_shape(&[x, y], name)?;
                let value = if b.folds() { fold_int_binary(*b, x, y) } else { None };
                vec![Fact { dtype: x.dtype.or(y.dtype), shape, value }]
            }
            ElementwiseOp::Compare(_) | ElementwiseOp::Logic(_) => {
                let (x, y) = (req(0)?, req(1)?);
                vec![Fact { dtype: Some(DType::Bool), shape: broadcast_shape(&[x, y], name)?, value: None }]
            }
            ElementwiseOp::Variadic(_) => {
                let facts: Vec<&Fact> = inputs.iter().copied().flatten().collect();
                if facts.is_empty() {
                    return Err(IrError::invalid(name, "needs at least one input"));
                }
                vec![Fact { dtype: first_dtype(&facts), shape: broadcast_shape(&facts, name)?, value: None }]
            }
            ElementwiseOp::Not | ElementwiseOp::IsNaN | ElementwiseOp::IsInf { .. } => {
                vec![same(req(0)?, Some(DType::Bool))]
            }
            ElementwiseOp::Clip { .. } => {
                for i in [1, 2] {
                    if let Some(r) = optional(inputs, i).and_then(Fact::rank)
                        && r != 0
                        && optional(inputs, i).and_then(|f| f.shape.as_ref()) != Some(&Shape::known(&[1]))
                    {
                        return Err(IrError::invalid(name, format!("input {i} (min/max) must be a scalar")));
                    }
                }
                vec![same(req(0)?, req(0)?.dtype)]
            }
            ElementwiseOp::Where => {
                let (c, x, y) = (req(0)?, req(1)?, req(2)?);
                vec![Fact { dtype: x.dtype.or(y.dtype), shape: broadcast_shape(&[c, x, y], name)?, value: None }]
            }
            ElementwiseOp::Cast { to, .. } => {
                let x = req(0)?;
                let value = x.value.as_ref().and_then(|v| fold_int_cast(v, *to));
                vec![Fact { value, ..same(x, Some(*to)) }]
            }
            ElementwiseOp::CastLike { .. } => vec![same(req(0)?, req(1)?.dtype)],
            ElementwiseOp::Identity => vec![req(0)?.clone()],
            ElementwiseOp::Dropout { mask_is_bool } => {
                let x = req(0)?;
                let mut out = vec![same(x, x.dtype)];
                if n_outputs > 1 {
                    out.push(same(x, if *mask_is_bool { Some(DType::Bool) } else { x.dtype }));
                }
                out
            }
        })
    }
}

/// Folds i64 shape arithmetic (`Shape → Div → …`) so that later shape inference resolves.
fn fold_int_binary(op: BinaryOp, x: &Fact, y: &Fact) -> Option<crate::Tensor> {
    let (a, b) = (x.value.as_ref()?, y.value.as_ref()?);
    if a.dtype() != DType::I64 || b.dtype() != DType::I64 || a.len() > 64 || b.len() > 64 {
        return None;
    }
    let shape = Shape::broadcast(&[&Shape::known(a.shape()), &Shape::known(b.shape())])?.as_known()?;
    let (av, bv) = (a.to_vec::<i64>().ok()?, b.to_vec::<i64>().ok()?);
    let at = |v: &[i64], dims: &[usize], flat: usize| -> i64 {
        // Index of `flat` (in the broadcast shape) into a tensor of `dims`.
        let (mut idx, mut stride, mut rem) = (0usize, 1usize, flat);
        let offset = shape.len() - dims.len();
        for k in (0..shape.len()).rev() {
            let coord = rem % shape[k];
            rem /= shape[k];
            if k >= offset {
                let d = dims[k - offset];
                idx += if d == 1 { 0 } else { coord * stride };
                stride *= d;
            }
        }
        v[idx]
    };
    let n: usize = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let (p, q) = (at(&av, a.shape(), i), at(&bv, b.shape(), i));
            match op {
                BinaryOp::Add => Some(p.wrapping_add(q)),
                BinaryOp::Sub => Some(p.wrapping_sub(q)),
                BinaryOp::Mul => Some(p.wrapping_mul(q)),
                BinaryOp::Div => p.checked_div(q),
                BinaryOp::Mod { fmod: true } => p.checked_rem(q),
                BinaryOp::Mod { fmod: false } => {
                    p.checked_rem(q).map(|r| if r != 0 && (r < 0) != (q < 0) { r + q } else { r })
                }
                _ => None,
            }
        })
        .collect::<Option<Vec<i64>>>()?;
    crate::Tensor::from_vec(shape, out).ok()
}

/// Folds a cast of a small integer constant to another integer type (shape tensors).
fn fold_int_cast(v: &crate::Tensor, to: DType) -> Option<crate::Tensor> {
    if v.len() > 64 || !v.dtype().is_integer() {
        return None;
    }
    let vals = v.to_i64_vec().ok()?;
    let shape = v.shape().to_vec();
    match to {
        DType::I64 => crate::Tensor::from_vec(shape, vals).ok(),
        DType::I32 => crate::Tensor::from_vec(shape, vals.into_iter().map(|x| x as i32).collect()).ok(),
        _ => None,
    }
}
