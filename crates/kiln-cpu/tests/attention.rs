//! Attention kernel on small graphs with hand-computed expectations.

use kiln_ir::ops::AttentionOp;
use kiln_ir::ops::attention::{Attention, QkOutputMode};
use kiln_ir::{NetworkDefinition, Op, Shape, Tensor};

fn attn() -> Attention {
    Attention {
        is_causal: false,
        q_num_heads: None,
        kv_num_heads: None,
        qk_output: QkOutputMode::MatMul,
        scale: None,
        softcap: 0.0,
        softmax_precision: None,
    }
}

fn run(a: Attention, ins: Vec<Option<Tensor>>, n_out: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let mut given = Vec::new();
    let mut outlets = Vec::new();
    for (i, t) in ins.into_iter().enumerate() {
        outlets.push(t.map(|t| {
            let o = net.add_input(&format!("i{i}"), t.dtype(), Shape::known(t.shape()));
            given.push(t);
            o
        }));
    }
    let outs = net
        .add_layer_opt("attn", Op::Attention(AttentionOp::Attention(a)), outlets, n_out)
        .map_err(kiln_cpu::CpuError::from)?;
    for (i, o) in outs.into_iter().enumerate() {
        net.mark_output(o, &format!("o{i}")).map_err(kiln_cpu::CpuError::from)?;
    }
    kiln_cpu::run(&net.build(), &given)
}

