//! nn family: MatMul, Gemm, Einsum, Conv, ConvTranspose, pools, MaxUnpool, Col2Im.
//! Hand-computed small cases, and naive direct references (convolution, transposed
//! convolution, matrix product) compared on random non-zero inputs.

use half::f16;
use kiln_ir::ops::NnOp;
use kiln_ir::ops::nn::{AutoPad, Conv, ConvTranspose, Einsum, Gemm, Pool, PoolKind, Window};
use kiln_ir::{DType, Element, NetworkDefinition, Op, Shape, Tensor};

/// Runs one op on `inputs` (all graph inputs); returns its `n_out` outputs.
fn run_op(op: NnOp, inputs: &[Tensor], n_out: usize) -> kiln_cpu::Result<Vec<Tensor>> {
    let mut net = NetworkDefinition::new("t");
    let ins: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| net.add_input(&format!("x{i}"), t.dtype(), Shape::known(t.shape())))
        .collect();
    let outs = net.add_layer("op", Op::Nn(op), &ins, n_out)?;
    for (i, o) in outs.iter().enumerate() {
        net.mark_output(*o, &format!("y{i}"))?;
    }
    kiln_cpu::run(&net.build(), inputs)
}

fn run1(op: NnOp, inputs: &[Tensor]) -> Tensor {
    run_op(op, inputs, 1).expect("op runs").remove(0)
}

fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Deterministic non-zero pseudo-random values in [-1, 1].
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
            if v.abs() < 1e-3 { 0.5 } else { v as f32 }
        })
        .collect()
}

fn assert_close(got: &Tensor, want: &[f32], shape: &[usize]) {
    assert_eq!(got.shape(), shape);
    let g = got.to_f64_vec().unwrap();
    assert_eq!(g.len(), want.len());
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        let b = *b as f64;
        assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "element {i}: got {a}, want {b}");
    }
}

fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i];
        flat /= dims[i];
    }
    idx
}

fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (i, d)| acc * d + i)
}

// ---------------------------------------------------------------- MatMul, Gemm

#[test]
fn matmul_2d_hand_computed() {
    let a = t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3, 2], vec![7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_close(&run1(NnOp::MatMul, &[a, b]), &[58.0, 64.0, 139.0, 154.0], &[2, 2]);
}

#[test]
fn matmul_1d_operands() {
    let v = t(&[3], vec![1.0f32, 2.0, 3.0]);
    let m = t(&[3, 2], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_close(&run1(NnOp::MatMul, &[v.clone(), m.clone()]), &[22.0, 28.0], &[2]);
    let mt = t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_close(&run1(NnOp::MatMul, &[mt, v.clone()]), &[14.0, 32.0], &[2]);
    assert_close(&run1(NnOp::MatMul, &[v.clone(), v]), &[14.0], &[]);
}

/// Naive broadcast batched product as the reference.
fn naive_matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let rank = ra.max(rb);
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    let batch: Vec<usize> = (0..rank - 2).map(|i| dim(sa, i).max(dim(sb, i))).collect();
    let nb: usize = batch.iter().product();
    let mut out = Vec::new();
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        let off = |s: &[usize]| {
            let own: Vec<usize> = (0..rank - 2).map(|i| dim(s, i)).collect();
            let pos: Vec<usize> = idx.iter().zip(&own).map(|(i, d)| if *d == 1 { 0 } else { *i }).collect();
            ravel(&pos, &own)
        };
        let (oa, ob) = (off(sa) * m * k, off(sb) * k * n);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|p| a[oa + i * k + p] * b[ob + p * n + j]).sum());
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (out, shape)
}

#[test]
fn matmul_broadcast_batches_match_naive() {
    for (sa, sb) in [
        (vec![2, 1, 3, 4], vec![3, 4, 5]),
        (vec![4, 3, 4], vec![4, 2]),
        (vec![3, 4], vec![2, 4, 6]),
        (vec![1, 2, 5, 3], vec![2, 1, 3, 2]),
    ] {
        let a = random(sa.iter().product(), 1);
        let b = random(sb.iter().product(), 2);
        let (want, shape) = naive_matmul(&a, &sa, &b, &sb);
        let got = run1(NnOp::MatMul, &[t(&sa, a), t(&sb, b)]);
        assert_close(&got, &want, &shape);
    }
}

