//! If, Loop and Scan with small bodies built by hand (including captured outer values).

use kiln_ir::ops::control::Scan;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::{ControlOp, ElementwiseOp};
use kiln_ir::{Capture, DType, Fact, Graph, Op, OutletId, Shape, Tensor};

/// Adds a graph input (formal, or captured when `captured`) to a body graph.
fn input(g: &mut Graph, name: &str, fact: Fact, captured: bool) -> OutletId {
    let n = g.push_node(name.into(), Op::Input, vec![], vec![(name.into(), fact)]).unwrap();
    let o = OutletId::new(n, 0);
    if captured {
        g.captures.push(Capture { name: name.into(), outlet: o });
    } else {
        g.inputs.push(o);
    }
    o
}

fn node(g: &mut Graph, name: &str, op: Op, inputs: &[OutletId]) -> OutletId {
    let n = g.add_node(name, op, inputs.iter().map(|&i| Some(i)).collect(), vec![name.into()]).unwrap();
    OutletId::new(n, 0)
}

fn f32s(shape: &[usize]) -> Fact {
    Fact::new(DType::F32, Shape::known(shape))
}

fn add() -> Op {
    Op::Elementwise(ElementwiseOp::Binary(BinaryOp::Add))
}

/// An outer graph: one node `op` reading the given graph inputs (`None` = omitted).
fn outer(op: Op, inputs: &[Option<(&str, Fact)>], n_outputs: usize) -> Graph {
    let mut g = Graph::new("main");
    let ids: Vec<Option<OutletId>> =
        inputs.iter().map(|i| i.as_ref().map(|(name, fact)| input(&mut g, name, fact.clone(), false))).collect();
    let names = (0..n_outputs).map(|i| format!("out{i}")).collect();
    let n = g.add_node("ctl", op, ids, names).unwrap();
    g.outputs = (0..n_outputs).map(|s| OutletId::new(n, s)).collect();
    g
}

fn branch(name: &str, op: Op) -> Graph {
    let mut g = Graph::new(name);
    let a = input(&mut g, "a", f32s(&[2]), true);
    let y = node(&mut g, "y", op, &[a]);
    g.outputs.push(y);
    g
}

#[test]
fn if_runs_the_chosen_branch_with_captures() {
    let op = Op::Control(ControlOp::If {
        then_branch: branch("then", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Neg))),
        else_branch: branch("else", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Relu))),
    });
    let g = outer(op, &[Some(("cond", Fact::new(DType::Bool, Shape(vec![])))), Some(("a", f32s(&[2])))], 1);
    assert_eq!(g.fact(g.outputs[0]).unwrap().shape, Some(Shape::known(&[2])));
    let a = Tensor::from_vec(vec![2], vec![-1.5f32, 2.0]).unwrap();
    for (c, expected) in [(true, vec![1.5, -2.0]), (false, vec![0.0, 2.0])] {
        let cond = Tensor::from_bools(vec![], vec![c]).unwrap();
        let y = kiln_cpu::run(&g, &[cond, a.clone()]).unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), expected);
    }
    let two = Tensor::from_bools(vec![2], vec![true, false]).unwrap();
    let g2 = outer(g.nodes[2].op.clone(), &[Some(("cond", Fact::dtype_only(DType::Bool))), Some(("a", f32s(&[2])))], 1);
    assert!(kiln_cpu::run(&g2, &[two, a]).is_err());
}

/// Loop body: sum += x (captured); scan output: the new sum.
fn sum_body() -> Graph {
    let mut g = Graph::new("body");
    input(&mut g, "i", Fact::new(DType::I64, Shape(vec![])), false);
    let cond = input(&mut g, "cond", Fact::new(DType::Bool, Shape(vec![])), false);
    let sum = input(&mut g, "sum", f32s(&[1]), false);
    let x = input(&mut g, "x", f32s(&[1]), true);
    let next = node(&mut g, "next", add(), &[sum, x]);
    g.outputs = vec![cond, next, next];
    g
}