fn t4(shape: [usize; 4], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn equal_keys_average_values_and_causal_picks_prefix() {
    // One head, 2 queries, 3 identical keys: uniform weights → mean of V rows.
    let q = t4([1, 1, 2, 2], vec![1.0, 2.0, -1.0, 0.5]);
    let k = t4([1, 1, 3, 2], vec![0.3, 0.7, 0.3, 0.7, 0.3, 0.7]);
    let v = t4([1, 1, 3, 2], vec![1.0, 10.0, 2.0, 20.0, 6.0, 60.0]);
    let y = run(attn(), vec![Some(q.clone()), Some(k.clone()), Some(v.clone())], 1).unwrap();
    close(&y[0].to_vec::<f32>().unwrap(), &[3.0, 30.0, 3.0, 30.0]);
    // Causal (upper-left): query 0 sees key 0, query 1 keys 0..=1.
    let y = run(Attention { is_causal: true, ..attn() }, vec![Some(q), Some(k), Some(v)], 1).unwrap();
    close(&y[0].to_vec::<f32>().unwrap(), &[1.0, 10.0, 1.5, 15.0]);
}

#[test]
fn scores_mask_and_present_outputs() {
    let q = t4([1, 1, 1, 2], vec![1.0, 2.0]);
    let k = t4([1, 1, 2, 2], vec![1.0, 0.0, 0.0, 1.0]);
    let v = t4([1, 1, 2, 1], vec![4.0, 8.0]);
    let past_k = t4([1, 1, 1, 2], vec![0.5, 0.5]);
    let past_v = t4([1, 1, 1, 1], vec![100.0]);
    // Bool mask hides the past entry.
    let mask = Tensor::from_bools(vec![1, 3], vec![false, true, true]).unwrap();
    let a = Attention { scale: Some(1.0), qk_output: QkOutputMode::MatMul, ..attn() };
    let out = run(a, vec![Some(q), Some(k), Some(v), Some(mask), Some(past_k), Some(past_v)], 4).unwrap();
    // Scores [1.5, 1, 2] → masked softmax over [1, 2]: weights e/(e+e²)…
    let (e1, e2) = (1f32.exp(), 2f32.exp());
    let want = (4.0 * e1 + 8.0 * e2) / (e1 + e2);
    close(&out[0].to_vec::<f32>().unwrap(), &[want]);
    assert_eq!(out[1].shape(), &[1, 1, 3, 2]);
    close(&out[1].to_vec::<f32>().unwrap(), &[0.5, 0.5, 1.0, 0.0, 0.0, 1.0]);
    close(&out[2].to_vec::<f32>().unwrap(), &[100.0, 4.0, 8.0]);
    close(&out[3].to_vec::<f32>().unwrap(), &[1.5, 1.0, 2.0]);
}

#[test]
fn packed_3d_inputs_with_grouped_heads() {
    // 2 query heads share 1 kv head; head size 1; one key → Y is V for every head.
    let q = Tensor::from_vec(vec![1, 1, 2], vec![1.0f32, -1.0]).unwrap();
    let k = Tensor::from_vec(vec![1, 1, 1], vec![2.0f32]).unwrap();
    let v = Tensor::from_vec(vec![1, 1, 1], vec![7.0f32]).unwrap();
    let a = Attention { q_num_heads: Some(2), kv_num_heads: Some(1), ..attn() };
    let y = run(a, vec![Some(q), Some(k), Some(v)], 1).unwrap();
    assert_eq!(y[0].shape(), &[1, 1, 2]);
    close(&y[0].to_vec::<f32>().unwrap(), &[7.0, 7.0]);
}

#[test]
fn mismatched_shapes_are_errors() {
    let q = t4([1, 3, 2, 4], vec![0.5; 24]);
    let k = t4([1, 2, 2, 4], vec![0.5; 16]);
    let v = t4([1, 2, 2, 4], vec![0.5; 16]);
    assert!(run(attn(), vec![Some(q.clone()), Some(k), Some(v.clone())], 1).is_err());
    let k3 = t4([1, 3, 2, 5], vec![0.5; 30]);
    assert!(run(attn(), vec![Some(q.clone()), Some(k3), Some(v)], 1).is_err());
    let q3 = Tensor::from_vec(vec![1, 2, 4], vec![0.5f32; 8]).unwrap();
    let k3 = Tensor::from_vec(vec![1, 2, 4], vec![0.5f32; 8]).unwrap();
    assert!(run(attn(), vec![Some(q3), Some(k3.clone()), Some(k3)], 1).is_err());
}

mod linear {
    use super::*;
    use kiln_ir::ops::attention::{LinearAttention, UpdateRule};

    fn run_linear(rule: UpdateRule, ins: Vec<Option<Tensor>>) -> kiln_cpu::Result<Vec<Tensor>> {
        let mut net = NetworkDefinition::new("t");
        let mut given = Vec::new();
        let mut outlets = Vec::new();
        for (i, t) in ins.into_iter().enumerate() {
            outlets.push(t.map(|t| {
                let o = net.add_input(&format!("i{i}"), t.dtype(), Shape::known(t.shape()));
                given.push(t);
                o
            }));
        }
        let op = LinearAttention { q_num_heads: 1, kv_num_heads: 1, scale: None, rule };
        let outs = net
            .add_layer_opt("la", Op::Attention(AttentionOp::LinearAttention(op)), outlets, 2)
            .map_err(kiln_cpu::CpuError::from)?;
        net.mark_output(outs[0], "y").map_err(kiln_cpu::CpuError::from)?;
        net.mark_output(outs[1], "state").map_err(kiln_cpu::CpuError::from)?;
        kiln_cpu::run(&net.build(), &given)
    }

    fn t3(v: Vec<f32>) -> Tensor {
        Tensor::from_vec(vec![1, v.len(), 1], v).unwrap()
    }

    #[test]
    fn recurrences_by_hand() {
        // d_k = d_v = 1, q = 1: the output is the state after each step.
        let (q, k, v) = (t3(vec![1.0, 1.0]), t3(vec![1.0, 2.0]), t3(vec![3.0, 4.0]));
        let base = || vec![Some(q.clone()), Some(k.clone()), Some(v.clone())];
        // S = 3, then 3 + 2·4.
        let out = run_linear(UpdateRule::Linear, base()).unwrap();
        close(&out[0].to_vec::<f32>().unwrap(), &[3.0, 11.0]);
        close(&out[1].to_vec::<f32>().unwrap(), &[11.0]);
        // Decay by ½ before step 1: 3·½ + 8.
        let mut ins = base();
        ins.extend([None, Some(t3(vec![0.0, 0.5f32.ln()]))]);
        close(&run_linear(UpdateRule::Gated, ins).unwrap()[0].to_vec::<f32>().unwrap(), &[3.0, 9.5]);
        // Delta, β = 1: step 1 writes 4 − S·k = −2 → S = 3 + 2·(−2).
        let mut ins = base();
        ins.extend([None, None, Some(t3(vec![1.0, 1.0]))]);
        close(&run_linear(UpdateRule::Delta, ins).unwrap()[0].to_vec::<f32>().unwrap(), &[3.0, -1.0]);
    }

    #[test]
    fn rule_and_inputs_must_agree() {
        let (q, k, v) = (t3(vec![1.0]), t3(vec![1.0]), t3(vec![3.0]));
        // gated_delta needs decay and beta.
        assert!(run_linear(UpdateRule::GatedDelta, vec![Some(q.clone()), Some(k.clone()), Some(v.clone())]).is_err());
        let bad_past = Tensor::from_vec(vec![1, 1, 2, 1], vec![0.0f32; 2]).unwrap();
        assert!(run_linear(UpdateRule::Linear, vec![Some(q), Some(k), Some(v), Some(bad_past)]).is_err());
    }
}
