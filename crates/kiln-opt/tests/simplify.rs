//! Level 1 (simplify): constant folding, symbolic shape values, no-op removal. Each
//! rewrite has near-miss tests that assert the graph is left alone.

mod support;

use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp, VariadicOp};
use kiln_ir::ops::movement::PadMode;
use kiln_ir::ops::{ElementwiseOp, MovementOp, NnOp};
use kiln_ir::{DType, Dim, Graph, NetworkDefinition, Op, Shape, Tensor};
use kiln_opt::{Optimizer, Options, Report};
use support::*;

// ---- builders ----

fn mv(m: MovementOp) -> Op {
    Op::Movement(m)
}

fn relu() -> Op {
    Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Relu))
}

fn bin(b: BinaryOp) -> Op {
    Op::Elementwise(ElementwiseOp::Binary(b))
}

fn matmul() -> Op {
    Op::Nn(NnOp::MatMul)
}

fn transpose(p: &[i64]) -> Op {
    mv(MovementOp::Transpose { perm: Some(p.to_vec()) })
}

fn reshape() -> Op {
    mv(MovementOp::Reshape { allowzero: false })
}

fn shape_of() -> Op {
    mv(MovementOp::Shape { start: 0, end: None })
}

fn gather0() -> Op {
    mv(MovementOp::Gather { axis: 0 })
}

fn unsqueeze(axes: &[i64]) -> Op {
    mv(MovementOp::Unsqueeze { axes: Some(axes.to_vec()) })
}

fn concat0() -> Op {
    mv(MovementOp::Concat { axis: 0 })
}

fn cast(to: DType) -> Op {
    Op::Elementwise(ElementwiseOp::Cast { to, saturate: true })
}

fn weights(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(|_| rng.uniform(0.1, 1.0)).collect::<Vec<f32>>()).unwrap()
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn sym(dims: &[&str]) -> Shape {
    Shape(
        dims.iter()
            .map(|d| match d.parse::<usize>() {
                Ok(n) => Dim::Known(n),
                Err(_) if *d == "?" => Dim::Unknown,
                Err(_) => Dim::sym(d),
            })
            .collect(),
    )
}

/// Optimises with the CPU evaluator and a fold size limit, and checks equivalence.
fn check_with(graph: &Graph, options: Options, seed: u64) -> (Graph, Report) {
    let (after, report) = Optimizer::new(1).with_options(options).optimize(graph).expect("optimize");
    assert!(report.refused.is_empty(), "refused patches: {:#?}", report.refused);
    let inputs = random_inputs(graph, seed, 3, &|_| 3);
    assert_same_outputs(graph, &after, &inputs, 1e-5);
    (after, report)
}

fn count(g: &Graph, op: &str) -> usize {
    ops(g).iter().filter(|o| **o == op).count()
}

/// The constant target of the first Reshape in `g`.
fn reshape_target(g: &Graph) -> Vec<i64> {
    let r = g.nodes.iter().find(|n| n.op.name() == "Reshape").expect("a Reshape");
    let t = r.inputs[1].expect("target");
    match &g.nodes[t.node].op {
        Op::Constant(t) => t.to_i64_vec().unwrap(),
        other => panic!("target is computed by {}", other.name()),
    }
}

// ---- constant folding ----

#[test]
fn transpose_of_a_weight_folds() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let w = n.add_constant("w", weights(&[4, 3], 1));
    let t = n.add("wt", transpose(&[1, 0]), &[w]).unwrap();
    let y = n.add("mm", matmul(), &[x, t]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 1);
    assert_eq!(ops(&after), ["MatMul"]);
    assert!(after.nodes.iter().any(|n| n.name == "wt/folded"), "constant named after the node");
}