#[test]
fn loop_with_trip_count_carries_and_stacks() {
    let op = Op::Control(ControlOp::Loop { body: sum_body() });
    let g = outer(
        op,
        &[Some(("M", Fact::new(DType::I64, Shape(vec![])))), None, Some(("init", f32s(&[1]))), Some(("x", f32s(&[1])))],
        2,
    );
    let one = |v: f32| Tensor::from_vec(vec![1], vec![v]).unwrap();
    let y = kiln_cpu::run(&g, &[Tensor::scalar(3i64), one(1.0), one(2.0)]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![7.0]);
    assert_eq!(y[1].shape(), &[3, 1]);
    assert_eq!(y[1].to_vec::<f32>().unwrap(), vec![3.0, 5.0, 7.0]);
    // Zero iterations: the initial value and an empty scan output.
    let y = kiln_cpu::run(&g, &[Tensor::scalar(0i64), one(1.0), one(2.0)]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.0]);
    assert_eq!(y[1].shape(), &[0, 1]);
}

#[test]
fn scan_reverse_input_and_output_axis() {
    let mut body = Graph::new("body");
    let s = input(&mut body, "s", f32s(&[2]), false);
    let x = input(&mut body, "x", f32s(&[2]), false);
    let next = node(&mut body, "next", add(), &[s, x]);
    body.outputs = vec![next, next];
    let scan = Scan {
        body,
        batched: false,
        num_scan_inputs: 1,
        input_axes: vec![0],
        input_reverse: vec![true],
        output_axes: vec![1],
        output_reverse: vec![false],
    };
    let g = outer(Op::Control(ControlOp::Scan(scan)), &[Some(("s0", f32s(&[2]))), Some(("xs", f32s(&[3, 2])))], 2);
    assert_eq!(g.fact(g.outputs[1]).unwrap().shape, Some(Shape::known(&[2, 3])));
    let s0 = Tensor::from_vec(vec![2], vec![0f32, 0.0]).unwrap();
    let xs = Tensor::from_vec(vec![3, 2], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let y = kiln_cpu::run(&g, &[s0, xs]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![9.0, 12.0]);
    assert_eq!(y[1].shape(), &[2, 3]);
    assert_eq!(y[1].to_vec::<f32>().unwrap(), vec![5.0, 8.0, 9.0, 6.0, 10.0, 12.0]);
}

#[test]
fn scan8_scans_each_batch_element_up_to_its_length() {
    let mut body = Graph::new("body");
    let s = input(&mut body, "s", f32s(&[1]), false);
    let x = input(&mut body, "x", f32s(&[1]), false);
    let next = node(&mut body, "next", add(), &[s, x]);
    body.outputs = vec![next, next];
    let scan = Scan {
        body,
        batched: true,
        num_scan_inputs: 1,
        input_axes: vec![0],
        input_reverse: vec![false],
        output_axes: vec![0],
        output_reverse: vec![false],
    };
    let lens_fact = Fact::new(DType::I64, Shape::known(&[2]));
    let g = outer(
        Op::Control(ControlOp::Scan(scan)),
        &[Some(("lens", lens_fact)), Some(("s0", f32s(&[2, 1]))), Some(("xs", f32s(&[2, 3, 1])))],
        2,
    );
    let lens = Tensor::from_vec(vec![2], vec![3i64, 1]).unwrap();
    let s0 = Tensor::from_vec(vec![2, 1], vec![0f32, 0.0]).unwrap();
    let xs = Tensor::from_vec(vec![2, 3, 1], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let y = kiln_cpu::run(&g, &[lens.clone(), s0.clone(), xs.clone()]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![6.0, 4.0]);
    assert_eq!(y[1].shape(), &[2, 3, 1]);
    assert_eq!(y[1].to_vec::<f32>().unwrap(), vec![1.0, 3.0, 6.0, 4.0, 0.0, 0.0]);
    let too_long = Tensor::from_vec(vec![2], vec![4i64, 1]).unwrap();
    assert!(kiln_cpu::run(&g, &[too_long, s0, xs]).is_err());
}
