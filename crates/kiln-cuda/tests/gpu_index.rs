//! Indexing, scatter, losses and quantisation on the CUDA backend (`kernels/index.cu`,
//! `loss.cu`, `quant.cu`): small graphs per op, each checked by `check_lowers` on the
//! host and by `check_on_gpu` against `kiln_cpu::run` (FP32 and FP16 where the op takes
//! floats, i32 and i64 indices, negative indices, duplicate indices). Indices, targets,
//! scales and zero points are constants (valid values); data inputs are random.
//! Tolerances: FP32 1e-5 movement, 1e-4 losses; FP16 1e-2; integer outputs exactly.
//! `kernels_compile_where_nvrtc_is_present` compiles the three sources without a GPU.

mod support;

use kiln_cuda::CudaError;
use kiln_cuda::kernels::{INDEX, LOSS, QUANT};
use kiln_cuda::nvrtc::Compiler;
use kiln_ir::ops::Op;
use kiln_ir::ops::movement::{MovementOp, Reduction};
use kiln_ir::ops::quant::{Dequantize, QuantOp, Quantize};
use kiln_ir::ops::reduce::{Loss, LossKind, LossReduction, ReduceOp};
use kiln_ir::{DType, NetworkDefinition, OutletId, Shape, Tensor};
use support::*;

fn idx(dtype: DType, shape: &[usize], v: &[i64]) -> Tensor {
    let s = shape.to_vec();
    match dtype {
        DType::I32 => Tensor::from_vec(s, v.iter().map(|&x| x as i32).collect::<Vec<_>>()).unwrap(),
        _ => Tensor::from_vec(s, v.to_vec()).unwrap(),
    }
}

fn input(net: &mut NetworkDefinition, name: &str, dtype: DType, shape: &[usize]) -> OutletId {
    net.add_input(name, dtype, Shape::known(shape))
}

fn tol(dtype: DType, fp32: f64) -> f64 {
    if dtype == DType::F32 { fp32 } else { 1e-2 }
}

const FLOATS: [DType; 2] = [DType::F32, DType::F16];
const INDICES: [DType; 2] = [DType::I64, DType::I32];

/// GatherElements on axes 0, 1 and -1 (negative indices), GatherND with batch_dims 0
/// and 1, OneHot (constant depth).
fn gathers() -> Vec<Case> {
    let mut cases = Vec::new();
    for (dt, it) in [(DType::F32, DType::I64), (DType::F16, DType::I32), (DType::I64, DType::I32)] {
        let mut net = NetworkDefinition::new("gather");
        let x = input(&mut net, "x", dt, &[3, 4, 5]);
        let v: Vec<i64> = (0..3 * 2 * 5).map(|i| (i * 7 % 7) - 3 + (i % 3)).collect();
        let i1 = net.add_constant("i1", idx(it, &[3, 2, 5], &v));
        let g1 = net.add("ge1", mv(MovementOp::GatherElements { axis: 1 }), &[x, i1]).unwrap();
        out(&mut net, g1, "ge1");
        let v: Vec<i64> = (0..2 * 4 * 3).map(|i| (i * 5 % 8) - 4).collect();
        let i2 = net.add_constant("i2", idx(it, &[2, 4, 3], &v));
        let g2 = net.add("ge2", mv(MovementOp::GatherElements { axis: -1 }), &[x, i2]).unwrap();
        out(&mut net, g2, "ge2");
        let v: Vec<i64> = (0..3 * 4 * 5).map(|i| (i * 11 % 6) - 3).collect();
        let i3 = net.add_constant("i3", idx(it, &[3, 4, 5], &v));
        let g3 = net.add("ge0", mv(MovementOp::GatherElements { axis: 0 }), &[x, i3]).unwrap();
        out(&mut net, g3, "ge0");
        // GatherND: tuples of 2 into [3, 4] (blocks of 5); batch_dims 1: tuples of 1.
        let n1 = net.add_constant("n1", idx(it, &[2, 2, 2], &[0, 1, -1, 3, 2, 0, 1, -4]));
        let g4 = net.add("gnd", mv(MovementOp::GatherND { batch_dims: 0 }), &[x, n1]).unwrap();
        out(&mut net, g4, "gnd");
        let n2 = net.add_constant("n2", idx(it, &[3, 2, 1], &[0, 3, -1, 2, 1, 1]));
        let g5 = net.add("gnd_b1", mv(MovementOp::GatherND { batch_dims: 1 }), &[x, n2]).unwrap();
        out(&mut net, g5, "gnd_b1");
        cases.push(Case {
            name: "gathers",
            graph: net.build(),
            inputs: vec![(dt, vec![3, 4, 5])],
            tol: if dt == DType::F16 { 1e-2 } else { 1e-5 },
        });
    }
    for (a, it) in [(1i64, DType::I64), (-1, DType::I32), (0, DType::F32)] {
        let mut net = NetworkDefinition::new("one_hot");
        let x = input(&mut net, "x", DType::F32, &[2]);
        let ind = match it {
            DType::F32 => {
                net.add_constant("i", Tensor::from_vec(vec![2, 3], vec![0f32, 1., -1., 4., -5., 2.]).unwrap())
            }
            _ => net.add_constant("i", idx(it, &[2, 3], &[0, 1, -1, 4, -5, 2])),
        };
        let depth = net.add_constant("depth", Tensor::from_vec(vec![], vec![5i64]).unwrap());
        let oh = net.add("one_hot", mv(MovementOp::OneHot { axis: a }), &[ind, depth, x]).unwrap();
        out(&mut net, oh, "one_hot");
        cases.push(Case { name: "one_hot", graph: net.build(), inputs: vec![(DType::F32, vec![2])], tol: 1e-5 });
    }
    cases
}