#[test]
fn large_weight_transform_folds_only_when_the_weight_dies() {
    let eval = cpu_eval;
    let options = Options { fold_limit_bytes: 64, evaluator: Some(&eval), ..Options::default() };
    // The weight is read only by the Transpose: the folded copy replaces it.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 8]));
    let w = n.add_constant("w", weights(&[8, 8], 2));
    let t = n.add("wt", transpose(&[1, 0]), &[w]).unwrap();
    let y = n.add("mm", matmul(), &[x, t]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_with(&n.build(), options, 2);
    assert_eq!(ops(&after), ["MatMul"]);
    // Near miss: the weight is also read elsewhere: a second copy would be stored.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 8]));
    let w = n.add_constant("w", weights(&[8, 8], 2));
    let t = n.add("wt", transpose(&[1, 0]), &[w]).unwrap();
    let y = n.add("mm", matmul(), &[x, t]).unwrap();
    let z = n.add("mm2", matmul(), &[x, w]).unwrap();
    n.mark_output(y, "y").unwrap();
    n.mark_output(z, "z").unwrap();
    let (after, _) = check_with(&n.build(), options, 3);
    assert_eq!(ops(&after), ["Transpose", "MatMul", "MatMul"]);
}

#[test]
fn cast_of_a_weight_folds_past_the_limit_when_it_replaces_it() {
    let eval = cpu_eval;
    let options = Options { fold_limit_bytes: 64, evaluator: Some(&eval), ..Options::default() };
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[8, 8]));
    let w = n.add_constant("w", weights(&[8, 8], 3));
    let half = n.add("half", cast(DType::F16), &[w]).unwrap();
    let back = n.add("back", cast(DType::F32), &[half]).unwrap();
    let y = n.add("add", bin(BinaryOp::Add), &[x, back]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_with(&n.build(), options, 3);
    // W (256 bytes) → f16 (128 bytes) folds; f16 → f32 (256 bytes) would grow what it replaces.
    assert_eq!(ops(&after), ["Cast", "Add"]);
    assert!(after.nodes.iter().any(|n| n.name == "half/folded"));
}

#[test]
fn expand_of_a_small_constant_into_a_large_tensor_is_not_folded() {
    let eval = cpu_eval;
    let options = Options { fold_limit_bytes: 256, evaluator: Some(&eval), ..Options::default() };
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[16, 16]));
    let c = n.add_constant("c", Tensor::from_vec(vec![1], vec![0.5f32]).unwrap());
    let s = n.add_constant("s", ints(&[16, 16]));
    let e = n.add("expand", mv(MovementOp::Expand), &[c, s]).unwrap();
    let y = n.add("add", bin(BinaryOp::Add), &[x, e]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_with(&n.build(), options, 4);
    assert_eq!(ops(&after), ["Expand", "Add"]);
    // Under the limit it folds.
    let (after, _) = check_pass(&n_expand_small(), 1, 5);
    assert_eq!(ops(&after), ["Add"]);
}

fn n_expand_small() -> Graph {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[4, 4]));
    let c = n.add_constant("c", Tensor::from_vec(vec![1], vec![0.5f32]).unwrap());
    let s = n.add_constant("s", ints(&[4, 4]));
    let e = n.add("expand", mv(MovementOp::Expand), &[c, s]).unwrap();
    let y = n.add("add", bin(BinaryOp::Add), &[x, e]).unwrap();
    n.mark_output(y, "y").unwrap();
    n.build()
}

#[test]
fn shape_with_start_folds_without_an_evaluator() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let y = n.add_input("y", DType::F32, Shape::known(&[12]));
    let s = n.add("shape", mv(MovementOp::Shape { start: 1, end: None }), &[x]).unwrap();
    let r = n.add("reshape", reshape(), &[y, s]).unwrap();
    let e = n.add("exp", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Exp)), &[x]).unwrap();
    n.mark_output(r, "r").unwrap();
    n.mark_output(e, "e").unwrap();
    let g = n.build();
    let (after, report) = Optimizer::new(1).optimize(&g).unwrap();
    assert!(report.refused.is_empty());
    assert_eq!(ops(&after), ["Reshape", "Exp"]);
    assert_eq!(reshape_target(&after), [3, 4]);
    let inputs = random_inputs(&g, 6, 3, &|_| 3);
    assert_same_outputs(&g, &after, &inputs, 1e-5);
}

#[test]
fn ops_on_graph_inputs_are_not_folded() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let c = n.add_constant("c", weights(&[3], 7));
    let a = n.add("add", bin(BinaryOp::Add), &[x, c]).unwrap();
    let y = n.add("relu", relu(), &[a]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 7);
    assert_eq!(ops(&after), ["Add", "Relu"]);
}

