//! RNN, GRU and LSTM: one kernel of `recurrent.cu` runs the whole sequence (one block
//! per direction and batch row, the state in an f32 workspace temporary).

use kiln_ir::DType;
use kiln_ir::ops::RecurrentOp;
use kiln_ir::ops::recurrent::{Activation, Direction};

use super::attention::suffix;
use super::{Cx, Lowered};
use crate::executor::Kernel;
use crate::kernels::RECURRENT;
use crate::launch::family::{FamGrid, FamilyCall};

/// `rnn_act`'s code and (alpha, beta) of an activation.
fn act_code(a: Activation) -> (i64, f32, f32) {
    match a {
        Activation::Relu => (0, 0.0, 0.0),
        Activation::Tanh => (1, 0.0, 0.0),
        Activation::Sigmoid => (2, 0.0, 0.0),
        Activation::Affine { alpha, beta } => (3, alpha, beta),
        Activation::LeakyRelu { alpha } => (4, alpha, 0.0),
        Activation::ThresholdedRelu { alpha } => (5, alpha, 0.0),
        Activation::ScaledTanh { alpha, beta } => (6, alpha, beta),
        Activation::HardSigmoid { alpha, beta } => (7, alpha, beta),
        Activation::Elu { alpha } => (8, alpha, 0.0),
        Activation::Softsign => (9, 0.0, 0.0),
        Activation::Softplus => (10, 0.0, 0.0),
    }
}

pub(crate) fn lower(cx: &mut Cx, op: &RecurrentOp) -> Lowered {
    let rnn = op.rnn();
    let (x, w, r) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let dtype = cx.dtype(x);
    let sfx = suffix(dtype)?;
    let (xs, ws, rs) = (cx.shape(x), cx.shape(w), cx.shape(r));
    if xs.len() != 3 || ws.len() != 3 || rs.len() != 3 {
        return Err("X, W and R must have rank 3".into());
    }
    let dirs = rnn.direction.count();
    let gates = op.gates();
    let count = op.activation_count();
    let hidden = rnn.hidden_size.unwrap_or(rs[2]);
    let (seq, batch, input) = if rnn.batch_first { (xs[1], xs[0], xs[2]) } else { (xs[0], xs[1], xs[2]) };
    let gh = gates * hidden;
    let es = dtype.size();
    let check = |cx: &Cx, i: usize, shape: &[usize], what: &str| -> Result<Option<(usize, usize)>, String> {
        match cx.opt_input(i) {
            None => Ok(None),
            Some(s) => {
                if cx.shape(s) != shape || cx.dtype(s) != dtype {
                    return Err(format!("{what} of shape {:?}, expected {shape:?}", cx.shape(s)));
                }
                Ok(Some((s, shape.iter().product::<usize>() * es)))
            }
        }
    };
    let state = if rnn.batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
    let xp = check(cx, 0, &xs, "X")?;
    let wp = check(cx, 1, &[dirs, gh, input], "W")?;
    let rp = check(cx, 2, &[dirs, gh, hidden], "R")?;
    let bp = check(cx, 3, &[dirs, 2 * gh], "B")?;
    let lens = match cx.opt_input(4) {
        None => None,
        Some(s) => {
            let code = match cx.dtype(s) {
                DType::I32 => 1,
                DType::I64 => 2,
                d => return Err(format!("sequence_lens of dtype {d}")),
            };
            if cx.len(s) != batch {
                return Err("sequence_lens must have one entry per batch row".into());
            }
            Some((s, batch * cx.dtype(s).size(), code))
        }
    };
    let h0 = check(cx, 5, &state, "initial_h")?;
    let c0 = if matches!(op, RecurrentOp::Lstm { .. }) { check(cx, 6, &state, "initial_c")? } else { None };
    let p = if matches!(op, RecurrentOp::Lstm { .. }) { check(cx, 7, &[dirs, 3 * hidden], "P")? } else { None };
    let y_shape = if rnn.batch_first { vec![batch, seq, dirs, hidden] } else { vec![seq, dirs, batch, hidden] };
    let out = |cx: &Cx, i: usize, shape: &[usize]| -> Result<Option<(usize, usize)>, String> {
        match cx.step.outputs.get(i) {
            None => Ok(None),
            Some(&o) => {
                if cx.shape(o) != shape || cx.dtype(o) != dtype {
                    return Err(format!("output {i} of shape {:?}, expected {shape:?}", cx.shape(o)));
                }
                Ok(Some((o, shape.iter().product::<usize>() * es)))
            }
        }
    };
    let y = out(cx, 0, &y_shape)?;
    let yh = out(cx, 1, &state)?;
    let yc = if matches!(op, RecurrentOp::Lstm { .. }) { out(cx, 2, &state)? } else { None };
    if cx.step.outputs.len() > 3 || (cx.step.outputs.len() > 2 && !matches!(op, RecurrentOp::Lstm { .. })) {
        return Err("too many outputs".into());
    }
    if rnn.activations.len() < dirs * count {
        return Err(format!("expected {} activations", dirs * count));
    }
    let work = cx.temp(DType::F32, &[dirs * batch * 5 * hidden.max(1)]);
    let (kind, lbr, input_forget) = match op {
        RecurrentOp::Rnn(_) => (0, false, false),
        RecurrentOp::Gru { linear_before_reset, .. } => (1, *linear_before_reset, false),
        RecurrentOp::Lstm { input_forget, .. } => (2, false, *input_forget),
    };
    let mut call = FamilyCall::new(RECURRENT, format!("kiln_recurrent_{sfx}"), FamGrid::Rows(dirs * batch));
    call.ptrs = vec![
        xp,
        wp,
        rp,
        bp,
        lens.map(|(s, b, _)| (s, b)),
        h0,
        c0,
        p,
        y,
        yh,
        yc,
        Some((work, dirs * batch * 5 * hidden * 4)),
    ];
    let mut ints = vec![
        kind,
        seq as i64,
        batch as i64,
        input as i64,
        hidden as i64,
        dirs as i64,
        i64::from(rnn.direction == Direction::Reverse),
        i64::from(rnn.batch_first),
        i64::from(lbr),
        i64::from(input_forget),
        i64::from(rnn.clip.is_some()),
        lens.map_or(0, |l| l.2),
    ];
    let mut floats = vec![0.0f32; 13];
    floats[0] = rnn.clip.unwrap_or(0.0);
    for (k, &a) in rnn.activations.iter().take(dirs * count).enumerate() {
        let (c, al, be) = act_code(a);
        ints.push(c);
        floats[1 + k] = al;
        floats[7 + k] = be;
    }
    call.ints = ints;
    call.floats = floats;
    if batch * dirs * hidden == 0 {
        return Err("empty state".into());
    }
    Ok(vec![Kernel::Family(Box::new(call))])
}
