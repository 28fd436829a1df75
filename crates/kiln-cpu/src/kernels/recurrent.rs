//! RNN, GRU and LSTM over whole sequences, computed in f64 and rounded once to the
//! input's dtype. Time-major internally: X is `[seq, batch, input]`.

use kiln_ir::ops::recurrent::{Activation, Direction, Recurrent};
use kiln_ir::ops::{OpFamily, RecurrentOp};
use kiln_ir::{DType, Tensor};
use ndarray::{Array2, Array3, Array4, ArrayD, Axis, IxDyn, s};

use crate::array::{opt, req};
use crate::{CpuError, EvalContext, Result};

pub fn eval(op: &RecurrentOp, inputs: &[Option<Tensor>], _n_outputs: usize, _ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    let rnn = op.rnn();
    let x = req(inputs, 0, name)?;
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(CpuError::dtype(name, dtype));
    }
    let p = Problem::new(op, inputs, name)?;
    let dirs = rnn.direction.count();
    if rnn.activations.len() < dirs * op.activation_count() {
        return Err(CpuError::invalid(name, format!("expected {} activations", dirs * op.activation_count())));
    }
    let (seq, batch, h) = (p.seq, p.batch, p.hidden);
    let mut y = Array4::<f64>::zeros((seq, dirs, batch, h));
    let mut y_h = Array3::<f64>::zeros((dirs, batch, h));
    let mut y_c = Array3::<f64>::zeros((dirs, batch, h));
    for d in 0..dirs {
        let reverse = rnn.direction == Direction::Reverse || d == 1;
        let acts = &rnn.activations[d * op.activation_count()..(d + 1) * op.activation_count()];
        let (ys, hf, cf) = p.run_direction(op, d, reverse, acts);
        y.slice_mut(s![.., d, .., ..]).assign(&ys);
        y_h.slice_mut(s![d, .., ..]).assign(&hf);
        y_c.slice_mut(s![d, .., ..]).assign(&cf);
    }
    let (y, y_h, y_c) = if rnn.batch_first {
        (
            y.permuted_axes([2, 0, 1, 3]).into_dyn(),
            y_h.permuted_axes([1, 0, 2]).into_dyn(),
            y_c.permuted_axes([1, 0, 2]).into_dyn(),
        )
    } else {
        (y.into_dyn(), y_h.into_dyn(), y_c.into_dyn())
    };
    Ok(vec![to_tensor(dtype, y)?, to_tensor(dtype, y_h)?, to_tensor(dtype, y_c)?])
}

fn shape(e: ndarray::ShapeError) -> CpuError {
    CpuError::invalid("recurrent", e.to_string())
}

fn to_tensor(dtype: DType, a: ArrayD<f64>) -> Result<Tensor> {
    let shape = a.shape().to_vec();
    let v: Vec<f64> = a.iter().copied().collect();
    Ok(match dtype {
        DType::F64 => Tensor::from_vec(shape, v)?,
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(half::f16::from_f64).collect())?,
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(half::bf16::from_f64).collect())?,
        _ => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect())?,
    })
}

/// A float tensor as an f64 array of the expected shape.
fn floats(t: &Tensor, expected: &[usize], what: &str, op: &str) -> Result<ArrayD<f64>> {
    if t.shape() != expected {
        return Err(CpuError::invalid(op, format!("{what} has shape {:?}, expected {expected:?}", t.shape())));
    }
    ArrayD::from_shape_vec(IxDyn(t.shape()), t.to_f64_vec()?).map_err(shape)
}

/// The op's inputs, validated and laid out time-major.
struct Problem {
    seq: usize,
    batch: usize,
    hidden: usize,
    gates: usize,
    /// `[seq, batch, input]`.
    x: Array3<f64>,
    /// `[dirs, gates*hidden, input]`, `[dirs, gates*hidden, hidden]`.
    w: Array3<f64>,
    r: Array3<f64>,
    /// `[dirs, 2*gates*hidden]`: input biases then recurrence biases.
    b: Array2<f64>,
    seq_lens: Vec<usize>,
    /// `[dirs, batch, hidden]`.
    h0: Array3<f64>,
    c0: Array3<f64>,
    /// `[dirs, 3*hidden]`: LSTM peepholes i, o, f.
    p: Array2<f64>,
    clip: Option<f64>,
}