#[test]
fn constant_subgraph_folds_to_one_constant() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let c = n.add_constant("c", weights(&[3], 8));
    let e = n.add("exp", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Exp)), &[c]).unwrap();
    let m = n.add("mul", bin(BinaryOp::Mul), &[e, c]).unwrap();
    let y = n.add("add", bin(BinaryOp::Add), &[x, m]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 8);
    assert_eq!(ops(&after), ["Add"]);
}

#[test]
fn multi_output_and_graph_output_nodes_fold() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3]));
    let c = n.add_constant("c", weights(&[6], 11));
    let split = mv(MovementOp::Split { axis: 0, split: None, num_outputs: Some(2) });
    let parts = n.add_layer("split", split, &[c], 2).unwrap();
    let y = n.add("mul", bin(BinaryOp::Mul), &[x, parts[1]]).unwrap();
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    n.mark_output(y, "y").unwrap();
    n.mark_output(s, "s").unwrap();
    n.mark_output(parts[0], "p0").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 12);
    assert_eq!(ops(&after), ["Mul"]);
    assert!(after.nodes.iter().any(|n| n.name == "split/folded:1"));
    assert_eq!(after.outlet_name(after.outputs[1]), "s");
}

#[test]
fn range_over_a_known_dim_of_a_symbolic_shape_folds() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "4"]));
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let i1 = n.add_constant("i1", Tensor::scalar(1i64));
    let d = n.add("g1", gather0(), &[s, i1]).unwrap();
    let zero = n.add_constant("zero", Tensor::scalar(0i64));
    let one = n.add_constant("one", Tensor::scalar(1i64));
    let r = n.add("range", mv(MovementOp::Range), &[zero, d, one]).unwrap();
    let f = n.add("cast", cast(DType::F32), &[r]).unwrap();
    let y = n.add("add", bin(BinaryOp::Add), &[x, f]).unwrap();
    n.mark_output(y, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 13);
    assert_eq!(ops(&after), ["Add"]);
}

#[test]
fn range_over_a_symbolic_dim_is_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "4"]));
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let i0 = n.add_constant("i0", Tensor::scalar(0i64));
    let d = n.add("g0", gather0(), &[s, i0]).unwrap();
    let zero = n.add_constant("zero", Tensor::scalar(0i64));
    let one = n.add_constant("one", Tensor::scalar(1i64));
    let r = n.add("range", mv(MovementOp::Range), &[zero, d, one]).unwrap();
    n.mark_output(r, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 14);
    assert_eq!(ops(&after), ["Shape", "Gather", "Range"]);
}

// ---- symbolic shapes ----

/// `Reshape(h, Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)), tail))`,
/// as PyTorch exports `h.view(b, s, …)`.
fn dynamic_reshape(x_shape: Shape, shape_source_is_x: bool, tail: &[i64]) -> Graph {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, x_shape);
    let src = if shape_source_is_x { x } else { n.add_input("other", DType::F32, sym(&["other", "seq", "8"])) };
    let w = n.add_constant("w", weights(&[8, 8], 9));
    let b = n.add_constant("b", weights(&[8], 10));
    let m = n.add("mm", matmul(), &[x, w]).unwrap();
    let h = n.add("bias", bin(BinaryOp::Add), &[b, m]).unwrap();
    let s = n.add("shape", shape_of(), &[src]).unwrap();
    let i0 = n.add_constant("i0", Tensor::scalar(0i64));
    let i1 = n.add_constant("i1", Tensor::scalar(1i64));
    let d0 = n.add("g0", gather0(), &[s, i0]).unwrap();
    let d1 = n.add("g1", gather0(), &[s, i1]).unwrap();
    let u0 = n.add("u0", unsqueeze(&[0]), &[d0]).unwrap();
    let u1 = n.add("u1", unsqueeze(&[0]), &[d1]).unwrap();
    let t = n.add_constant("tail", ints(tail));
    let c = n.add("concat", concat0(), &[u0, u1, t]).unwrap();
    let r = n.add("reshape", reshape(), &[h, c]).unwrap();
    n.mark_output(r, "y").unwrap();
    n.build()
}