/// ScatterElements with every reduction (duplicate and negative indices), the legacy
/// Scatter, ScatterND with reductions and duplicates, TensorScatter (linear and
/// circular, with and without write indices).
fn scatters() -> Vec<Case> {
    let mut cases = Vec::new();
    let reds = [Reduction::None, Reduction::Add, Reduction::Mul, Reduction::Max, Reduction::Min];
    for dt in [DType::F32, DType::F16, DType::I64] {
        for it in INDICES {
            let mut net = NetworkDefinition::new("scatter");
            let x = input(&mut net, "x", dt, &[4, 5]);
            let u = input(&mut net, "u", dt, &[3, 5]);
            let u2 = input(&mut net, "u2", dt, &[2, 5]);
            // Axis 0: duplicates in every column; axis -1 of a [4, 3] update window.
            let v = [0, 1, -1, 3, 0, 1, 1, -4, 3, 0, 2, 2, 2, 2, -2];
            let i0 = net.add_constant("i0", idx(it, &[3, 5], &v));
            for r in reds {
                if dt == DType::I64 && r == Reduction::Mul {
                    continue;
                }
                let op = MovementOp::ScatterElements { axis: 0, reduction: r, legacy: false };
                let s = net.add(&format!("se_{r:?}"), mv(op), &[x, i0, u]).unwrap();
                out(&mut net, s, &format!("se_{r:?}"));
                let k = net.add_constant(&format!("k_{r:?}"), idx(it, &[2, 1], &[-1, 1]));
                let op = MovementOp::ScatterND { reduction: r };
                // Index tuple duplicates: the same row twice (once through -1).
                let k2 = net.add_constant(&format!("k2_{r:?}"), idx(it, &[3, 1], &[3, 1, -1]));
                let s = net.add(&format!("snd_{r:?}"), mv(op.clone()), &[x, k, u2]).unwrap();
                out(&mut net, s, &format!("snd_{r:?}"));
                let s = net.add(&format!("snd_dup_{r:?}"), mv(op), &[x, k2, u]).unwrap();
                out(&mut net, s, &format!("snd_dup_{r:?}"));
            }
            let i1 = net.add_constant("i1", idx(it, &[2, 5], &[4, 0, -1, 2, 2, 1, 1, 3, -5, 0]));
            let legacy = MovementOp::ScatterElements { axis: 1, reduction: Reduction::None, legacy: true };
            let s = net.add("scatter_legacy", mv(legacy), &[x, i1, u2]).unwrap();
            out(&mut net, s, "scatter_legacy");
            let inputs = vec![(dt, vec![4, 5]), (dt, vec![3, 5]), (dt, vec![2, 5])];
            cases.push(Case { name: "scatters", graph: net.build(), inputs, tol: tol(dt, 1e-5) });
        }
    }
    for dt in FLOATS {
        for circular in [false, true] {
            let mut net = NetworkDefinition::new("tensor_scatter");
            let cache = input(&mut net, "cache", dt, &[2, 3, 6, 4]);
            let upd = input(&mut net, "upd", dt, &[2, 3, 3, 4]);
            let w = if circular { [4i64, 5] } else { [1, 3] };
            let wi = net.add_constant("wi", Tensor::from_vec(vec![2], w.to_vec()).unwrap());
            let s = net.add("ts", mv(MovementOp::TensorScatter { axis: 2, circular }), &[cache, upd, wi]).unwrap();
            out(&mut net, s, "ts");
            let s = net.add("ts0", mv(MovementOp::TensorScatter { axis: -2, circular }), &[cache, upd]).unwrap();
            out(&mut net, s, "ts0");
            let inputs = vec![(dt, vec![2, 3, 6, 4]), (dt, vec![2, 3, 3, 4])];
            cases.push(Case { name: "tensor_scatter", graph: net.build(), inputs, tol: tol(dt, 1e-5) });
        }
    }
    cases
}

/// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss: every reduction, with and
/// without weights, ignore_index (negative too), [N, C] and [N, C, d1, d2].
fn losses() -> Vec<Case> {
    let mut cases = Vec::new();
    let reds = [LossReduction::None, LossReduction::Sum, LossReduction::Mean];
    for dt in FLOATS {
        for it in INDICES {
            for (shape, ignore) in [(vec![3usize, 5], Some(-1i64)), (vec![2, 4, 3, 2], Some(2)), (vec![4, 3], None)] {
                let mut net = NetworkDefinition::new("loss");
                let x = input(&mut net, "x", dt, &shape);
                let wv: Vec<f32> = (0..shape[1]).map(|c| 0.5 + c as f32 * 0.25).collect();
                let w = net.add_constant("w", Tensor::from_vec(vec![shape[1]], wv).unwrap());
                let w = net.add("w_cast", el_cast(dt), &[w]).unwrap();
                let mut ts = vec![shape[0]];
                ts.extend(&shape[2..]);
                let n: usize = ts.iter().product();
                let c = shape[1] as i64;
                let tv: Vec<i64> =
                    (0..n as i64).map(|i| if i % 4 == 1 { ignore.unwrap_or(0) } else { i * 3 % c }).collect();
                let t = net.add_constant("t", idx(it, &ts, &tv));
                for r in reds {
                    for kind in [LossKind::NegativeLogLikelihood, LossKind::SoftmaxCrossEntropy] {
                        for weighted in [false, true] {
                            let l = Loss { kind, reduction: r, ignore_index: ignore };
                            let name = format!("{kind:?}_{r:?}_{weighted}");
                            let ins = if weighted { vec![x, t, w] } else { vec![x, t] };
                            let n_out = if kind == LossKind::SoftmaxCrossEntropy && weighted { 2 } else { 1 };
                            let o = net.add_layer(&name, red(ReduceOp::Loss(l)), &ins, n_out).unwrap();
                            for (k, &o) in o.iter().enumerate() {
                                out(&mut net, o, &format!("{name}_{k}"));
                            }
                        }
                    }
                }
                cases.push(Case { name: "losses", graph: net.build(), inputs: vec![(dt, shape)], tol: tol(dt, 1e-4) });
            }
        }
    }
    cases
}

fn el_cast(to: DType) -> Op {
    el(kiln_ir::ops::ElementwiseOp::Cast { to, saturate: true })
}

