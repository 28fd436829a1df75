//! Data-dependent shapes on the GPU (`kiln_cuda::dynamic`): NonZero, Compress and
//! NonMaxSuppression, with work before and after them, run in segments and checked
//! exactly against `kiln_cpu::run`.

mod support;

use kiln_cuda::bind::{ValueBinding, bind_inputs, fully_known};
use kiln_cuda::dynamic::DynamicRunner;
use kiln_cuda::{Device, Options};
use kiln_ir::ops::elementwise::UnaryOp;
use kiln_ir::ops::movement::MovementOp;
use kiln_ir::ops::{Op, VisionOp};
use kiln_ir::{DType, Graph, NetworkDefinition, Shape, Tensor};
use support::*;

/// y = Relu(x) (zeros where x < 0); NonZero(y) + 1 as f32; Compress of x by a mask on
/// axis 1 and flattened.
fn nonzero_and_compress() -> Graph {
    let mut net = NetworkDefinition::new("nonzero");
    let x = net.add_input("x", DType::F32, Shape::known(&[3, 5]));
    let m = net.add_input("mask", DType::Bool, Shape::known(&[5]));
    let r = net.add("relu", un(UnaryOp::Relu), &[x]).unwrap();
    let nz = net.add("nonzero", mv(MovementOp::NonZero), &[r]).unwrap();
    let f = net.add("to_f32", el(kiln_ir::ops::ElementwiseOp::Cast { to: DType::F32, saturate: true }), &[nz]).unwrap();
    let one = net.add_constant("one", scalar(1.0));
    let p = net.add("plus_one", bin(kiln_ir::ops::elementwise::BinaryOp::Add), &[f, one]).unwrap();
    out(&mut net, p, "coords");
    let c1 = net.add("compress1", mv(MovementOp::Compress { axis: Some(1) }), &[x, m]).unwrap();
    let e = net.add("exp", un(UnaryOp::Exp), &[c1]).unwrap();
    out(&mut net, e, "compressed");
    let c0 = net.add("compress_flat", mv(MovementOp::Compress { axis: None }), &[x, m]).unwrap();
    out(&mut net, c0, "flat");
    net.build()
}

fn nms() -> Graph {
    let mut net = NetworkDefinition::new("nms");
    let b = net.add_input("boxes", DType::F32, Shape::known(&[2, 40, 4]));
    let s = net.add_input("scores", DType::F32, Shape::known(&[2, 3, 40]));
    let max = net.add_constant("max", Tensor::from_vec(vec![1], vec![7i64]).unwrap());
    let iou = net.add_constant("iou", Tensor::from_vec(vec![1], vec![0.3f32]).unwrap());
    let smin = net.add_constant("smin", Tensor::from_vec(vec![1], vec![-0.5f32]).unwrap());
    let op = Op::Vision(VisionOp::NonMaxSuppression { center_point_box: false });
    let y = net.add("nms", op, &[b, s, max, iou, smin]).unwrap();
    out(&mut net, y, "selected");
    net.build()
}

fn prepare(g: &Graph, inputs: &[Tensor]) -> kiln_cuda::Result<Graph> {
    bind_inputs(g, inputs, ValueBinding::ShapeTensors)
}

#[test]
fn data_dependent_graphs_do_not_plan_in_one_piece() {
    let x = tensor(DType::F32, &[3, 5], 1);
    let m = tensor(DType::Bool, &[5], 2);
    let bound = prepare(&nonzero_and_compress(), &[x, m]).unwrap();
    assert!(!fully_known(&bound));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn data_dependent_shapes_run_in_segments_and_match_the_cpu() {
    let dev = Device::open(0).expect("a GPU");
    let runner = DynamicRunner::new(&dev, Options::default(), &prepare);
    // Boxes: corners in [0, 1) (y0, x0, y1, x1 in any order), many overlapping.
    let boxes = tensor(DType::F32, &[2, 40, 4], 5);
    let cases: Vec<(Graph, Vec<Tensor>)> = vec![
        (nonzero_and_compress(), vec![tensor(DType::F32, &[3, 5], 1), tensor(DType::Bool, &[5], 2)]),
        (nms(), vec![boxes, tensor(DType::F32, &[2, 3, 40], 6)]),
    ];
    for (g, inputs) in cases {
        let want = kiln_cpu::run(&g, &inputs).unwrap();
        let got = runner.run(&g, &inputs).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_eq!(want.len(), got.len());
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            compare(&g.name, &format!("output {k}"), w, o, 1e-6);
        }
        eprintln!("{}: ok ({} executors built so far)", g.name, runner.builds.get());
    }
}