#[test]
fn symbolic_shape_chain_becomes_a_constant_reshape() {
    let g = dynamic_reshape(sym(&["batch", "seq", "8"]), true, &[-1, 4]);
    let (after, _) = check_pass(&g, 1, 11);
    assert_eq!(ops(&after), ["MatMul", "Add", "Reshape"]);
    assert_eq!(reshape_target(&after), [0, 0, -1, 4]);
}

#[test]
fn unknown_dims_are_tracked_through_matmul_and_add() {
    // Inference knows nothing of dims 0 and 1, but they are x's own through MatMul and Add.
    let g = dynamic_reshape(sym(&["?", "?", "8"]), true, &[2, 4]);
    let (after, _) = check_pass(&g, 1, 12);
    assert_eq!(ops(&after), ["MatMul", "Add", "Reshape"]);
    assert_eq!(reshape_target(&after), [0, 0, 2, 4]);
}

#[test]
fn shape_of_another_tensor_is_not_assumed_equal() {
    // Dim 0 comes from another input ('other'): at most it can be -1, and the tail has a -1 too.
    let g = dynamic_reshape(sym(&["batch", "seq", "8"]), false, &[-1, 4]);
    let (after, _) = check_pass(&g, 1, 13);
    for op in ["Shape", "Gather", "Unsqueeze", "Concat"] {
        assert!(count(&after, op) >= 1, "{op} kept: {:?}", ops(&after));
    }
}

#[test]
fn one_unprovable_element_becomes_minus_one() {
    // Dim 1 ('seq') is shared by name with 'other'; dim 0 ('other') is not x's: -1.
    let g = dynamic_reshape(sym(&["batch", "seq", "8"]), false, &[2, 4]);
    let (after, _) = check_pass(&g, 1, 14);
    assert_eq!(ops(&after), ["MatMul", "Add", "Reshape"]);
    assert_eq!(reshape_target(&after), [-1, 0, 2, 4]);
}

#[test]
fn known_elements_of_a_partly_symbolic_shape_become_constants() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "6"]));
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let i1 = n.add_constant("i1", Tensor::scalar(1i64));
    let d = n.add("g1", gather0(), &[s, i1]).unwrap();
    let u = n.add("u", unsqueeze(&[0]), &[d]).unwrap();
    let m1 = n.add_constant("m1", ints(&[-1]));
    let c = n.add("concat", concat0(), &[m1, u]).unwrap();
    let h = n.add("relu", relu(), &[x]).unwrap();
    let r = n.add("reshape", reshape(), &[h, c]).unwrap();
    n.mark_output(r, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 15);
    assert_eq!(ops(&after), ["Relu"], "Reshape to its own shape is removed too");
}

#[test]
fn expand_to_own_shape_is_removed_and_a_real_broadcast_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "4"]));
    let y = n.add_input("y", DType::F32, sym(&["1", "4"]));
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let e = n.add("expand_same", mv(MovementOp::Expand), &[x, s]).unwrap();
    let r = n.add("relu", relu(), &[e]).unwrap();
    let e2 = n.add("expand_y", mv(MovementOp::Expand), &[y, s]).unwrap();
    n.mark_output(r, "r").unwrap();
    n.mark_output(e2, "e").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 16);
    let mut got = ops(&after);
    got.sort_unstable();
    assert_eq!(got, ["Expand", "Relu", "Shape"]);
}

#[test]
fn torch_mask_shape_where_equal_pattern_resolves() {
    // Where(Equal(s, -1), 1, s) with s = [batch, 1, 4]: the Expand to it is x's own shape.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "1", "4"]));
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let i0 = n.add_constant("i0", Tensor::scalar(0i64));
    let d = n.add("g0", gather0(), &[s, i0]).unwrap();
    let u = n.add("u", unsqueeze(&[0]), &[d]).unwrap();
    let rest = n.add_constant("rest", ints(&[-1, 4]));
    let c = n.add("concat", concat0(), &[u, rest]).unwrap();
    let minus = n.add_constant("minus", ints(&[-1, -1, -1]));
    let eq = n
        .add("eq", Op::Elementwise(ElementwiseOp::Compare(kiln_ir::ops::elementwise::CompareOp::Equal)), &[c, minus])
        .unwrap();
    let ones = n.add_constant("ones", ints(&[1, 1, 1]));
    let w = n.add("where", Op::Elementwise(ElementwiseOp::Where), &[eq, ones, c]).unwrap();
    let h = n.add("relu", relu(), &[x]).unwrap();
    let e = n.add("expand", mv(MovementOp::Expand), &[h, w]).unwrap();
    n.mark_output(e, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 17);
    assert_eq!(ops(&after), ["Relu"]);
}