#[test]
fn matmul_integer_and_half() {
    let a = t(&[2, 2], vec![1i32, -2, 3, 4]);
    let b = t(&[2, 2], vec![5i32, 6, 7, 8]);
    let got = run1(NnOp::MatMul, &[a, b]);
    assert_eq!(got.to_vec::<i32>().unwrap(), vec![-9, -10, 43, 50]);
    let h = |v: &[f32]| t(&[2, 2], v.iter().map(|&x| f16::from_f32(x)).collect());
    let got = run1(NnOp::MatMul, &[h(&[0.5, 1.5, 2.0, -1.0]), h(&[1.0, 2.0, 3.0, 4.0])]);
    assert_eq!(got.dtype(), DType::F16);
    assert_close(&got, &[5.0, 7.0, -1.0, 0.0], &[2, 2]);
}

#[test]
fn matmul_shape_errors() {
    let a = t(&[2, 3], vec![1.0f32; 6]);
    let b = t(&[2, 3], vec![1.0f32; 6]);
    assert!(run_op(NnOp::MatMul, &[a, b], 1).is_err());
    let a = t(&[2, 2, 3], vec![1.0f32; 12]);
    let b = t(&[3, 3, 1], vec![1.0f32; 9]);
    assert!(run_op(NnOp::MatMul, &[a, b], 1).is_err());
}

#[test]
fn gemm_attributes_and_bias() {
    // A^T is [[1,2],[3,4],[5,6]] (3x2); B^T is [[1,0,2],[0,1,1]]^T... computed by hand below.
    let a = t(&[2, 3], vec![1.0f32, 3.0, 5.0, 2.0, 4.0, 6.0]); // transA -> [[1,2],[3,4],[5,6]]
    let b = t(&[3, 2], vec![1.0f32, 0.0, 2.0, 1.0, 0.0, 1.0]); // transB -> [[1,2,0],[0,1,1]]
    let c = t(&[3], vec![1.0f32, 2.0, 3.0]);
    let g = Gemm { alpha: 2.0, beta: 0.5, trans_a: true, trans_b: true };
    // A'·B' = [[1,4,2],[3,10,4],[5,16,6]]; 2·that + 0.5·[1,2,3]
    let want = [2.5, 9.0, 5.5, 6.5, 21.0, 9.5, 10.5, 33.0, 13.5];
    assert_close(&run1(NnOp::Gemm(g), &[a.clone(), b.clone(), c]), &want, &[3, 3]);
    let plain = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
    let a2 = t(&[1, 2], vec![1.0f32, 2.0]);
    let b2 = t(&[2, 2], vec![3.0f32, 4.0, 5.0, 6.0]);
    assert_close(&run1(NnOp::Gemm(plain), &[a2.clone(), b2.clone()]), &[13.0, 16.0], &[1, 2]);
    let bad_c = t(&[3], vec![1.0f32; 3]);
    assert!(run_op(NnOp::Gemm(plain), &[a2, b2, bad_c], 1).is_err());
}

// ---------------------------------------------------------------- Einsum

fn einsum(eq: &str) -> NnOp {
    NnOp::Einsum(Einsum::parse(eq).unwrap())
}

#[test]
fn einsum_matmul_trace_diagonal_sum() {
    let a = t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3, 2], vec![7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_close(&run1(einsum("ij,jk->ik"), &[a.clone(), b.clone()]), &[58.0, 64.0, 139.0, 154.0], &[2, 2]);
    // Implicit output: letters appearing once, sorted ("ik").
    assert_close(&run1(einsum("ij,jk"), &[a.clone(), b]), &[58.0, 64.0, 139.0, 154.0], &[2, 2]);
    assert_close(&run1(einsum("ij->ji"), std::slice::from_ref(&a)), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], &[3, 2]);
    assert_close(&run1(einsum("ij->"), std::slice::from_ref(&a)), &[21.0], &[]);
    assert_close(&run1(einsum("ij->j"), &[a]), &[5.0, 7.0, 9.0], &[3]);
    let sq = t(&[3, 3], (1..=9).map(|v| v as f32).collect());
    assert_close(&run1(einsum("ii->i"), std::slice::from_ref(&sq)), &[1.0, 5.0, 9.0], &[3]);
    assert_close(&run1(einsum("ii"), &[sq]), &[15.0], &[]);
}

