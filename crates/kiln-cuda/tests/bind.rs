//! Binding a graph to one build's inputs: shapes, and the values of shape tensors
//! (inputs only read as host operands), which makes shapes that depend on them known.

use kiln_cuda::bind::{ValueBinding, bind_inputs, fully_known, shape_tensor_inputs};
use kiln_cuda::executor::{Options, lower};
use kiln_cuda::plan::ExecutionPlan;
use kiln_ir::ops::elementwise::UnaryOp;
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::{ElementwiseOp, Op};
use kiln_ir::{DType, Dim, Graph, NetworkDefinition, Shape, Tensor};

/// y = Relu(Reshape(x, shape)), with `shape` a graph input; `n` a size read as data too.
fn reshape_by_input() -> Graph {
    let mut net = NetworkDefinition::new("reshape_by_input");
    let x = net.add_input("x", DType::F32, Shape(vec![Dim::sym("n"), Dim::Known(6)]));
    let shape = net.add_input("shape", DType::I64, Shape::known(&[2]));
    let r = net.add("reshape", Op::Movement(MovementOp::Reshape { allowzero: false }), &[x, shape]).unwrap();
    let y = net.add("relu", Op::Elementwise(ElementwiseOp::Unary(UnaryOp::Relu)), &[r]).unwrap();
    net.mark_output(y, "y").unwrap();
    net.build()
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

#[test]
fn a_reshape_target_read_from_an_input_is_a_shape_tensor() {
    assert_eq!(shape_tensor_inputs(&reshape_by_input()), vec![false, true]);
}

#[test]
fn binding_a_shape_tensor_makes_the_graph_plannable_and_records_the_value() {
    let g = reshape_by_input();
    let x = Tensor::from_vec(vec![2, 6], vec![0.5f32; 12]).unwrap();
    let bound = bind_inputs(&g, &[x.clone(), ints(&[3, 4])], ValueBinding::ShapeTensors).unwrap();
    assert!(fully_known(&bound));
    let plan = ExecutionPlan::new(&bound).unwrap();
    assert_eq!(plan.slot(plan.outputs[0]).shape, vec![3, 4]);
    assert_eq!(plan.bound_inputs[0], None);
    assert_eq!(plan.bound_inputs[1].as_ref().unwrap().to_i64_vec().unwrap(), vec![3, 4]);
    assert!(plan.constant(plan.inputs[1]).is_some());
    lower(&plan, &Options::default()).unwrap();
    // Binding shapes only leaves the reshaped value unknown.
    let shapes_only = kiln_cuda::plan::bind_input_shapes(&g, &[vec![2, 6], vec![2]]).unwrap();
    assert!(!fully_known(&shapes_only));
}

#[test]
fn a_shape_tensor_of_the_wrong_dtype_is_an_input_error() {
    let g = reshape_by_input();
    let x = Tensor::from_vec(vec![2, 6], vec![0.5f32; 12]).unwrap();
    let bad = Tensor::from_vec(vec![2], vec![3i32, 4]).unwrap();
    let e = bind_inputs(&g, &[x, bad], ValueBinding::ShapeTensors).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
}