// ---- no-ops ----

fn unary_graph(op: Op, x_shape: Shape, dtype: DType, extra: &[Tensor]) -> Graph {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", dtype, x_shape);
    let r = n
        .add(
            "pre",
            if dtype == DType::F32 { relu() } else { Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Abs)) },
            &[x],
        )
        .unwrap();
    let mut inputs = vec![r];
    for (i, t) in extra.iter().enumerate() {
        inputs.push(n.add_constant(&format!("k{i}"), t.clone()));
    }
    let y = n.add("op", op, &inputs).unwrap();
    n.mark_output(y, "y").unwrap();
    n.build()
}

#[test]
fn cast_to_the_same_dtype_is_removed_another_kept() {
    let g = unary_graph(cast(DType::F32), Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 20).0), ["Relu"]);
    let g = unary_graph(cast(DType::I64), Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 21).0), ["Relu", "Cast"]);
}

#[test]
fn reshapes_to_the_same_shape_are_removed() {
    let g = unary_graph(reshape(), sym(&["batch", "3"]), DType::F32, &[ints(&[0, 3])]);
    assert_eq!(ops(&check_pass(&g, 1, 22).0), ["Relu"]);
    let g = unary_graph(mv(MovementOp::Flatten { axis: 1 }), Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 23).0), ["Relu"]);
    // Near miss: another shape.
    let g = unary_graph(reshape(), Shape::known(&[2, 3]), DType::F32, &[ints(&[3, 2])]);
    assert_eq!(ops(&check_pass(&g, 1, 24).0), ["Relu", "Reshape"]);
    // Near miss: an unknown dim is not provably the same.
    let g = unary_graph(reshape(), sym(&["?", "3"]), DType::F32, &[ints(&[-1, 3])]);
    assert_eq!(ops(&check_pass(&g, 1, 25).0), ["Relu", "Reshape"]);
}

#[test]
fn identity_transpose_is_removed() {
    let g = unary_graph(transpose(&[0, 1, 2]), Shape::known(&[2, 3, 4]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 26).0), ["Relu"]);
    let g = unary_graph(transpose(&[0, 2, 1]), Shape::known(&[2, 3, 4]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 27).0), ["Relu", "Transpose"]);
}

fn transpose_pair(p1: &[i64], p2: &[i64], first_is_output: bool) -> Graph {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[2, 3, 4]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let t1 = n.add("t1", transpose(p1), &[r]).unwrap();
    let t2 = n.add("t2", transpose(p2), &[t1]).unwrap();
    let e = n.add("exp", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Exp)), &[t2]).unwrap();
    n.mark_output(e, "y").unwrap();
    if first_is_output {
        n.mark_output(t1, "t1_out").unwrap();
    }
    n.build()
}

#[test]
fn transpose_pairs_merge_or_cancel() {
    let (after, _) = check_pass(&transpose_pair(&[0, 2, 1], &[0, 2, 1], false), 1, 28);
    assert_eq!(ops(&after), ["Relu", "Exp"]);
    let (after, _) = check_pass(&transpose_pair(&[1, 0, 2], &[0, 2, 1], false), 1, 29);
    assert_eq!(ops(&after), ["Relu", "Transpose", "Exp"]);
    assert!(after.nodes.iter().any(|n| n.name == "t1 + t2"));
}

#[test]
fn transpose_pair_whose_first_is_read_elsewhere() {
    // Not cancelling: both are kept (merging would compute two transposes anyway).
    let (after, _) = check_pass(&transpose_pair(&[1, 0, 2], &[0, 2, 1], true), 1, 30);
    assert_eq!(ops(&after), ["Relu", "Transpose", "Transpose", "Exp"]);
    // Cancelling: the second goes, the first stays for its other reader.
    let (after, _) = check_pass(&transpose_pair(&[0, 2, 1], &[0, 2, 1], true), 1, 31);
    assert_eq!(ops(&after), ["Relu", "Transpose", "Exp"]);
}