impl Problem {
    fn new(op: &RecurrentOp, inputs: &[Option<Tensor>], name: &str) -> Result<Problem> {
        let rnn: &Recurrent = op.rnn();
        let x = req(inputs, 0, name)?;
        let (w, r) = (req(inputs, 1, name)?, req(inputs, 2, name)?);
        if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
            return Err(CpuError::invalid(name, "X, W and R must have rank 3"));
        }
        let dirs = rnn.direction.count();
        let gates = op.gates();
        let hidden = rnn.hidden_size.unwrap_or(r.shape()[2]);
        let (seq, batch, input) = if rnn.batch_first {
            (x.shape()[1], x.shape()[0], x.shape()[2])
        } else {
            (x.shape()[0], x.shape()[1], x.shape()[2])
        };
        let mut xa = floats(x, x.shape(), "X", name)?.into_dimensionality().map_err(shape)?;
        if rnn.batch_first {
            xa = xa.permuted_axes([1, 0, 2]).as_standard_layout().into_owned();
        }
        let gh = gates * hidden;
        let w = floats(w, &[dirs, gh, input], "W", name)?.into_dimensionality().map_err(shape)?;
        let r = floats(r, &[dirs, gh, hidden], "R", name)?.into_dimensionality().map_err(shape)?;
        let b = match opt(inputs, 3) {
            Some(t) => floats(t, &[dirs, 2 * gh], "B", name)?.into_dimensionality().map_err(shape)?,
            None => Array2::zeros((dirs, 2 * gh)),
        };
        let seq_lens = match opt(inputs, 4) {
            Some(t) => {
                let v = t.to_i64_vec()?;
                if v.len() != batch || v.iter().any(|&l| l < 0 || l as usize > seq) {
                    return Err(CpuError::invalid(name, format!("sequence_lens {v:?} do not fit {batch} x {seq}")));
                }
                v.into_iter().map(|l| l as usize).collect()
            }
            None => vec![seq; batch],
        };
        let state = |i: usize, what: &str| -> Result<Array3<f64>> {
            match opt(inputs, i) {
                None => Ok(Array3::zeros((dirs, batch, hidden))),
                Some(t) => {
                    let expected = if rnn.batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
                    let a: Array3<f64> = floats(t, &expected, what, name)?.into_dimensionality().map_err(shape)?;
                    Ok(if rnn.batch_first { a.permuted_axes([1, 0, 2]).as_standard_layout().into_owned() } else { a })
                }
            }
        };
        let (h0, c0) = (state(5, "initial_h")?, state(6, "initial_c")?);
        let p = match opt(inputs, 7).filter(|_| matches!(op, RecurrentOp::Lstm { .. })) {
            Some(t) => floats(t, &[dirs, 3 * hidden], "P", name)?.into_dimensionality().map_err(shape)?,
            None => Array2::zeros((dirs, 3 * hidden)),
        };
        let clip = rnn.clip.map(f64::from);
        Ok(Problem { seq, batch, hidden, gates, x: xa, w, r, b, seq_lens, h0, c0, p, clip })
    }

    /// Runs one direction; returns Y `[seq, batch, hidden]` and the final h and c.
    fn run_direction(
        &self,
        op: &RecurrentOp,
        d: usize,
        reverse: bool,
        acts: &[Activation],
    ) -> (Array3<f64>, Array2<f64>, Array2<f64>) {
        let (seq, batch, hidden, gh) = (self.seq, self.batch, self.hidden, self.gates * self.hidden);
        let w = self.w.index_axis(Axis(0), d);
        let r = self.r.index_axis(Axis(0), d);
        let bias = self.b.index_axis(Axis(0), d);
        let (wb, rb) = (bias.slice(s![..gh]), bias.slice(s![gh..]));
        let peep = self.p.index_axis(Axis(0), d);
        let mut h = self.h0.index_axis(Axis(0), d).to_owned();
        let mut c = self.c0.index_axis(Axis(0), d).to_owned();
        let mut y = Array3::<f64>::zeros((seq, batch, hidden));
        // X·Wᵀ for every time step and sequence at once: `[seq*batch, gates*hidden]`.
        let x_flat = self.x.view().into_shape_with_order((seq * batch, self.x.shape()[2]));
        let xw_all = match x_flat {
            Ok(xf) => xf.dot(&w.t()),
            Err(_) => Array2::zeros((seq * batch, gh)),
        };
        let clip = |v: f64| self.clip.map_or(v, |c| v.clamp(-c, c));
        let act = |i: usize, v: f64| acts[i].apply(clip(v));
        for step in 0..seq {
            // Each sequence runs over its own length; reverse starts at its last element.
            let times: Vec<Option<usize>> = self
                .seq_lens
                .iter()
                .map(|&len| (step < len).then(|| if reverse { len - 1 - step } else { step }))
                .collect();
            let mut xw = Array2::<f64>::zeros((batch, gh));
            for (bi, t) in times.iter().enumerate() {
                if let Some(t) = t {
                    xw.row_mut(bi).assign(&xw_all.row(t * batch + bi));
                }
            }
            xw += &wb;
            let hr = h.dot(&r.t());
            let g = |bi: usize, gate: usize, j: usize| xw[[bi, gate * hidden + j]];
            let rr = |bi: usize, gate: usize, j: usize| hr[[bi, gate * hidden + j]] + rb[gate * hidden + j];
            let mut h_new = h.clone();
            let mut c_new = c.clone();
            match op {
                RecurrentOp::Rnn(_) => {
                    for bi in 0..batch {
                        for j in 0..hidden {
                            h_new[[bi, j]] = act(0, g(bi, 0, j) + rr(bi, 0, j));
                        }
                    }
                }
                RecurrentOp::Gru { linear_before_reset, .. } => {
                    let rh = r.slice(s![2 * hidden.., ..]);
                    let mut reset = Array2::<f64>::zeros((batch, hidden));
                    for bi in 0..batch {
                        for j in 0..hidden {
                            reset[[bi, j]] = act(0, g(bi, 1, j) + rr(bi, 1, j));
                        }
                    }
                    let gated: Array2<f64> =
                        if *linear_before_reset { Array2::zeros((0, 0)) } else { (&reset * &h).dot(&rh.t()) };
                    for bi in 0..batch {
                        for j in 0..hidden {
                            let z = act(0, g(bi, 0, j) + rr(bi, 0, j));
                            let cand = if *linear_before_reset {
                                g(bi, 2, j) + reset[[bi, j]] * rr(bi, 2, j)
                            } else {
                                g(bi, 2, j) + gated[[bi, j]] + rb[2 * hidden + j]
                            };
                            let cand = act(1, cand);
                            h_new[[bi, j]] = (1.0 - z) * cand + z * h[[bi, j]];
                        }
                    }
                }
                RecurrentOp::Lstm { input_forget, .. } => {
                    let (pi, po, pf) =
                        (peep.slice(s![..hidden]), peep.slice(s![hidden..2 * hidden]), peep.slice(s![2 * hidden..]));
                    for bi in 0..batch {
                        for j in 0..hidden {
                            let cp = c[[bi, j]];
                            let i = act(0, g(bi, 0, j) + rr(bi, 0, j) + pi[j] * cp);
                            let f =
                                if *input_forget { 1.0 - i } else { act(0, g(bi, 2, j) + rr(bi, 2, j) + pf[j] * cp) };
                            let cand = act(1, g(bi, 3, j) + rr(bi, 3, j));
                            let ct = f * cp + i * cand;
                            let o = act(0, g(bi, 1, j) + rr(bi, 1, j) + po[j] * ct);
                            c_new[[bi, j]] = ct;
                            // onnxruntime applies h to the unclipped cell state.
                            h_new[[bi, j]] = o * acts[2].apply(ct);
                        }
                    }
                }
            }
            for (bi, t) in times.iter().enumerate() {
                if let Some(t) = t {
                    h.row_mut(bi).assign(&h_new.row(bi));
                    c.row_mut(bi).assign(&c_new.row(bi));
                    y.slice_mut(s![*t, bi, ..]).assign(&h_new.row(bi));
                }
            }
        }
        // As onnxruntime does: an empty sequence has zero final states, not the initial ones.
        for (bi, _) in self.seq_lens.iter().enumerate().filter(|(_, l)| **l == 0) {
            h.row_mut(bi).fill(0.0);
            c.row_mut(bi).fill(0.0);
        }
        (y, h, c)
    }
}
