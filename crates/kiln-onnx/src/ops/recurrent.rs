use kiln_ir::Op;
use kiln_ir::ops::RecurrentOp;
use kiln_ir::ops::recurrent::{Activation, Direction, Recurrent};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "RNN" => common(ctx, 1, &["Tanh"]).map(RecurrentOp::Rnn),
        "GRU" => common(ctx, 2, &["Sigmoid", "Tanh"]).and_then(|rnn| {
            Ok(RecurrentOp::Gru { rnn, linear_before_reset: ctx.bool_or("linear_before_reset", false)? })
        }),
        "LSTM" => common(ctx, 3, &["Sigmoid", "Tanh", "Tanh"])
            .and_then(|rnn| Ok(RecurrentOp::Lstm { rnn, input_forget: ctx.bool_or("input_forget", false)? })),
        _ => return None,
    };
    Some(op.map(Op::Recurrent))
}

fn common(ctx: &NodeCtx, per_direction: usize, defaults: &[&str]) -> Result<Recurrent> {
    let direction = match ctx.string_or("direction", "forward")?.as_str() {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => return Err(ctx.err(format!("direction '{other}' is not supported"))),
    };
    let names: Vec<String> = match ctx.strings("activations")? {
        Some(v) => v,
        None => defaults.iter().cycle().take(per_direction * direction.count()).map(|s| s.to_string()).collect(),
    };
    // A single direction's list may be given once for both directions.
    let names = if names.len() == per_direction && direction == Direction::Bidirectional {
        names.iter().cycle().take(2 * per_direction).cloned().collect()
    } else {
        names
    };
    if names.len() != per_direction * direction.count() {
        return Err(ctx.err(format!(
            "expected {} activations, got {}",
            per_direction * direction.count(),
            names.len()
        )));
    }
    let mut alphas = ctx.floats("activation_alpha")?.unwrap_or_default().into_iter();
    let mut betas = ctx.floats("activation_beta")?.unwrap_or_default().into_iter();
    let activations = names.iter().map(|n| activation(ctx, n, &mut alphas, &mut betas)).collect::<Result<Vec<_>>>()?;
    let hidden_size = match ctx.int("hidden_size")? {
        Some(h) => Some(usize::try_from(h).map_err(|_| ctx.err(format!("hidden_size {h} is negative")))?),
        None => None,
    };
    let layout = ctx.int_or("layout", 0)?;
    if !(0..=1).contains(&layout) {
        return Err(ctx.err(format!("layout {layout} is not supported")));
    }
    let clip = ctx.float("clip")?;
    Ok(Recurrent { direction, hidden_size, activations, clip, batch_first: layout == 1 })
}

/// An activation by name, taking its alpha/beta from the lists in order (the
/// documented defaults when the lists run out).
fn activation(
    ctx: &NodeCtx,
    name: &str,
    alphas: &mut impl Iterator<Item = f32>,
    betas: &mut impl Iterator<Item = f32>,
) -> Result<Activation> {
    let mut alpha = |d: f32| alphas.next().unwrap_or(d);
    Ok(match name.to_ascii_lowercase().as_str() {
        "relu" => Activation::Relu,
        "tanh" => Activation::Tanh,
        "sigmoid" => Activation::Sigmoid,
        "softsign" => Activation::Softsign,
        "softplus" => Activation::Softplus,
        "affine" => Activation::Affine { alpha: alpha(1.0), beta: betas.next().unwrap_or(0.0) },
        "leakyrelu" => Activation::LeakyRelu { alpha: alpha(0.01) },
        "thresholdedrelu" => Activation::ThresholdedRelu { alpha: alpha(1.0) },
        "scaledtanh" => Activation::ScaledTanh { alpha: alpha(1.0), beta: betas.next().unwrap_or(1.0) },
        "hardsigmoid" => Activation::HardSigmoid { alpha: alpha(0.2), beta: betas.next().unwrap_or(0.5) },
        "elu" => Activation::Elu { alpha: alpha(1.0) },
        other => return Err(ctx.err(format!("activation '{other}' is not supported"))),
    })
}
