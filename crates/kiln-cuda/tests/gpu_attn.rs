//! Attention, recurrent nets, Einsum and spatial sampling on the CUDA backend: small
//! graphs per op (shapes, attribute variants, FP32 and FP16) run by the CUDA executor
//! against `kiln_cpu::run` on random non-zero inputs. Tolerances (relative L2): FP32
//! 1e-4 (products and reductions inside every op), FP16 1e-2.
//! The host test checks that every graph here plans and lowers without a GPU.

mod support;

use kiln_ir::ops::attention::{Attention, AttentionOp, LinearAttention, QkOutputMode, UpdateRule};
use kiln_ir::ops::nn::{Einsum, NnOp};
use kiln_ir::ops::recurrent::{Activation, Direction, Recurrent};
use kiln_ir::ops::vision::{
    CoordMode, GridPadding, GridSample, Interp, KeepAspect, NearestMode, Resize, ResizeInputs, ResizeKind, RoiAlign,
    RoiPool,
};
use kiln_ir::ops::{Op, RecurrentOp, VisionOp};
use kiln_ir::{DType, NetworkDefinition, Shape, Tensor};
use support::*;

fn attn(a: Attention) -> Op {
    Op::Attention(AttentionOp::Attention(a))
}

fn base() -> Attention {
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

/// 4-D GQA attention with a 2-D float mask and key padding (nonpad_kv_seqlen).
fn attention_4d(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("attention_4d");
    let q = net.add_input("q", dtype, Shape::known(&[2, 4, 3, 8]));
    let k = net.add_input("k", dtype, Shape::known(&[2, 2, 5, 8]));
    let v = net.add_input("v", dtype, Shape::known(&[2, 2, 5, 6]));
    let m = net.add_input("mask", dtype, Shape::known(&[3, 5]));
    let np = net.add_constant("nonpad", Tensor::from_vec(vec![2], vec![3i64, 5]).unwrap());
    let y = net
        .add_layer_opt("attn", attn(base()), vec![Some(q), Some(k), Some(v), Some(m), None, None, Some(np)], 1)
        .unwrap();
    out(&mut net, y[0], "y");
    let y2 = net.add("attn_plain", attn(Attention { softcap: 1.5, ..base() }), &[q, k, v]).unwrap();
    out(&mut net, y2, "y_softcap");
    Case {
        name: if dtype == DType::F16 { "attention_4d_f16" } else { "attention_4d" },
        graph: net.build(),
        inputs: vec![
            (dtype, vec![2, 4, 3, 8]),
            (dtype, vec![2, 2, 5, 8]),
            (dtype, vec![2, 2, 5, 6]),
            (dtype, vec![3, 5]),
        ],
        tol,
    }
}

/// 3-D attention with a KV cache, causal, a 4-D bool mask, and all four outputs (one
/// graph per qk_matmul_output mode).
fn attention_3d_past(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("attention_3d_past");
    let q = net.add_input("q", dtype, Shape::known(&[2, 3, 32]));
    let k = net.add_input("k", dtype, Shape::known(&[2, 3, 16]));
    let v = net.add_input("v", dtype, Shape::known(&[2, 3, 12]));
    let m = net.add_input("mask", DType::Bool, Shape::known(&[2, 1, 3, 7]));
    let pk = net.add_input("past_k", dtype, Shape::known(&[2, 2, 4, 8]));
    let pv = net.add_input("past_v", dtype, Shape::known(&[2, 2, 4, 6]));
    let fm = net.add_input("float_mask", dtype, Shape::known(&[3, 7]));
    for (i, mode) in [QkOutputMode::MatMul, QkOutputMode::Softcap, QkOutputMode::Masked, QkOutputMode::Softmax]
        .into_iter()
        .enumerate()
    {
        let a = Attention {
            // The masked scores are compared: no -inf in them (mode 2).
            is_causal: i != 2,
            q_num_heads: Some(4),
            kv_num_heads: Some(2),
            qk_output: mode,
            scale: Some(0.3),
            softcap: if i == 1 { 2.0 } else { 0.0 },
            ..base()
        };
        let mask = if i == 2 { Some(fm) } else { Some(m) };
        let name = format!("attn{i}");
        let o =
            net.add_layer_opt(&name, attn(a), vec![Some(q), Some(k), Some(v), mask, Some(pk), Some(pv)], 4).unwrap();
        for (j, w) in ["y", "present_k", "present_v", "qk"].iter().enumerate() {
            out(&mut net, o[j], &format!("{w}{i}"));
        }
    }
    Case {
        name: if dtype == DType::F16 { "attention_3d_past_f16" } else { "attention_3d_past" },
        graph: net.build(),
        inputs: vec![
            (dtype, vec![2, 3, 32]),
            (dtype, vec![2, 3, 16]),
            (dtype, vec![2, 3, 12]),
            (DType::Bool, vec![2, 1, 3, 7]),
            (dtype, vec![2, 2, 4, 8]),
            (dtype, vec![2, 2, 4, 6]),
            (dtype, vec![3, 7]),
        ],
        tol,
    }
}

/// LinearAttention: gated delta rule with GQA and a past state; the plain linear rule
/// without one (scale given).
fn linear_attention(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("linear_attention");
    let q = net.add_input("q", dtype, Shape::known(&[2, 3, 16]));
    let k = net.add_input("k", dtype, Shape::known(&[2, 3, 8]));
    let v = net.add_input("v", dtype, Shape::known(&[2, 3, 10]));
    let p = net.add_input("past", dtype, Shape::known(&[2, 2, 4, 5]));
    let d = net.add_input("decay", dtype, Shape::known(&[2, 3, 8]));
    let b = net.add_input("beta", dtype, Shape::known(&[2, 3, 2]));
    let la = |rule, scale| {
        Op::Attention(AttentionOp::LinearAttention(LinearAttention { q_num_heads: 4, kv_num_heads: 2, scale, rule }))
    };
    let o = net
        .add_layer_opt(
            "gd",
            la(UpdateRule::GatedDelta, None),
            vec![Some(q), Some(k), Some(v), Some(p), Some(d), Some(b)],
            2,
        )
        .unwrap();
    out(&mut net, o[0], "y_gd");
    out(&mut net, o[1], "state_gd");
    let o = net.add_layer_opt("lin", la(UpdateRule::Linear, Some(0.7)), vec![Some(q), Some(k), Some(v)], 2).unwrap();
    out(&mut net, o[0], "y_lin");
    out(&mut net, o[1], "state_lin");
    let o = net
        .add_layer_opt("gated", la(UpdateRule::Gated, None), vec![Some(q), Some(k), Some(v), None, Some(d)], 2)
        .unwrap();
    out(&mut net, o[0], "y_gated");
    Case {
        name: if dtype == DType::F16 { "linear_attention_f16" } else { "linear_attention" },
        graph: net.build(),
        inputs: vec![
            (dtype, vec![2, 3, 16]),
            (dtype, vec![2, 3, 8]),
            (dtype, vec![2, 3, 10]),
            (dtype, vec![2, 2, 4, 5]),
            (dtype, vec![2, 3, 8]),
            (dtype, vec![2, 3, 2]),
        ],
        tol,
    }
}

fn rec(
    direction: Direction,
    hidden: usize,
    activations: Vec<Activation>,
    clip: Option<f32>,
    batch_first: bool,
) -> Recurrent {
    Recurrent { direction, hidden_size: Some(hidden), activations, clip, batch_first }
}

/// RNN (bidirectional, sequence_lens, initial state), GRU (both reset variants, batch
/// first, reverse), LSTM (bidirectional, peepholes, clip, initial states).
fn recurrent(dtype: DType, tol: f64) -> Case {
    let (seq, batch, input, h) = (4usize, 3usize, 6usize, 5usize);
    let mut net = NetworkDefinition::new("recurrent");
    let x = net.add_input("x", dtype, Shape::known(&[seq, batch, input]));
    let xb = net.add_input("x_bf", dtype, Shape::known(&[batch, seq, input]));
    let rnd = |net: &mut NetworkDefinition, name: &str, shape: &[usize], seed: u64| {
        net.add_constant(name, tensor(dtype, shape, seed))
    };
    let lens = net.add_constant("lens", Tensor::from_vec(vec![batch], vec![4i32, 2, 0]).unwrap());
    // RNN
    let w = rnd(&mut net, "rnn_w", &[2, h, input], 1);
    let r = rnd(&mut net, "rnn_r", &[2, h, h], 2);
    let b = rnd(&mut net, "rnn_b", &[2, 2 * h], 3);
    let h0 = rnd(&mut net, "rnn_h0", &[2, batch, h], 4);
    let op = RecurrentOp::Rnn(rec(
        Direction::Bidirectional,
        h,
        vec![Activation::Tanh, Activation::LeakyRelu { alpha: 0.2 }],
        None,
        false,
    ));
    let o = net
        .add_layer_opt("rnn", Op::Recurrent(op), vec![Some(x), Some(w), Some(r), Some(b), Some(lens), Some(h0)], 2)
        .unwrap();
    out(&mut net, o[0], "rnn_y");
    out(&mut net, o[1], "rnn_yh");
    // GRU, batch first, forward
    let w = rnd(&mut net, "gru_w", &[1, 3 * h, input], 5);
    let r = rnd(&mut net, "gru_r", &[1, 3 * h, h], 6);
    let b = rnd(&mut net, "gru_b", &[1, 6 * h], 7);
    for (i, lbr) in [false, true].into_iter().enumerate() {
        let dir = if lbr { Direction::Reverse } else { Direction::Forward };
        let op = RecurrentOp::Gru {
            rnn: rec(dir, h, vec![Activation::Sigmoid, Activation::Tanh], None, true),
            linear_before_reset: lbr,
        };
        let o = net.add_layer(&format!("gru{i}"), Op::Recurrent(op), &[xb, w, r, b], 2).unwrap();
        out(&mut net, o[0], &format!("gru{i}_y"));
        out(&mut net, o[1], &format!("gru{i}_yh"));
    }
    // LSTM, bidirectional with peepholes and clip
    let w = rnd(&mut net, "lstm_w", &[2, 4 * h, input], 8);
    let r = rnd(&mut net, "lstm_r", &[2, 4 * h, h], 9);
    let b = rnd(&mut net, "lstm_b", &[2, 8 * h], 10);
    let h0 = rnd(&mut net, "lstm_h0", &[2, batch, h], 11);
    let c0 = rnd(&mut net, "lstm_c0", &[2, batch, h], 12);
    let p = rnd(&mut net, "lstm_p", &[2, 3 * h], 13);
    let acts = vec![Activation::Sigmoid, Activation::Tanh, Activation::Tanh];
    let op = RecurrentOp::Lstm {
        rnn: rec(Direction::Bidirectional, h, [acts.clone(), acts].concat(), Some(2.5), false),
        input_forget: false,
    };
    let o = net
        .add_layer_opt(
            "lstm",
            Op::Recurrent(op),
            vec![Some(x), Some(w), Some(r), Some(b), Some(lens), Some(h0), Some(c0), Some(p)],
            3,
        )
        .unwrap();
    out(&mut net, o[0], "lstm_y");
    out(&mut net, o[1], "lstm_yh");
    out(&mut net, o[2], "lstm_yc");
    Case {
        name: if dtype == DType::F16 { "recurrent_f16" } else { "recurrent" },
        graph: net.build(),
        inputs: vec![(dtype, vec![seq, batch, input]), (dtype, vec![batch, seq, input])],
        tol,
    }
}

fn einsum(eq: &str) -> Op {
    Op::Nn(NnOp::Einsum(Einsum::parse(eq).unwrap()))
}

/// Batched product, diagonal with ellipsis, full contraction, transpose, broadcasting.
fn einsums(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("einsum");
    let a = net.add_input("a", dtype, Shape::known(&[2, 3, 4]));
    let b = net.add_input("b", dtype, Shape::known(&[2, 4, 5]));
    let s = net.add_input("s", dtype, Shape::known(&[3, 4, 4]));
    let o = net.add("bmm", einsum("bij,bjk->bik"), &[a, b]).unwrap();
    out(&mut net, o, "bmm");
    let o = net.add("diag", einsum("...ii->...i"), &[s]).unwrap();
    out(&mut net, o, "diag");
    let o = net.add("inner", einsum("bij,bij"), &[a, a]).unwrap();
    out(&mut net, o, "inner");
    let o = net.add("transpose", einsum("bij->jbi"), &[a]).unwrap();
    out(&mut net, o, "transpose");
    let o = net.add("three", einsum("bij,bjk,sjj->ks"), &[a, b, s]).unwrap();
    out(&mut net, o, "three");
    Case {
        name: match dtype {
            DType::F16 => "einsum_f16",
            DType::F64 => "einsum_f64",
            _ => "einsum",
        },
        graph: net.build(),
        inputs: vec![(dtype, vec![2, 3, 4]), (dtype, vec![2, 4, 5]), (dtype, vec![3, 4, 4])],
        tol,
    }
}

/// GridSample in 2-D (every mode and padding, both alignments) and 3-D; AffineGrid.
fn sampling(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("sampling");
    let x = net.add_input("x", dtype, Shape::known(&[2, 3, 5, 4]));
    // Grid points reach outside [-1, 1].
    let g = net.add_input("grid", dtype, Shape::known(&[2, 3, 6, 2]));
    let two = net.add_constant("two", Tensor::from_vec(vec![], vec![1.6f32]).unwrap());
    let two = if dtype == DType::F32 {
        two
    } else {
        net.add("two_cast", el(kiln_ir::ops::ElementwiseOp::Cast { to: dtype, saturate: true }), &[two]).unwrap()
    };
    let g = net.add("wide", bin(kiln_ir::ops::elementwise::BinaryOp::Mul), &[g, two]).unwrap();
    let mut k = 0;
    for mode in [Interp::Nearest, Interp::Linear, Interp::Cubic] {
        for padding in [GridPadding::Zeros, GridPadding::Border, GridPadding::Reflection] {
            let align_corners = k % 2 == 0;
            let op = Op::Vision(VisionOp::GridSample(GridSample { mode, padding, align_corners }));
            let o = net.add(&format!("gs{k}"), op, &[x, g]).unwrap();
            out(&mut net, o, &format!("gs{k}"));
            k += 1;
        }
    }
    let x3 = net.add_input("x3", dtype, Shape::known(&[1, 2, 3, 4, 5]));
    let g3 = net.add_input("grid3", dtype, Shape::known(&[1, 2, 3, 2, 3]));
    for (i, mode) in [Interp::Nearest, Interp::Linear].into_iter().enumerate() {
        let op =
            Op::Vision(VisionOp::GridSample(GridSample { mode, padding: GridPadding::Border, align_corners: i == 0 }));
        let o = net.add(&format!("gs3d{i}"), op, &[x3, g3]).unwrap();
        out(&mut net, o, &format!("gs3d{i}"));
    }
    let th = net.add_input("theta", dtype, Shape::known(&[2, 2, 3]));
    let size = net.add_constant("size", ints(&[2, 3, 4, 5]));
    for align_corners in [false, true] {
        let op = Op::Vision(VisionOp::AffineGrid { align_corners });
        let o = net.add(&format!("ag{align_corners}"), op, &[th, size]).unwrap();
        out(&mut net, o, &format!("ag{align_corners}"));
    }
    let th3 = net.add_input("theta3", dtype, Shape::known(&[1, 3, 4]));
    let size3 = net.add_constant("size3", ints(&[1, 1, 2, 3, 4]));
    let o = net.add("ag3", Op::Vision(VisionOp::AffineGrid { align_corners: false }), &[th3, size3]).unwrap();
    out(&mut net, o, "ag3");
    Case {
        name: if dtype == DType::F16 { "sampling_f16" } else { "sampling" },
        graph: net.build(),
        inputs: vec![
            (dtype, vec![2, 3, 5, 4]),
            (dtype, vec![2, 3, 6, 2]),
            (dtype, vec![1, 2, 3, 4, 5]),
            (dtype, vec![1, 2, 3, 2, 3]),
            (dtype, vec![2, 2, 3]),
            (dtype, vec![1, 3, 4]),
        ],
        tol,
    }
}

/// RoiAlign, average and max, both coordinate modes, given and adaptive sampling ratios.
fn roi_align(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("roi_align");
    let x = net.add_input("x", dtype, Shape::known(&[2, 3, 10, 9]));
    let rois: Vec<f32> = vec![0.0, 0.0, 9.0, 9.0, 1.5, 2.0, 6.0, 8.5, 3.0, 1.0, 4.0, 3.0, -1.0, 2.0, 12.0, 7.0];
    let rois = if dtype == DType::F16 {
        Tensor::from_vec(vec![4, 4], rois.into_iter().map(half::f16::from_f32).collect::<Vec<_>>()).unwrap()
    } else {
        Tensor::from_vec(vec![4, 4], rois).unwrap()
    };
    let rois = net.add_constant("rois", rois);
    let idx = net.add_constant("idx", ints(&[0, 1, 1, 0]));
    for (i, (mode, half_pixel, sampling_ratio)) in
        [(RoiPool::Avg, true, 2), (RoiPool::Avg, false, 0), (RoiPool::Max, false, 2), (RoiPool::Max, true, 0)]
            .into_iter()
            .enumerate()
    {
        let op = Op::Vision(VisionOp::RoiAlign(RoiAlign {
            mode,
            output_height: 3,
            output_width: 4,
            sampling_ratio,
            spatial_scale: 0.8,
            half_pixel,
        }));
        let o = net.add(&format!("roi{i}"), op, &[x, rois, idx]).unwrap();
        out(&mut net, o, &format!("roi{i}"));
    }
    Case {
        name: if dtype == DType::F16 { "roi_align_f16" } else { "roi_align" },
        graph: net.build(),
        inputs: vec![(dtype, vec![2, 3, 10, 9])],
        tol,
    }
}

fn resize_op(mode: Interp, coord: CoordMode) -> Resize {
    Resize {
        kind: ResizeKind::Resize,
        inputs: ResizeInputs::Full,
        mode,
        coord,
        nearest: NearestMode::RoundPreferFloor,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
        axes: None,
        keep_aspect: KeepAspect::Stretch,
    }
}

/// Resize: nearest (every rounding), linear and cubic under several coordinate modes,
/// up and down, antialias, exclude_outside, sizes with keep_aspect_ratio_policy and axes,
/// tf_crop_and_resize with extrapolation.
fn resize(dtype: DType, tol: f64) -> Case {
    let mut net = NetworkDefinition::new("resize");
    let x = net.add_input("x", dtype, Shape::known(&[2, 3, 6, 5]));
    let f32s = |v: &[f32]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
    let up = net.add_constant("up", f32s(&[1.0, 1.0, 1.7, 2.2]));
    let down = net.add_constant("down", f32s(&[1.0, 1.0, 0.6, 0.45]));
    let sizes = net.add_constant("sizes", ints(&[4, 7]));
    let roi = net.add_constant("roi", f32s(&[0.0, 0.0, 0.2, -0.1, 1.0, 1.0, 0.9, 1.3]));
    let mut variants: Vec<(Resize, Option<_>, Option<_>, Option<_>)> = Vec::new();
    for (i, nearest) in
        [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil]
            .into_iter()
            .enumerate()
    {
        let coord =
            [CoordMode::HalfPixel, CoordMode::Asymmetric, CoordMode::AlignCorners, CoordMode::TfHalfPixelForNn][i];
        let r = Resize { nearest, ..resize_op(Interp::Nearest, coord) };
        variants.push((r, None, Some(if i % 2 == 0 { up } else { down }), None));
    }
    for mode in [Interp::Linear, Interp::Cubic] {
        for (i, coord) in
            [CoordMode::HalfPixel, CoordMode::PytorchHalfPixel, CoordMode::AlignCorners, CoordMode::HalfPixelSymmetric]
                .into_iter()
                .enumerate()
        {
            variants.push((resize_op(mode, coord), None, Some(if i % 2 == 0 { up } else { down }), None));
        }
        variants.push((Resize { antialias: true, ..resize_op(mode, CoordMode::HalfPixel) }, None, Some(down), None));
        variants.push((
            Resize { exclude_outside: true, ..resize_op(mode, CoordMode::HalfPixel) },
            None,
            Some(up),
            None,
        ));
        let r = Resize {
            axes: Some(vec![2, 3]),
            keep_aspect: KeepAspect::NotLarger,
            ..resize_op(mode, CoordMode::HalfPixel)
        };
        variants.push((r, None, None, Some(sizes)));
        let r = Resize { extrapolation_value: 0.5, ..resize_op(mode, CoordMode::TfCropAndResize) };
        variants.push((r, Some(roi), Some(up), None));
    }
    for (i, (r, roi, scales, sizes)) in variants.into_iter().enumerate() {
        let o = net.add_layer_opt(
            &format!("resize{i}"),
            Op::Vision(VisionOp::Resize(r)),
            vec![Some(x), roi, scales, sizes],
            1,
        );
        out(&mut net, o.unwrap()[0], &format!("resize{i}"));
    }
    Case {
        name: if dtype == DType::F16 { "resize_f16" } else { "resize" },
        graph: net.build(),
        inputs: vec![(dtype, vec![2, 3, 6, 5])],
        tol,
    }
}

fn cases() -> Vec<Case> {
    vec![
        attention_4d(DType::F32, 1e-4),
        attention_4d(DType::F16, 1e-2),
        attention_3d_past(DType::F32, 1e-4),
        attention_3d_past(DType::F16, 1e-2),
        linear_attention(DType::F32, 1e-4),
        linear_attention(DType::F16, 1e-2),
        recurrent(DType::F32, 1e-4),
        recurrent(DType::F16, 1e-2),
        einsums(DType::F32, 1e-4),
        einsums(DType::F16, 1e-2),
        einsums(DType::F64, 1e-10),
        sampling(DType::F32, 1e-4),
        sampling(DType::F16, 1e-2),
        roi_align(DType::F32, 1e-4),
        roi_align(DType::F16, 1e-2),
        resize(DType::F32, 1e-5),
        resize(DType::F16, 1e-2),
    ]
}

#[test]
fn attention_recurrent_sampling_plan_and_lower_on_the_host() {
    check_lowers(cases());
}

// One GPU test per op family, so that one failure hides no other.
macro_rules! gpu_test {
    ($name:ident, $($case:expr),+) => {
        #[test]
        #[ignore = "needs a CUDA GPU"]
        fn $name() {
            check_on_gpu(vec![$($case),+]);
        }
    };
}
gpu_test!(gpu_attention_4d, attention_4d(DType::F32, 1e-4), attention_4d(DType::F16, 1e-2));
gpu_test!(gpu_attention_3d_past, attention_3d_past(DType::F32, 1e-4), attention_3d_past(DType::F16, 1e-2));
gpu_test!(gpu_linear_attention, linear_attention(DType::F32, 1e-4), linear_attention(DType::F16, 1e-2));
gpu_test!(gpu_recurrent, recurrent(DType::F32, 1e-4), recurrent(DType::F16, 1e-2));
gpu_test!(gpu_einsum, einsums(DType::F32, 1e-4), einsums(DType::F16, 1e-2), einsums(DType::F64, 1e-10));
gpu_test!(gpu_sampling, sampling(DType::F32, 1e-4), sampling(DType::F16, 1e-2));
gpu_test!(gpu_roi_align, roi_align(DType::F32, 1e-4), roi_align(DType::F16, 1e-2));
gpu_test!(gpu_resize, resize(DType::F32, 1e-5), resize(DType::F16, 1e-2));