#[test]
fn einsum_batched_ellipsis_and_three_operands() {
    let (sa, sb) = ([2, 3, 4], [2, 4, 5]);
    let a = random(24, 3);
    let b = random(40, 4);
    let (want, shape) = naive_matmul(&a, &sa, &b, &sb);
    let got = run1(einsum("...ij,...jk->...ik"), &[t(&sa, a.clone()), t(&sb, b.clone())]);
    assert_close(&got, &want, &shape);
    let got = run1(einsum("bij,bjk->bik"), &[t(&sa, a), t(&sb, b)]);
    assert_close(&got, &want, &shape);
    // x·y·z as a chain, against two plain products.
    let x = t(&[2, 3], vec![1.0f32, 0.0, 2.0, -1.0, 3.0, 1.0]);
    let y = t(&[3, 2], vec![2.0f32, 1.0, 0.0, 1.0, 1.0, 4.0]);
    let z = t(&[2], vec![1.0f32, -2.0]);
    // x·y = [[4,9],[-1,6]]; ·z = [-14, -13]
    assert_close(&run1(einsum("ij,jk,k->i"), &[x, y, z]), &[-14.0, -13.0], &[2]);
}

#[test]
fn einsum_bad_equations() {
    assert!(Einsum::parse("ij,jk->iz").is_err());
    assert!(Einsum::parse("i.j").is_err());
    let a = t(&[2, 3], vec![1.0f32; 6]);
    assert!(run_op(einsum("ijk->i"), &[a], 1).is_err());
}

// ---------------------------------------------------------------- Conv

struct ConvCase {
    x: Vec<usize>,
    w: Vec<usize>,
    group: usize,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    bias: bool,
}