#[test]
fn reshape_chains_become_one_reshape() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "6", "4"]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let s1 = n.add_constant("s1", ints(&[0, 24]));
    let a = n.add("flat", reshape(), &[r, s1]).unwrap();
    let u = n.add("unsq", unsqueeze(&[1]), &[a]).unwrap();
    let s2 = n.add_constant("s2", ints(&[0, 4, 6]));
    let b = n.add("back", reshape(), &[u, s2]).unwrap();
    n.mark_output(b, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 32);
    assert_eq!(ops(&after), ["Relu", "Reshape"]);
    assert_eq!(reshape_target(&after), [0, 4, 6]);
}

#[test]
fn reshape_chain_with_symbols_only_folds_when_provable() {
    // [batch, seq] → [1, batch, seq] → [1, batch, seq, 1]: batch and seq moved position,
    // so neither is a copy of x's dim at the same position (and only one may be -1).
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "seq"]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let u = n.add("unsq", unsqueeze(&[0]), &[r]).unwrap();
    let s = n.add_constant("s", ints(&[0, 0, 0, 1]));
    let b = n.add("reshape", reshape(), &[u, s]).unwrap();
    n.mark_output(b, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 33);
    assert_eq!(ops(&after), ["Relu", "Unsqueeze", "Reshape"]);
    // The same chain with only one moved symbol: -1.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["batch", "4"]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let u = n.add("unsq", unsqueeze(&[0]), &[r]).unwrap();
    let s = n.add_constant("s", ints(&[0, 0, 2, 2]));
    let b = n.add("reshape", reshape(), &[u, s]).unwrap();
    n.mark_output(b, "y").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 34);
    assert_eq!(ops(&after), ["Relu", "Reshape"]);
    assert_eq!(reshape_target(&after), [1, -1, 2, 2]);
}

fn squeeze_transpose_unsqueeze(second_reshape: &[i64], x_first: bool) -> Graph {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[1, 2, 3, 4]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let t0 = n.add("t0", transpose(&[0, 2, 1, 3]), &[r]).unwrap();
    let s1 = n.add_constant("s1", ints(&[3, 2, 4]));
    let a = n.add("squeeze", reshape(), &[if x_first { r } else { t0 }, s1]).unwrap();
    let t = n.add("t", transpose(&[0, 2, 1]), &[a]).unwrap();
    let s2 = n.add_constant("s2", ints(second_reshape));
    let b = n.add("unsqueeze", reshape(), &[t, s2]).unwrap();
    n.mark_output(b, "y").unwrap();
    if x_first {
        n.mark_output(t0, "t0").unwrap();
    }
    n.build()
}

#[test]
fn transpose_between_unit_reshapes_becomes_one_transpose() {
    // [1,2,3,4] →T [1,3,2,4] → [3,2,4] →T [3,4,2] → [1,3,4,2]: one Transpose (0,2,3,1).
    let (after, _) = check_pass(&squeeze_transpose_unsqueeze(&[1, 3, 4, 2], false), 1, 53);
    assert_eq!(ops(&after), ["Relu", "Transpose"]);
    let t = after.nodes.iter().find(|n| n.op.name() == "Transpose").unwrap();
    let Op::Movement(MovementOp::Transpose { perm }) = &t.op else { unreachable!() };
    assert_eq!(perm.as_deref(), Some(&[0, 2, 3, 1][..]));
    // A unit dim placed elsewhere is still a transpose (merged with t0 again).
    let (after, _) = check_pass(&squeeze_transpose_unsqueeze(&[3, 4, 2, 1], false), 1, 54);
    assert_eq!(ops(&after), ["Relu", "Transpose"]);
    // Near misses: a reshape that regroups dims, not only units.
    let (after, _) = check_pass(&squeeze_transpose_unsqueeze(&[1, 12, 2, 1], false), 1, 55);
    assert_eq!(count(&after, "Reshape"), 2, "{:?}", ops(&after));
    let (after, _) = check_pass(&squeeze_transpose_unsqueeze(&[1, 3, 4, 2], true), 1, 56);
    assert_eq!(count(&after, "Reshape"), 2, "{:?}", ops(&after));
}