/// A QuantizeLinear and the DequantizeLinear back: name, op, inputs, op, inputs after y.
type QuantPair = (&'static str, Op, Vec<OutletId>, Op, Vec<OutletId>);

fn q(axis: i64, block_size: usize, saturate: bool, output_dtype: Option<DType>) -> Op {
    Op::Quant(QuantOp::Quantize(Quantize { axis, block_size, saturate, output_dtype, precision: None }))
}

fn dq(axis: i64, block_size: usize) -> Op {
    Op::Quant(QuantOp::Dequantize(Dequantize { axis, block_size, output_dtype: None }))
}

/// QuantizeLinear to u8, i8, i16, u16 and FP8 (saturating or not; per tensor, per axis,
/// blocked), DequantizeLinear back (FP32 and FP16 scales), DynamicQuantizeLinear,
/// MatMulInteger and QLinearMatMul (u8 and i8, per-column scales and zero points).
fn quant() -> Vec<Case> {
    let mut cases = Vec::new();
    for dt in FLOATS {
        let mut net = NetworkDefinition::new("quant");
        let x = input(&mut net, "x", dt, &[3, 4, 6]);
        let cast = |net: &mut NetworkDefinition, name: &str, t: Tensor| {
            let c = net.add_constant(name, t);
            net.add(&format!("{name}_cast"), el_cast(dt), &[c]).unwrap()
        };
        let s1 = cast(&mut net, "s1", Tensor::from_vec(vec![], vec![0.01f32]).unwrap());
        let s_axis = cast(&mut net, "s_axis", Tensor::from_vec(vec![4], vec![0.01f32, 0.003, 0.02, 0.0005]).unwrap());
        let s_block = cast(
            &mut net,
            "s_block",
            Tensor::from_vec(vec![3, 4, 2], (0..24).map(|i| 0.004 + i as f32 * 0.001).collect()).unwrap(),
        );
        let z_u8 = net.add_constant("z_u8", Tensor::from_vec(vec![], vec![128u8]).unwrap());
        let z_i8 = net.add_constant("z_i8", Tensor::from_vec(vec![4], vec![0i8, -3, 5, 1]).unwrap());
        let z_i16 = net.add_constant("z_i16", Tensor::from_vec(vec![], vec![-1000i16]).unwrap());
        let z_u16 = net.add_constant("z_u16", Tensor::from_vec(vec![], vec![30000u16]).unwrap());
        let z_blk =
            net.add_constant("z_blk", Tensor::from_vec(vec![3, 4, 2], (0..24).map(|i| i as u8 * 3).collect()).unwrap());
        let pairs: Vec<QuantPair> = vec![
            ("u8", q(1, 0, true, None), vec![x, s1, z_u8], dq(1, 0), vec![s1, z_u8]),
            ("i8_axis", q(1, 0, true, None), vec![x, s_axis, z_i8], dq(1, 0), vec![s_axis, z_i8]),
            ("i16", q(1, 0, true, None), vec![x, s1, z_i16], dq(1, 0), vec![s1, z_i16]),
            ("u16", q(1, 0, true, None), vec![x, s1, z_u16], dq(1, 0), vec![s1, z_u16]),
            ("blocked", q(-1, 3, true, None), vec![x, s_block, z_blk], dq(-1, 3), vec![s_block, z_blk]),
            ("no_zero", q(1, 0, true, Some(DType::I8)), vec![x, s_axis], dq(1, 0), vec![s_axis]),
            ("e4m3", q(1, 0, true, Some(DType::F8E4M3FN)), vec![x, s_axis], dq(1, 0), vec![s_axis]),
            // Without saturation an overflow is NaN on both sides, which a relative L2 cannot
            // compare: a scale that keeps every value in range.
            ("e4m3_nosat", q(1, 0, false, Some(DType::F8E4M3FN)), vec![x, s1], dq(1, 0), vec![s1]),
            ("e5m2", q(0, 0, true, Some(DType::F8E5M2)), vec![x, s1], dq(0, 0), vec![s1]),
        ];
        for (name, qop, qin, dqop, dqin) in pairs {
            let y = net.add(&format!("q_{name}"), qop, &qin).unwrap();
            // FP8 outputs have no f64 view to compare: checked through their dequantization.
            if !name.starts_with('e') {
                out(&mut net, y, &format!("q_{name}"));
            }
            let mut ins = vec![y];
            ins.extend(dqin);
            let d = net.add(&format!("dq_{name}"), dqop, &ins).unwrap();
            out(&mut net, d, &format!("dq_{name}"));
        }
        cases.push(Case { name: "quant", graph: net.build(), inputs: vec![(dt, vec![3, 4, 6])], tol: tol(dt, 1e-5) });
    }
    {
        let mut net = NetworkDefinition::new("dynamic_quant");
        let x = input(&mut net, "x", DType::F32, &[5, 7]);
        let o = net.add_layer("dq", Op::Quant(QuantOp::DynamicQuantize), &[x], 3).unwrap();
        for (k, &o) in o.iter().enumerate() {
            out(&mut net, o, &format!("dq_{k}"));
        }
        cases.push(Case {
            name: "dynamic_quant",
            graph: net.build(),
            inputs: vec![(DType::F32, vec![5, 7])],
            tol: 1e-6,
        });
    }
    for (dt, sdt) in
        [(DType::U8, DType::F32), (DType::I8, DType::F16), (DType::U8, DType::F16), (DType::I8, DType::F32)]
    {
        let mut net = NetworkDefinition::new("matmul_integer");
        let a = input(&mut net, "a", dt, &[2, 3, 4]);
        let b = input(&mut net, "b", dt, &[4, 5]);
        let zt = |v: &[i64], shape: &[usize]| -> Tensor {
            if dt == DType::U8 {
                Tensor::from_vec(shape.to_vec(), v.iter().map(|&x| (x + 60) as u8).collect::<Vec<_>>()).unwrap()
            } else {
                Tensor::from_vec(shape.to_vec(), v.iter().map(|&x| x as i8).collect::<Vec<_>>()).unwrap()
            }
        };
        let az = net.add_constant("az", zt(&[3], &[]));
        let bz = net.add_constant("bz", zt(&[1, -2, 0, 5, 7], &[5]));
        let mi = net.add("mmi", Op::Quant(QuantOp::MatMulInteger), &[a, b, az, bz]).unwrap();
        out(&mut net, mi, "mmi");
        let mi2 = net.add("mmi_plain", Op::Quant(QuantOp::MatMulInteger), &[a, b]).unwrap();
        out(&mut net, mi2, "mmi_plain");
        let sc = |net: &mut NetworkDefinition, name: &str, v: Vec<f32>| {
            let n = v.len();
            let shape = if n == 1 { vec![] } else { vec![n] };
            let c = net.add_constant(name, Tensor::from_vec(shape, v).unwrap());
            net.add(&format!("{name}_cast"), el_cast(sdt), &[c]).unwrap()
        };
        let sa = sc(&mut net, "sa", vec![0.05]);
        let sb = sc(&mut net, "sb", vec![0.02, 0.03, 0.01, 0.04, 0.025]);
        let sy = sc(&mut net, "sy", vec![0.5]);
        let yz = net.add_constant("yz", zt(&[-7], &[]));
        let ql = net.add("qlmm", Op::Quant(QuantOp::QLinearMatMul), &[a, sa, az, b, sb, bz, sy, yz]).unwrap();
        out(&mut net, ql, "qlmm");
        let inputs = vec![(dt, vec![2, 3, 4]), (dt, vec![4, 5])];
        cases.push(Case { name: "matmul_integer", graph: net.build(), inputs, tol: 0.0 });
    }
    cases
}

fn all() -> Vec<Case> {
    let mut c = gathers();
    c.extend(scatters());
    c.extend(losses());
    c.extend(quant());
    c
}

#[test]
fn index_loss_quant_graphs_lower() {
    check_lowers(all());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn index_loss_quant_on_gpu() {
    check_on_gpu(all());
}

#[test]
fn kernels_compile_where_nvrtc_is_present() {
    let compiler = match Compiler::new("sm_90") {
        Ok(c) => c,
        Err(e @ (CudaError::LibraryMissing { .. } | CudaError::HeadersMissing { .. })) => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for (src, names) in [
        (INDEX, &["kiln_gather_elements_f16", "kiln_scatter_nd_bf16", "kiln_tensor_scatter_b8", "kiln_one_hot_b4"][..]),
        (LOSS, &["kiln_nll_f32", "kiln_log_softmax_axis1_bf16"][..]),
        (QUANT, &["kiln_quantize", "kiln_dequantize", "kiln_dynamic_quantize_params", "kiln_matmul_integer"][..]),
    ] {
        let compiled = compiler.compile(src.name, src.code).unwrap_or_else(|e| panic!("{e}"));
        for n in names {
            assert!(compiled.ptx.contains(&format!(".entry {n}(")), "no kernel {n}");
        }
    }
}