/// Direct convolution, straight from the definition.
fn naive_conv(c: &ConvCase, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (Vec<f32>, Vec<usize>) {
    let d = c.x.len() - 2;
    let (n, ch, m) = (c.x[0], c.x[1], c.w[0]);
    let cin = ch / c.group;
    let cout = m / c.group;
    let out_sp: Vec<usize> = (0..d)
        .map(|i| (c.x[2 + i] + c.pads[i] + c.pads[d + i] - c.dilations[i] * (c.w[2 + i] - 1) - 1) / c.strides[i] + 1)
        .collect();
    let ksz: usize = c.w[2..].iter().product();
    let osz: usize = out_sp.iter().product();
    let mut out = vec![0f32; n * m * osz];
    for bn in 0..n {
        for oc in 0..m {
            let grp = oc / cout;
            for o in 0..osz {
                let opos = unravel(o, &out_sp);
                let mut s = b.map_or(0.0, |b| b[oc]);
                for ic in 0..cin {
                    for kk in 0..ksz {
                        let kpos = unravel(kk, &c.w[2..]);
                        let mut ipos = Vec::new();
                        let mut inside = true;
                        for i in 0..d {
                            let p = (opos[i] * c.strides[i] + kpos[i] * c.dilations[i]) as i64 - c.pads[i] as i64;
                            inside &= p >= 0 && (p as usize) < c.x[2 + i];
                            ipos.push(p.max(0) as usize);
                        }
                        if inside {
                            let xi = (bn * ch + grp * cin + ic) * c.x[2..].iter().product::<usize>()
                                + ravel(&ipos, &c.x[2..]);
                            s += x[xi] * w[(oc * cin + ic) * ksz + kk];
                        }
                    }
                }
                out[(bn * m + oc) * osz + o] = s;
            }
        }
    }
    let mut shape = vec![n, m];
    shape.extend(out_sp);
    (out, shape)
}

fn window(strides: &[usize], dilations: &[usize], pads: &[usize]) -> Window {
    Window {
        kernel_shape: None,
        strides: Some(strides.to_vec()),
        dilations: Some(dilations.to_vec()),
        pads: Some(pads.to_vec()),
        auto_pad: AutoPad::NotSet,
    }
}

fn check_conv(c: ConvCase, seed: u64) {
    let x = random(c.x.iter().product(), seed);
    let w = random(c.w.iter().product(), seed + 1);
    let b = random(c.w[0], seed + 2);
    let (want, shape) = naive_conv(&c, &x, &w, c.bias.then_some(&b[..]));
    let op = NnOp::Conv(Conv { window: window(&c.strides, &c.dilations, &c.pads), group: c.group });
    let mut inputs = vec![t(&c.x, x), t(&c.w, w)];
    if c.bias {
        inputs.push(t(&[c.w[0]], b));
    }
    assert_close(&run1(op, &inputs), &want, &shape);
}

#[test]
fn conv_2d_matches_direct_reference() {
    let cases = [
        // plain 3x3, bias
        ConvCase {
            x: vec![2, 3, 7, 6],
            w: vec![4, 3, 3, 3],
            group: 1,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            bias: true,
        },
        // strides, asymmetric pads, dilations
        ConvCase {
            x: vec![1, 2, 9, 8],
            w: vec![3, 2, 3, 2],
            group: 1,
            strides: vec![2, 3],
            dilations: vec![2, 1],
            pads: vec![0, 2, 1, 0],
            bias: false,
        },
        // groups
        ConvCase {
            x: vec![2, 4, 6, 6],
            w: vec![6, 2, 3, 3],
            group: 2,
            strides: vec![1, 2],
            dilations: vec![1, 1],
            pads: vec![1, 0, 1, 2],
            bias: true,
        },
        // depthwise with a channel multiplier, strided and dilated
        ConvCase {
            x: vec![1, 3, 8, 7],
            w: vec![6, 1, 3, 3],
            group: 3,
            strides: vec![2, 1],
            dilations: vec![1, 2],
            pads: vec![1, 2, 0, 1],
            bias: true,
        },
        // pointwise 1x1
        ConvCase {
            x: vec![2, 5, 4, 3],
            w: vec![3, 5, 1, 1],
            group: 1,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            bias: true,
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check_conv(c, 10 + i as u64 * 7);
    }
}

#[test]
fn conv_1d_and_3d_match_direct_reference() {
    check_conv(
        ConvCase {
            x: vec![2, 3, 11],
            w: vec![2, 3, 4],
            group: 1,
            strides: vec![2],
            dilations: vec![2],
            pads: vec![3, 1],
            bias: true,
        },
        40,
    );
    check_conv(
        ConvCase {
            x: vec![1, 2, 5, 4, 6],
            w: vec![4, 1, 2, 3, 2],
            group: 2,
            strides: vec![1, 2, 2],
            dilations: vec![2, 1, 1],
            pads: vec![1, 0, 1, 0, 1, 1],
            bias: false,
        },
        50,
    );
}

#[test]
fn conv_auto_pad_same_and_f16() {
    // SAME_UPPER with stride 2 on 5 wide: output 3, total pad 2 -> (1, 1); on 6 wide: total 1 -> (0, 1).
    let x = random(2 * 5 * 6, 60);
    let w = random(3 * 2 * 3 * 3, 61);
    let c = ConvCase {
        x: vec![1, 2, 5, 6],
        w: vec![3, 2, 3, 3],
        group: 1,
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 0, 1, 1],
        bias: false,
    };
    let (want, shape) = naive_conv(&c, &x, &w, None);
    let mut win = window(&[2, 2], &[1, 1], &[0; 4]);
    win.pads = None;
    win.auto_pad = AutoPad::SameUpper;
    let op = NnOp::Conv(Conv { window: win, group: 1 });
    assert_close(&run1(op.clone(), &[t(&c.x, x.clone()), t(&c.w, w.clone())]), &want, &shape);
    // f16 computes in f32 and rounds once.
    let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let got = run1(op, &[t(&c.x, h(&x)), t(&c.w, h(&w))]);
    assert_eq!(got.dtype(), DType::F16);
    let g = got.to_f64_vec().unwrap();
    for (a, b) in g.iter().zip(&want) {
        assert!((a - *b as f64).abs() < 2e-2, "{a} vs {b}");
    }
}

#[test]
fn conv_errors() {
    let op = NnOp::Conv(Conv { window: Window::default(), group: 1 });
    // Channels differ: X has 3, W expects 2.
    let x = t(&[1, 3, 4, 4], vec![1.0f32; 48]);
    let w = t(&[2, 2, 3, 3], vec![1.0f32; 36]);
    assert!(run_op(op.clone(), &[x, w], 1).is_err());
    // Kernel larger than the input.
    let x = t(&[1, 1, 2, 2], vec![1.0f32; 4]);
    let w = t(&[1, 1, 3, 3], vec![1.0f32; 9]);
    assert!(run_op(op, &[x, w], 1).is_err());
}

// ---------------------------------------------------------------- ConvTranspose

/// Transposed convolution by scattering each input element through the kernel.
#[allow(clippy::too_many_arguments)] // the attributes of one case, spelled out
fn naive_conv_transpose(
    xs: &[usize],
    ws: &[usize],
    group: usize,
    strides: &[usize],
    pads: &[usize],
    out_pad: &[usize],
    x: &[f32],
    w: &[f32],
) -> (Vec<f32>, Vec<usize>) {
    let d = xs.len() - 2;
    let (n, ch, cout) = (xs[0], xs[1], ws[1]);
    let cin = ch / group;
    let m = cout * group;
    let out_sp: Vec<usize> =
        (0..d).map(|i| strides[i] * (xs[2 + i] - 1) + ws[2 + i] + out_pad[i] - pads[i] - pads[d + i]).collect();
    let (isz, osz, ksz) =
        (xs[2..].iter().product::<usize>(), out_sp.iter().product::<usize>(), ws[2..].iter().product::<usize>());
    let mut out = vec![0f32; n * m * osz];
    for bn in 0..n {
        for ic in 0..ch {
            let grp = ic / cin;
            for p in 0..isz {
                let ipos = unravel(p, &xs[2..]);
                for oc in 0..cout {
                    for kk in 0..ksz {
                        let kpos = unravel(kk, &ws[2..]);
                        let opos: Vec<i64> =
                            (0..d).map(|i| (ipos[i] * strides[i] + kpos[i]) as i64 - pads[i] as i64).collect();
                        if opos.iter().zip(&out_sp).all(|(o, s)| *o >= 0 && (*o as usize) < *s) {
                            let o: Vec<usize> = opos.iter().map(|&v| v as usize).collect();
                            out[(bn * m + grp * cout + oc) * osz + ravel(&o, &out_sp)] +=
                                x[(bn * ch + ic) * isz + p] * w[(ic * cout + oc) * ksz + kk];
                        }
                    }
                }
            }
        }
    }
    let mut shape = vec![n, m];
    shape.extend(out_sp);
    (out, shape)
}

#[test]
fn conv_transpose_matches_scatter_reference() {
    // (input shape, weight shape, group, strides, pads, output_padding)
    #[allow(clippy::type_complexity)]
    let cases: [(Vec<usize>, Vec<usize>, usize, Vec<usize>, Vec<usize>, Vec<usize>); 3] = [
        (vec![1, 2, 3, 4], vec![2, 3, 3, 3], 1, vec![2, 2], vec![1, 0, 1, 1], vec![1, 0]),
        (vec![2, 4, 3, 3], vec![4, 1, 2, 3], 2, vec![1, 3], vec![0, 1, 0, 0], vec![0, 0]),
        (vec![1, 3, 5], vec![3, 2, 4], 1, vec![3], vec![2, 1], vec![2]),
    ];
    for (k, (xs, ws, group, strides, pads, out_pad)) in cases.into_iter().enumerate() {
        let x = random(xs.iter().product(), 70 + k as u64);
        let w = random(ws.iter().product(), 80 + k as u64);
        let (want, shape) = naive_conv_transpose(&xs, &ws, group, &strides, &pads, &out_pad, &x, &w);
        let d = xs.len() - 2;
        let op = NnOp::ConvTranspose(ConvTranspose {
            window: window(&strides, &vec![1; d], &pads),
            group,
            output_padding: Some(out_pad),
            output_shape: None,
        });
        assert_close(&run1(op, &[t(&xs, x), t(&ws, w)]), &want, &shape);
    }
}

// ---------------------------------------------------------------- pools

fn pool(kind: PoolKind, kernel: &[usize], strides: &[usize], pads: &[usize], ceil_mode: bool) -> NnOp {
    NnOp::Pool(Pool {
        kind,
        window: Window {
            kernel_shape: Some(kernel.to_vec()),
            strides: Some(strides.to_vec()),
            dilations: None,
            pads: Some(pads.to_vec()),
            auto_pad: AutoPad::NotSet,
        },
        ceil_mode,
    })
}

#[test]
fn maxpool_values_and_indices() {
    // 1x1x3x4, kernel 2x2, stride 2, pad right 1 with ceil_mode off:
    //  1  5  2  0
    //  3 -1  7  4
    //  9  8 -2  6
    let x = t(&[1, 1, 3, 4], vec![1.0f32, 5.0, 2.0, 0.0, 3.0, -1.0, 7.0, 4.0, 9.0, 8.0, -2.0, 6.0]);
    let op = pool(PoolKind::Max { column_major_indices: false }, &[2, 2], &[2, 2], &[0, 0, 0, 0], true);
    let out = run_op(op, std::slice::from_ref(&x), 2).unwrap();
    // ceil_mode: output 2x2, the last row window covers only row 2.
    assert_close(&out[0], &[5.0, 7.0, 9.0, 6.0], &[1, 1, 2, 2]);
    assert_eq!(out[1].to_vec::<i64>().unwrap(), vec![1, 6, 8, 11]);
    let op = pool(PoolKind::Max { column_major_indices: true }, &[2, 2], &[2, 2], &[0, 0, 0, 0], false);
    let out = run_op(op, &[x], 2).unwrap();
    assert_close(&out[0], &[5.0, 7.0], &[1, 1, 1, 2]);
    // Column-major: (row 0, col 1) -> 1*3 + 0 = 3; (row 1, col 2) -> 2*3 + 1 = 7.
    assert_eq!(out[1].to_vec::<i64>().unwrap(), vec![3, 7]);
}

#[test]
fn maxpool_integers() {
    let x = t(&[1, 1, 2, 3], vec![3u8, 200, 7, 9, 1, 255]);
    let op = pool(PoolKind::Max { column_major_indices: false }, &[2, 2], &[1, 1], &[0, 0, 0, 0], false);
    assert_eq!(run1(op, &[x]).to_vec::<u8>().unwrap(), vec![200, 255]);
}

#[test]
fn averagepool_count_include_pad() {
    let x = t(&[1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
    let op = |inc| pool(PoolKind::Average { count_include_pad: inc }, &[2, 2], &[1, 1], &[1, 1, 0, 0], false);
    // Windows at (-1..1, -1..1), (-1..1, 0..2), (0..2, -1..1), (0..2, 0..2).
    assert_close(&run1(op(false), std::slice::from_ref(&x)), &[1.0, 1.5, 2.0, 2.5], &[1, 1, 2, 2]);
    assert_close(&run1(op(true), &[x]), &[0.25, 0.75, 1.0, 2.5], &[1, 1, 2, 2]);
}

#[test]
fn lppool_and_global_pools() {
    let x = t(&[1, 2, 1, 2], vec![3.0f32, -4.0, 1.0, 2.0]);
    let lp = pool(PoolKind::Lp { p: 2.0 }, &[1, 2], &[1, 1], &[0, 0, 0, 0], false);
    assert_close(&run1(lp, std::slice::from_ref(&x)), &[5.0, 5f32.sqrt()], &[1, 2, 1, 1]);
    let avg = NnOp::GlobalPool(PoolKind::Average { count_include_pad: false });
    assert_close(&run1(avg, std::slice::from_ref(&x)), &[-0.5, 1.5], &[1, 2, 1, 1]);
    let max = NnOp::GlobalPool(PoolKind::Max { column_major_indices: false });
    assert_close(&run1(max, std::slice::from_ref(&x)), &[3.0, 2.0], &[1, 2, 1, 1]);
    let glp = NnOp::GlobalPool(PoolKind::Lp { p: 1.0 });
    assert_close(&run1(glp, &[x]), &[7.0, 3.0], &[1, 2, 1, 1]);
}

#[test]
fn maxunpool_scatters_and_rejects_bad_indices() {
    let w = Window { kernel_shape: Some(vec![2, 2]), strides: Some(vec![2, 2]), ..Window::default() };
    let x = t(&[1, 1, 1, 2], vec![5.0f32, 6.0]);
    let i = t(&[1, 1, 1, 2], vec![4i64, 3]);
    let got = run1(NnOp::MaxUnpool(w.clone()), &[x.clone(), i]);
    assert_close(&got, &[0.0, 0.0, 0.0, 6.0, 5.0, 0.0, 0.0, 0.0], &[1, 1, 2, 4]);
    let bad = t(&[1, 1, 1, 2], vec![8i64, 0]);
    assert!(run_op(NnOp::MaxUnpool(w), &[x, bad], 1).is_err());
}

#[test]
fn col2im_adds_overlapping_blocks() {
    // 1 channel, 1x3 image, 1x2 blocks, stride 1: two blocks overlap at the middle pixel.
    let x = t(&[1, 2, 2], vec![1.0f32, 10.0, 2.0, 20.0]);
    let image = t(&[2], vec![1i64, 3]);
    let block = t(&[2], vec![1i64, 2]);
    let got = run1(NnOp::Col2Im(Window::default()), &[x, image, block]);
    // Block 0 puts (1, 2) at pixels 0,1; block 1 puts (10, 20) at pixels 1,2.
    assert_close(&got, &[1.0, 12.0, 20.0], &[1, 1, 1, 3]);
}