#[test]
fn neutral_constants_are_removed() {
    let zero = Tensor::scalar(0.0f32);
    let one = Tensor::scalar(1.0f32);
    for (op, c) in [(BinaryOp::Add, &zero), (BinaryOp::Sub, &zero), (BinaryOp::Mul, &one), (BinaryOp::Div, &one)] {
        let g = unary_graph(bin(op), Shape::known(&[2, 3]), DType::F32, std::slice::from_ref(c));
        assert_eq!(ops(&check_pass(&g, 1, 35).0), ["Relu"], "{op:?}");
    }
    // Integers, with a [1, 1] constant that does not raise the rank.
    let one_i = Tensor::from_vec(vec![1, 1], vec![1i64]).unwrap();
    let g = unary_graph(bin(BinaryOp::Mul), Shape::known(&[2, 3]), DType::I64, &[one_i]);
    assert_eq!(ops(&check_pass(&g, 1, 36).0), ["Abs"]);
    // 0 + x (constant first) too.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let z = n.add_constant("z", Tensor::from_vec(vec![3], vec![0.0f32; 3]).unwrap());
    let a = n.add("add", bin(BinaryOp::Add), &[z, r]).unwrap();
    n.mark_output(a, "y").unwrap();
    assert_eq!(ops(&check_pass(&n.build(), 1, 37).0), ["Relu"]);
}

#[test]
fn neutral_near_misses_are_kept() {
    // Mul by ones that broadcasts x to a larger shape.
    let ones = Tensor::from_vec(vec![2, 3], vec![1.0f32; 6]).unwrap();
    let g = unary_graph(bin(BinaryOp::Mul), Shape::known(&[3]), DType::F32, &[ones]);
    assert_eq!(ops(&check_pass(&g, 1, 38).0), ["Relu", "Mul"]);
    // A [1, 1] one raises the rank of a 1-D x.
    let one = Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap();
    let g = unary_graph(bin(BinaryOp::Mul), Shape::known(&[3]), DType::F32, &[one]);
    assert_eq!(ops(&check_pass(&g, 1, 39).0), ["Relu", "Mul"]);
    // Not neutral: 2, and 0 - x, 1 / x.
    let g = unary_graph(bin(BinaryOp::Mul), Shape::known(&[3]), DType::F32, &[Tensor::scalar(2.0f32)]);
    assert_eq!(ops(&check_pass(&g, 1, 40).0), ["Relu", "Mul"]);
    for op in [BinaryOp::Sub, BinaryOp::Div] {
        let mut n = NetworkDefinition::new("g");
        let x = n.add_input("x", DType::F32, Shape::known(&[3]));
        let r = n.add("exp", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Exp)), &[x]).unwrap();
        let one = n.add_constant("k", Tensor::scalar(if op == BinaryOp::Sub { 0.0f32 } else { 1.0 }));
        let d = n.add("op", bin(op), &[one, r]).unwrap();
        n.mark_output(d, "y").unwrap();
        assert_eq!(ops(&check_pass(&n.build(), 1, 41).0).len(), 2, "{op:?}");
    }
}

