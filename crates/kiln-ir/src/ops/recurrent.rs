//! Recurrent sequence ops: RNN, GRU and LSTM over a whole sequence.

use super::{OpFamily, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RecurrentOp {
    Rnn(Recurrent),
    Gru { rnn: Recurrent, linear_before_reset: bool },
    Lstm { rnn: Recurrent, input_forget: bool },
}

/// What the three recurrent ops share.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recurrent {
    pub direction: Direction,
    /// From the attribute; otherwise the recurrence weight's last dim.
    pub hidden_size: Option<usize>,
    /// Per direction, the cell's activations in ONNX order (RNN: f; GRU: f, g;
    /// LSTM: f, g, h): forward's, then reverse's for bidirectional.
    pub activations: Vec<Activation>,
    /// Gate pre-activations are clipped to `[-clip, clip]`.
    pub clip: Option<f32>,
    /// `true` for layout 1: batch first in X, Y, initial and final states.
    pub batch_first: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    pub fn count(self) -> usize {
        if self == Direction::Bidirectional { 2 } else { 1 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
}

impl Activation {
    pub fn apply(self, x: f64) -> f64 {
        let (a, b) = match self {
            Activation::Affine { alpha, beta }
            | Activation::ScaledTanh { alpha, beta }
            | Activation::HardSigmoid { alpha, beta } => (alpha as f64, beta as f64),
            Activation::LeakyRelu { alpha } | Activation::ThresholdedRelu { alpha } | Activation::Elu { alpha } => {
                (alpha as f64, 0.0)
            }
            _ => (0.0, 0.0),
        };
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Affine { .. } => a * x + b,
            Activation::LeakyRelu { .. } => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::ThresholdedRelu { .. } => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Activation::ScaledTanh { .. } => a * (b * x).tanh(),
            Activation::HardSigmoid { .. } => (a * x + b).clamp(0.0, 1.0),
            Activation::Elu { .. } => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Softplus => (1.0 + x.exp()).ln(),
        }
    }
}

impl RecurrentOp {
    pub fn rnn(&self) -> &Recurrent {
        match self {
            RecurrentOp::Rnn(r) | RecurrentOp::Gru { rnn: r, .. } | RecurrentOp::Lstm { rnn: r, .. } => r,
        }
    }

    /// Gates per hidden unit (rows of W per direction are `gates * hidden`).
    pub fn gates(&self) -> usize {
        match self {
            RecurrentOp::Rnn(_) => 1,
            RecurrentOp::Gru { .. } => 3,
            RecurrentOp::Lstm { .. } => 4,
        }
    }

    /// Activations per direction.
    pub fn activation_count(&self) -> usize {
        match self {
            RecurrentOp::Rnn(_) => 1,
            RecurrentOp::Gru { .. } => 2,
            RecurrentOp::Lstm { .. } => 3,
        }
    }
}

impl OpFamily for RecurrentOp {
    fn name(&self) -> &'static str {
        match self {
            RecurrentOp::Rnn(_) => "RNN",
            RecurrentOp::Gru { .. } => "GRU",
            RecurrentOp::Lstm { .. } => "LSTM",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let (x, w, r) = (required(inputs, 0, name)?, required(inputs, 1, name)?, required(inputs, 2, name)?);
        let rnn = self.rnn();
        let dtype: Option<DType> = x.dtype;
        let dirs = rnn.direction.count();
        for (f, what) in [(x, "X"), (w, "W"), (r, "R")] {
            if let Some(rank) = f.rank()
                && rank != 3
            {
                return Err(IrError::invalid(name, format!("{what} must have rank 3, got {rank}")));
            }
        }
        if let Some(Dim::Known(d)) = w.shape.as_ref().map(|s| s.0[0].clone())
            && d != dirs
        {
            return Err(IrError::invalid(name, format!("W has {d} directions, the direction attribute {dirs}")));
        }
        let hidden = match rnn.hidden_size {
            Some(h) => Dim::Known(h),
            None => r.shape.as_ref().map_or(Dim::Unknown, |s| s.0[2].clone()),
        };
        let (seq, batch) = match &x.shape {
            Some(s) if rnn.batch_first => (s.0[1].clone(), s.0[0].clone()),
            Some(s) => (s.0[0].clone(), s.0[1].clone()),
            None => (Dim::Unknown, Dim::Unknown),
        };
        let d = Dim::Known(dirs);
        let y = if rnn.batch_first {
            vec![batch.clone(), seq, d.clone(), hidden.clone()]
        } else {
            vec![seq, d.clone(), batch.clone(), hidden.clone()]
        };
        let state = if rnn.batch_first { vec![batch, d, hidden] } else { vec![d, batch, hidden] };
        let fact = |dims: Vec<Dim>| Fact { dtype, shape: Some(Shape(dims)), value: None };
        Ok(vec![fact(y), fact(state.clone()), fact(state)])
    }
}
