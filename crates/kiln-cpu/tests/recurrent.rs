//! RNN, GRU and LSTM on small cases computed by hand from the ONNX equations.

use kiln_ir::ops::RecurrentOp;
use kiln_ir::ops::recurrent::{Activation, Direction, Recurrent};
use kiln_ir::{NetworkDefinition, Op, Tensor};

fn rnn(direction: Direction, activations: Vec<Activation>) -> Recurrent {
    Recurrent { direction, hidden_size: Some(1), activations, clip: None, batch_first: false }
}

fn run_layer(op: Op, inputs: Vec<Option<Tensor>>, n_outputs: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let ids: Vec<_> =
        inputs.into_iter().enumerate().map(|(i, t)| t.map(|t| net.add_constant(&format!("c{i}"), t))).collect();
    let outs = net.add_layer_opt("op", op, ids, n_outputs)?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("y{i}"))?;
    }
    kiln_cpu::run(&net.build(), &[])
}

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn close(a: &[f32], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn rnn_two_steps_with_bias() {
    let op = Op::Recurrent(RecurrentOp::Rnn(rnn(Direction::Forward, vec![Activation::Tanh])));
    let x = t(&[2, 1, 1], vec![1.0, 2.0]);
    let (w, r, b) = (t(&[1, 1, 1], vec![0.5]), t(&[1, 1, 1], vec![0.25]), t(&[1, 2], vec![0.1, 0.2]));
    let y = run_layer(op, vec![Some(x), Some(w), Some(r), Some(b)], 2).unwrap();
    let h1 = 0.8f64.tanh();
    let h2 = (1.3 + 0.25 * h1).tanh();
    assert_eq!(y[0].shape(), &[2, 1, 1, 1]);
    close(&y[0].to_vec::<f32>().unwrap(), &[h1, h2]);
    close(&y[1].to_vec::<f32>().unwrap(), &[h2]);
}

#[test]
fn rnn_sequence_lens_zero_pads_and_keeps_last_state() {
    let op = Op::Recurrent(RecurrentOp::Rnn(rnn(Direction::Bidirectional, vec![Activation::Tanh; 2])));
    let x = t(&[2, 2, 1], vec![1.0, 3.0, 2.0, 4.0]);
    let (w, r) = (t(&[2, 1, 1], vec![0.5, 0.5]), t(&[2, 1, 1], vec![0.25, 0.25]));
    let lens = Tensor::from_vec(vec![2], vec![2i32, 1]).unwrap();
    let y = run_layer(op, vec![Some(x), Some(w), Some(r), None, Some(lens)], 2).unwrap();
    let yv = y[0].to_vec::<f32>().unwrap();
    // Y is [seq, dir, batch, 1]; batch 1 only has step 0, in both directions.
    let b1 = 1.5f64.tanh();
    assert_eq!(yv[4 + 1], 0.0);
    assert_eq!(yv[6 + 1], 0.0);
    close(&[yv[1], yv[3]], &[b1, b1]);
    // Reverse direction of batch 0 runs t=1 then t=0.
    let r1 = 1.0f64.tanh();
    let r0 = (0.5 + 0.25 * r1).tanh();
    close(&[yv[2], yv[6]], &[r0, r1]);
    let yh = y[1].to_vec::<f32>().unwrap();
    close(&[yh[1], yh[2], yh[3]], &[b1, r0, b1]);
}

#[test]
fn lstm_one_step_with_peepholes_and_initial_state() {
    let acts = vec![Activation::Sigmoid, Activation::Tanh, Activation::Tanh];
    let op = Op::Recurrent(RecurrentOp::Lstm { rnn: rnn(Direction::Forward, acts), input_forget: false });
    let x = t(&[1, 1, 1], vec![1.0]);
    let w = t(&[1, 4, 1], vec![0.1, 0.2, 0.3, 0.4]);
    let r = t(&[1, 4, 1], vec![0.0; 4]);
    let (h0, c0) = (t(&[1, 1, 1], vec![0.0]), t(&[1, 1, 1], vec![0.5]));
    let p = t(&[1, 3], vec![0.1, 0.2, 0.3]);
    let y = run_layer(op, vec![Some(x), Some(w), Some(r), None, None, Some(h0), Some(c0), Some(p)], 3).unwrap();
    let i = sigmoid(0.1 + 0.1 * 0.5);
    let f = sigmoid(0.3 + 0.3 * 0.5);
    let c = f * 0.5 + i * 0.4f64.tanh();
    let o = sigmoid(0.2 + 0.2 * c);
    let h = o * c.tanh();
    close(&y[1].to_vec::<f32>().unwrap(), &[h]);
    close(&y[2].to_vec::<f32>().unwrap(), &[c]);
}

#[test]
fn gru_linear_before_reset_changes_the_candidate() {
    for lbr in [false, true] {
        let acts = vec![Activation::Sigmoid, Activation::Tanh];
        let op = Op::Recurrent(RecurrentOp::Gru { rnn: rnn(Direction::Forward, acts), linear_before_reset: lbr });
        let x = t(&[1, 1, 1], vec![1.0]);
        let w = t(&[1, 3, 1], vec![0.5, -0.5, 1.0]);
        let r = t(&[1, 3, 1], vec![0.3, 0.2, 0.1]);
        let b = t(&[1, 6], vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.05]);
        let h0 = t(&[1, 1, 1], vec![0.4]);
        let y = run_layer(op, vec![Some(x), Some(w), Some(r), Some(b), None, Some(h0)], 2).unwrap();
        let z = sigmoid(0.5 + 0.3 * 0.4);
        let rg = sigmoid(-0.5 + 0.2 * 0.4);
        let cand = if lbr { (1.0 + rg * (0.1 * 0.4 + 0.05)).tanh() } else { (1.0 + 0.1 * rg * 0.4 + 0.05).tanh() };
        close(&y[1].to_vec::<f32>().unwrap(), &[(1.0 - z) * cand + z * 0.4]);
    }
}

#[test]
fn wrong_weight_shape_is_an_error() {
    let op = Op::Recurrent(RecurrentOp::Rnn(rnn(Direction::Forward, vec![Activation::Tanh])));
    let x = t(&[2, 1, 3], vec![1.0; 6]);
    let (w, r) = (t(&[1, 1, 2], vec![0.5; 2]), t(&[1, 1, 1], vec![0.25]));
    assert!(run_layer(op.clone(), vec![Some(x.clone()), Some(w), Some(r.clone())], 1).is_err());
    let bad_rank = t(&[1, 3], vec![0.5; 3]);
    assert!(run_layer(op, vec![Some(x), Some(bad_rank), Some(r)], 1).is_err());
}