#[test]
fn single_input_and_empty_movement_ops_are_removed() {
    let sum = Op::Elementwise(ElementwiseOp::Variadic(VariadicOp::Sum));
    let g = unary_graph(sum, Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 42).0), ["Relu"]);
    let g = unary_graph(concat0(), Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 43).0), ["Relu"]);
    let split = mv(MovementOp::Split { axis: 0, split: None, num_outputs: Some(1) });
    let g = unary_graph(split, Shape::known(&[2, 3]), DType::F32, &[]);
    assert_eq!(ops(&check_pass(&g, 1, 44).0), ["Relu"]);
    let pad = mv(MovementOp::Pad { mode: PadMode::Constant, pads: None, value: 0.0 });
    let g = unary_graph(pad.clone(), Shape::known(&[2, 3]), DType::F32, &[ints(&[0, 0, 0, 0])]);
    assert_eq!(ops(&check_pass(&g, 1, 45).0), ["Relu"]);
    let g = unary_graph(pad, Shape::known(&[2, 3]), DType::F32, &[ints(&[0, 1, 0, 0])]);
    assert_eq!(ops(&check_pass(&g, 1, 46).0), ["Relu", "Pad"]);
    let slice = mv(MovementOp::Slice { attrs: None });
    let full = [ints(&[0]), ints(&[i64::MAX]), ints(&[1])];
    let g = unary_graph(slice.clone(), sym(&["batch", "3"]), DType::F32, &full);
    assert_eq!(ops(&check_pass(&g, 1, 47).0), ["Relu"]);
    // Near misses: a reversing slice keeps the shape, a partial one does not.
    let rev = [ints(&[-1]), ints(&[i64::MIN]), ints(&[1]), ints(&[-1])];
    let g = unary_graph(slice.clone(), Shape::known(&[2, 3]), DType::F32, &rev);
    assert_eq!(ops(&check_pass(&g, 1, 48).0), ["Relu", "Slice"]);
    let part = [ints(&[1]), ints(&[3]), ints(&[1])];
    let g = unary_graph(slice, Shape::known(&[2, 3]), DType::F32, &part);
    assert_eq!(ops(&check_pass(&g, 1, 49).0), ["Relu", "Slice"]);
    let g = unary_graph(mv(MovementOp::Expand), Shape::known(&[2, 3]), DType::F32, &[ints(&[2, 1])]);
    assert_eq!(ops(&check_pass(&g, 1, 50).0), ["Relu"]);
    let g = unary_graph(mv(MovementOp::Expand), Shape::known(&[2, 3]), DType::F32, &[ints(&[2, 2, 3])]);
    assert_eq!(ops(&check_pass(&g, 1, 51).0), ["Relu", "Expand"]);
}

#[test]
fn dropout_with_a_read_mask_is_kept() {
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, Shape::known(&[3]));
    let r = n.add("relu", relu(), &[x]).unwrap();
    let d = n.add_layer("drop", Op::Elementwise(ElementwiseOp::Dropout { mask_is_bool: true }), &[r], 2).unwrap();
    n.mark_output(d[0], "y").unwrap();
    n.mark_output(d[1], "mask").unwrap();
    let (after, _) = check_pass(&n.build(), 1, 52);
    assert_eq!(ops(&after), ["Relu", "Dropout"]);
}

#[test]
fn bert_dynamic_per_layer_shape_chains_disappear() {
    let m = support::models::torch_model("bert-base-dynamic");
    let (after, _) = optimize(&m.graph, 1);
    let left: Vec<&str> = after
        .nodes
        .iter()
        .filter(|n| ["Shape", "Gather", "Unsqueeze", "Concat", "Expand"].contains(&n.op.name()))
        .filter(|n| n.name.contains("/encoder/"))
        .map(|n| n.name.as_str())
        .collect();
    assert!(left.is_empty(), "left in the encoder layers: {left:?}");
    // Every attention Reshape has a constant target.
    for n in after.nodes.iter().filter(|n| n.op.name() == "Reshape" && n.name.contains("/encoder/")) {
        let t = n.inputs[1].unwrap();
        assert!(matches!(after.nodes[t.node].op, Op::Constant(_)), "'{}' has a computed target", n.name);
    }
}

#[test]
fn deep_graphs_do_not_exhaust_the_stack() {
    // 1500 elementwise ops over unknown dims: the dim tracking gives up past its depth
    // limit instead of recursing further; near the input it still proves the target.
    let mut n = NetworkDefinition::new("g");
    let x = n.add_input("x", DType::F32, sym(&["?", "8"]));
    let mut h = x;
    for i in 0..1500 {
        h = n.add(&format!("relu{i}"), relu(), &[h]).unwrap();
    }
    let s = n.add("shape", shape_of(), &[x]).unwrap();
    let i0 = n.add_constant("i0", Tensor::scalar(0i64));
    let d = n.add("g0", gather0(), &[s, i0]).unwrap();
    let u = n.add("u", unsqueeze(&[0]), &[d]).unwrap();
    let tail = n.add_constant("tail", ints(&[2, 4]));
    let c = n.add("concat", concat0(), &[u, tail]).unwrap();
    let r = n.add("reshape", reshape(), &[h, c]).unwrap();
    n.mark_output(r, "y").unwrap();
    let g = n.build();
    let (after, _) = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || check_pass(&g, 1, 60))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(count(&after, "Reshape"), 1);
}
