//! FP16 builds (`--fp16`): the graph computes in f16 where it computed in f32, keeps
//! f32 inputs and outputs, plans and lowers, and (on the CPU reference) stays within
//! relative L2 1e-2 of the f32 graph.

mod support;

use kiln_cuda::executor::{Options, lower};
use kiln_cuda::plan::ExecutionPlan;
use kiln_cuda::precision::reduce_precision;
use kiln_ir::ops::elementwise::{BinaryOp, UnaryOp};
use kiln_ir::ops::nn::NnOp;
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Graph, NetworkDefinition, Shape};
use support::*;

/// y = tanh(x·w + b); z = Cast<f32>(x) * 2 (a cast to f32 becomes a cast to f16).
fn graph() -> Graph {
    let mut net = NetworkDefinition::new("fp16");
    let x = net.add_input("x", DType::F32, Shape::known(&[4, 16]));
    let w = net.add_constant("w", tensor(DType::F32, &[16, 8], 3));
    let b = net.add_constant("b", tensor(DType::F32, &[8], 4));
    let m = net.add("mm", Op::Nn(NnOp::MatMul), &[x, w]).unwrap();
    let a = net.add("add", bin(BinaryOp::Add), &[m, b]).unwrap();
    let t = net.add("tanh", un(UnaryOp::Tanh), &[a]).unwrap();
    out(&mut net, t, "y");
    let c = net.add("cast", el(ElementwiseOp::Cast { to: DType::F32, saturate: true }), &[x]).unwrap();
    let two = net.add_constant("two", scalar(2.0));
    let z = net.add("twice", bin(BinaryOp::Mul), &[c, two]).unwrap();
    out(&mut net, z, "z");
    net.build()
}

#[test]
fn an_fp16_build_keeps_f32_io_and_computes_in_f16() {
    let g = graph();
    let h = reduce_precision(&g, DType::F16).unwrap();
    for &o in &h.inputs {
        assert_eq!(h.fact(o).unwrap().dtype, Some(DType::F32));
    }
    let names: Vec<&str> = h.outputs.iter().map(|&o| h.outlet_name(o)).collect();
    assert_eq!(names, ["y", "z"]);
    for &o in &h.outputs {
        assert_eq!(h.fact(o).unwrap().dtype, Some(DType::F32));
    }
    let mm = h.nodes.iter().find(|n| n.name == "mm").unwrap();
    assert_eq!(mm.outputs[0].fact.dtype, Some(DType::F16));
    let plan = ExecutionPlan::new(&h).unwrap();
    lower(&plan, &Options::default()).unwrap();
    let x = tensor(DType::F32, &[4, 16], 9);
    let want = kiln_cpu::run(&g, std::slice::from_ref(&x)).unwrap();
    let got = kiln_cpu::run(&h, &[x]).unwrap();
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        compare("fp16", &format!("output {k}"), w, g, 1e-2);
    }
}
