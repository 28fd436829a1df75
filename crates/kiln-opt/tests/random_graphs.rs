//! Property test: random graphs built from the patterns the passes look for (and their
//! near misses) compute the same outputs before and after every optimisation level.

mod support;

use kiln_ir::ops::ElementwiseOp;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::nn::{Conv, NnOp, Window};
use kiln_ir::ops::reduce::{BatchNorm, ReduceOp, Softmax, SoftmaxKind};
use kiln_ir::{DType, NetworkDefinition, Op, OutletId, Shape, Tensor};
use proptest::prelude::*;
use support::*;

const C: usize = 4;
const HW: usize = 5;

/// One step of graph construction; `a` and `b` pick earlier values, `k` a variant.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: usize,
    b: usize,
    k: u8,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0u8..14, 0usize..64, 0usize..64, 0u8..8).prop_map(|(kind, a, b, k)| Step { kind, a, b, k }),
        1..14,
    )
}

struct Builder {
    net: NetworkDefinition,
    values: Vec<OutletId>,
    rng: support::Rng,
    n: usize,
}

impl Builder {
    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}", self.n)
    }

    fn constant(&mut self, shape: &[usize], lo: f32, hi: f32) -> OutletId {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.uniform(lo, hi)).collect();
        let name = self.name("c");
        self.net.add_constant(&name, Tensor::from_vec(shape.to_vec(), v).unwrap())
    }

    fn op(&mut self, what: &str, op: Op, inputs: &[OutletId]) -> OutletId {
        let name = self.name(what);
        self.net.add(&name, op, inputs).unwrap()
    }

    fn unary(&mut self, u: UnaryOp, x: OutletId) -> OutletId {
        self.op(u.name(), Op::Elementwise(ElementwiseOp::Unary(u)), &[x])
    }

    fn binary(&mut self, b: BinaryOp, x: OutletId, y: OutletId) -> OutletId {
        self.op(b.name(), Op::Elementwise(ElementwiseOp::Binary(b)), &[x, y])
    }

    fn conv(&mut self, x: OutletId, c_in: usize, k: usize, bias: bool) -> OutletId {
        let a = (3.0 / (c_in * k * k) as f32).sqrt();
        let w = self.constant(&[C, c_in, k, k], -a, a);
        let p = k / 2;
        let window = Window { pads: Some(vec![p, p, p, p]), ..Window::default() };
        let op = Op::Nn(NnOp::Conv(Conv { window, group: 1 }));
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(self.constant(&[C], -0.1, 0.1));
        }
        self.op("conv", op, &inputs)
    }

    fn step(&mut self, s: &Step) {
        let x = self.values[s.a % self.values.len()];
        let y = self.values[s.b % self.values.len()];
        let units = [UnaryOp::Relu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Abs, UnaryOp::HardSwish, UnaryOp::Neg];
        let out = match s.kind {
            0 => self.unary(units[s.k as usize % units.len()], x),
            1 => {
                let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul];
                self.binary(ops[s.k as usize % 3], x, y)
            }
            2 => {
                // A constant operand: scalar, per-channel, or a full tensor.
                let shape: &[usize] = match s.k % 3 {
                    0 => &[1],
                    1 => &[C, 1, 1],
                    _ => &[1, C, HW, HW],
                };
                let c = self.constant(shape, 0.5, 1.5);
                let ops = [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Sub];
                self.binary(ops[s.k as usize / 3 % 4], x, c)
            }
            3 => self.conv(x, C, if s.k.is_multiple_of(2) { 3 } else { 1 }, s.k % 4 < 2),
            4 => {
                let scale = self.constant(&[C], 0.5, 1.5);
                let bias = self.constant(&[C], -0.5, 0.5);
                let mean = self.constant(&[C], -0.5, 0.5);
                let var = self.constant(&[C], 0.5, 1.5);
                let op = Op::Reduce(ReduceOp::BatchNorm(BatchNorm { epsilon: 1e-5, momentum: 0.9, training: false }));
                self.op("bn", op, &[x, scale, bias, mean, var])
            }
            5 => {
                let t = self.op("t", Op::Movement(MovementOp::Transpose { perm: Some(vec![0, 2, 3, 1]) }), &[x]);
                self.op("t", Op::Movement(MovementOp::Transpose { perm: Some(vec![0, 3, 1, 2]) }), &[t])
            }
            6 => self.op("id", Op::Elementwise(ElementwiseOp::Identity), &[x]),
            7 => {
                let flat = self.int_constant(&[1, -1]);
                let r = self.op("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[x, flat]);
                let back = self.int_constant(&[1, C as i64, HW as i64, HW as i64]);
                self.op("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[r, back])
            }
            8 => {
                let a = (3.0 / HW as f32).sqrt();
                let w = self.constant(&[HW, HW], -a, a);
                let m = self.op("matmul", Op::Nn(NnOp::MatMul), &[x, w]);
                if s.k.is_multiple_of(2) {
                    let b = self.constant(&[HW], -0.1, 0.1);
                    self.binary(BinaryOp::Add, m, b)
                } else {
                    m
                }
            }
            9 => {
                let axis = if s.k.is_multiple_of(2) { -1 } else { 1 };
                let op = Op::Reduce(ReduceOp::Softmax(Softmax { kind: SoftmaxKind::Softmax, axis, coerce_2d: false }));
                self.op("softmax", op, &[x])
            }
            10 => {
                let cat = self.op("concat", Op::Movement(MovementOp::Concat { axis: 1 }), &[x, y]);
                self.conv(cat, 2 * C, 1, true)
            }
            11 => {
                // SiLU as exported: x * sigmoid(x).
                let sg = self.unary(UnaryOp::Sigmoid, x);
                self.binary(BinaryOp::Mul, x, sg)
            }
            12 => {
                // GELU (erf form), as exported by PyTorch.
                let c = self.scalar(std::f32::consts::SQRT_2);
                let d = self.binary(BinaryOp::Div, x, c);
                let e = self.unary(UnaryOp::Erf, d);
                let one = self.scalar(1.0);
                let p = self.binary(BinaryOp::Add, e, one);
                let m = self.binary(BinaryOp::Mul, x, p);
                let half = self.scalar(0.5);
                self.binary(BinaryOp::Mul, m, half)
            }
            _ => {
                // A constant subexpression to fold.
                let c1 = self.constant(&[C, 1, 1], 0.5, 1.0);
                let c2 = self.constant(&[C, 1, 1], 0.5, 1.0);
                let c = self.binary(BinaryOp::Add, c1, c2);
                self.binary(BinaryOp::Mul, x, c)
            }
        };
        self.values.push(out);
    }

    fn scalar(&mut self, v: f32) -> OutletId {
        let name = self.name("s");
        self.net.add_constant(&name, Tensor::scalar(v))
    }

    fn int_constant(&mut self, v: &[i64]) -> OutletId {
        let name = self.name("shape");
        self.net.add_constant(&name, Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }
}

fn build(steps: &[Step], seed: u64, extra_output: usize) -> kiln_ir::Graph {
    let mut net = NetworkDefinition::new("random");
    let x = net.add_input("x", DType::F32, Shape::known(&[1, C, HW, HW]));
    let mut b = Builder { net, values: vec![x], rng: support::Rng(seed), n: 0 };
    for s in steps {
        b.step(s);
    }
    let last = *b.values.last().unwrap();
    let Builder { mut net, values, .. } = b;
    net.mark_output(last, "y").unwrap();
    let extra = values[extra_output % values.len()];
    if extra != last && extra != x {
        net.mark_output(extra, "z").unwrap();
    }
    net.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn optimisation_keeps_outputs(steps in steps(), seed in 0u64..1000, extra in 0usize..64, level in 0u8..4, nhwc: bool) {
        let g = build(&steps, seed, extra);
        let layout = if nhwc { kiln_opt::Layout::Nhwc } else { kiln_opt::Layout::Nchw };
        let (after, report) = optimize_with_layout(&g, level, layout);
        let inputs = random_inputs(&g, seed, 3, &|_| 3);
        assert_same_outputs(&g, &after, &inputs, 1e-5);
        // NHWC regions add a Transpose per value entering or leaving them.
        prop_assert!(nhwc || report.layers_after <= report.nodes_before + 2);
    }
}
