use super::{OpFamily, broadcast_shape, required};
use crate::{Fact, Result};

/// Elementwise ops: one output element from the same position of each (broadcast) input.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementwiseOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Relu,
    Neg,
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl OpFamily for ElementwiseOp {
    fn name(&self) -> &'static str {
        match self {
            ElementwiseOp::Unary(u) => match u {
                UnaryOp::Relu => "Relu",
                UnaryOp::Neg => "Neg",
                UnaryOp::Exp => "Exp",
            },
            ElementwiseOp::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
            },
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        match self {
            ElementwiseOp::Unary(_) => {
                let x = required(inputs, 0, name)?;
                Ok(vec![Fact { value: None, ..x.clone() }])
            }
            ElementwiseOp::Binary(_) => {
                let (a, b) = (required(inputs, 0, name)?, required(inputs, 1, name)?);
                let shape = broadcast_shape(&[a, b], name)?;
                Ok(vec![Fact { dtype: a.dtype.or(b.dtype), shape, value: None }])
            }
        }
    }
}
