//! Vision kernels on small graphs with hand-computed expectations.

use kiln_ir::ops::VisionOp;
use kiln_ir::ops::vision::{
    CoordMode, GridPadding, GridSample, Interp, KeepAspect, NearestMode, Resize, ResizeInputs, ResizeKind, RoiAlign,
    RoiPool,
};
use kiln_ir::{DType, NetworkDefinition, Op, Shape, Tensor};

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

/// Runs a one-node graph whose first input is a graph input and the others constants.
fn run1(op: VisionOp, x: Tensor, consts: Vec<Option<Tensor>>) -> kiln_cpu::Result<Tensor> {
    let mut net = NetworkDefinition::new("t");
    let xi = net.add_input("x", x.dtype(), Shape::known(x.shape()));
    let mut ins = vec![Some(xi)];
    for (i, c) in consts.into_iter().enumerate() {
        ins.push(c.map(|c| net.add_constant(&format!("c{i}"), c)));
    }
    let out = net.add_layer_opt("op", Op::Vision(op), ins, 1).map_err(kiln_cpu::CpuError::from)?;
    net.mark_output(out[0], "y").map_err(kiln_cpu::CpuError::from)?;
    let g = net.build();
    Ok(kiln_cpu::run(&g, &[x])?.remove(0))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

fn scales(v: &[f32]) -> Option<Tensor> {
    Some(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
}

#[test]
fn resize_nearest_doubles_pixels() {
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let y = run1(
        VisionOp::Resize(resize_op(Interp::Nearest, CoordMode::Asymmetric)),
        x,
        vec![None, scales(&[1.0, 1.0, 2.0, 2.0])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    assert_eq!(f32s(&y), vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
}

#[test]
fn resize_nearest_copies_integers_exactly() {
    let x = Tensor::from_vec(vec![1, 3], vec![i64::MAX, -7, 9]).unwrap();
    let y =
        run1(VisionOp::Resize(resize_op(Interp::Nearest, CoordMode::Asymmetric)), x, vec![None, scales(&[1.0, 2.0])])
            .unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![i64::MAX, i64::MAX, -7, -7, 9, 9]);
}

#[test]
fn resize_linear_half_pixel() {
    // f(x, y) = 1 + x + 2y on a 2×2 grid; half-pixel upsampling by 2 samples it at
    // clamped offsets w = [0, .25, .75, 1].
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let y = run1(
        VisionOp::Resize(resize_op(Interp::Linear, CoordMode::HalfPixel)),
        x,
        vec![None, scales(&[1.0, 1.0, 2.0, 2.0])],
    )
    .unwrap();
    let w = [0.0f32, 0.25, 0.75, 1.0];
    let want: Vec<f32> = (0..16).map(|k| 1.0 + w[k % 4] + 2.0 * w[k / 4]).collect();
    close(&f32s(&y), &want);
}

#[test]
fn resize_sizes_with_axes_and_align_corners() {
    let mut op = resize_op(Interp::Linear, CoordMode::AlignCorners);
    op.axes = Some(vec![-1]);
    let x = Tensor::from_vec(vec![2, 2], vec![0.0f32, 3.0, 10.0, 16.0]).unwrap();
    let sizes = Tensor::from_vec(vec![1], vec![4i64]).unwrap();
    let y = run1(VisionOp::Resize(op), x, vec![None, None, Some(sizes)]).unwrap();
    assert_eq!(y.shape(), &[2, 4]);
    close(&f32s(&y), &[0.0, 1.0, 2.0, 3.0, 10.0, 12.0, 14.0, 16.0]);
}

#[test]
fn resize_rejects_bad_scales() {
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32; 4]).unwrap();
    let op = VisionOp::Resize(resize_op(Interp::Nearest, CoordMode::Asymmetric));
    assert!(run1(op.clone(), x.clone(), vec![None, scales(&[2.0, 2.0])]).is_err());
    assert!(run1(op, x, vec![None, scales(&[1.0, 1.0, -2.0, 2.0])]).is_err());
}

#[test]
fn grid_sample_identity_grid_reproduces_input() {
    let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    // align_corners: -1 and 1 are the centres of the corner pixels.
    let mut grid = Vec::new();
    for yy in [-1.0f32, 1.0] {
        for xx in [-1.0f32, 0.0, 1.0] {
            grid.extend([xx, yy]);
        }
    }
    let grid = Tensor::from_vec(vec![1, 2, 3, 2], grid).unwrap();
    let op = GridSample { mode: Interp::Linear, padding: GridPadding::Zeros, align_corners: true };
    let y = run1(VisionOp::GridSample(op), x, vec![Some(grid)]).unwrap();
    close(&f32s(&y), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn grid_sample_padding_modes_outside() {
    let x = Tensor::from_vec(vec![1, 1, 1, 2], vec![10.0f32, 20.0]).unwrap();
    let grid = Tensor::from_vec(vec![1, 1, 1, 2], vec![3.0f32, 0.0]).unwrap();
    let run = |padding| {
        let op = GridSample { mode: Interp::Nearest, padding, align_corners: true };
        f32s(&run1(VisionOp::GridSample(op), x.clone(), vec![Some(grid.clone())]).unwrap())
    };
    assert_eq!(run(GridPadding::Zeros), vec![0.0]);
    assert_eq!(run(GridPadding::Border), vec![20.0]);
    // Normalised 3 is pixel 2 (align_corners, width 2): reflected off pixel 1 → pixel 0.
    assert_eq!(run(GridPadding::Reflection), vec![10.0]);
}

#[test]
fn affine_grid_identity() {
    let theta = Tensor::from_vec(vec![1, 2, 3], vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    let size = Tensor::from_vec(vec![4], vec![1i64, 1, 2, 2]).unwrap();
    let y = run1(VisionOp::AffineGrid { align_corners: true }, theta, vec![Some(size)]).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 2]);
    close(&f32s(&y), &[-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn nms_suppresses_overlaps() {
    // Box 1 overlaps box 0 (IoU 0.81); box 2 is apart.
    let boxes =
        Tensor::from_vec(vec![1, 3, 4], vec![0.0f32, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, 5.0, 1.0, 6.0]).unwrap();
    let scores = Tensor::from_vec(vec![1, 1, 3], vec![0.9f32, 0.95, 0.3]).unwrap();
    let max = Tensor::from_vec(vec![1], vec![10i64]).unwrap();
    let iou = Tensor::from_vec(vec![1], vec![0.5f32]).unwrap();
    let op = VisionOp::NonMaxSuppression { center_point_box: false };
    let y = run1(op.clone(), boxes.clone(), vec![Some(scores.clone()), Some(max), Some(iou.clone())]).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![0, 0, 1, 0, 0, 2]);
    let one = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
    let y = run1(op, boxes, vec![Some(scores), Some(one), Some(iou)]).unwrap();
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![0, 0, 1]);
}

#[test]
fn roi_align_average_of_ramp() {
    // X[y][x] = x on a 4×4 image; the bilinear samples of a ramp are the ramp itself.
    let x = Tensor::from_vec(vec![1, 1, 4, 4], (0..16).map(|i| (i % 4) as f32).collect()).unwrap();
    let rois = Tensor::from_vec(vec![1, 4], vec![0.0f32, 0.0, 2.0, 2.0]).unwrap();
    let idx = Tensor::from_vec(vec![1], vec![0i64]).unwrap();
    let op = RoiAlign {
        mode: RoiPool::Avg,
        output_height: 1,
        output_width: 2,
        sampling_ratio: 2,
        spatial_scale: 1.0,
        half_pixel: false,
    };
    let y = run1(VisionOp::RoiAlign(op), x.clone(), vec![Some(rois.clone()), Some(idx)]).unwrap();
    // Bin 0 samples x = 0.25, 0.75; bin 1 samples x = 1.25, 1.75.
    close(&f32s(&y), &[0.5, 1.5]);
    let bad = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    let op = RoiAlign {
        mode: RoiPool::Max,
        output_height: 1,
        output_width: 1,
        sampling_ratio: 1,
        spatial_scale: 1.0,
        half_pixel: true,
    };
    assert!(run1(VisionOp::RoiAlign(op), x, vec![Some(rois), Some(bad)]).is_err());
}

#[test]
fn center_crop_pad_crops_and_pads() {
    let x = Tensor::from_vec(vec![2, 4], (1..=8).map(|v| v as f32).collect()).unwrap();
    let shape = Tensor::from_vec(vec![2], vec![4i64, 2]).unwrap();
    let y = run1(VisionOp::CenterCropPad { axes: None }, x.clone(), vec![Some(shape)]).unwrap();
    assert_eq!(y.shape(), &[4, 2]);
    assert_eq!(f32s(&y), vec![0., 0., 2., 3., 6., 7., 0., 0.]);
    let shape = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    assert!(run1(VisionOp::CenterCropPad { axes: Some(vec![5]) }, x, vec![Some(shape)]).is_err());
}

#[test]
fn infer_resize_shape_from_constant_scales() {
    let mut net = NetworkDefinition::new("t");
    let x = net.add_input("x", DType::F32, Shape::known(&[1, 3, 5, 7]));
    let s = net.add_constant("s", scales(&[1.0, 1.0, 2.0, 0.5]).unwrap());
    let op = Op::Vision(VisionOp::Resize(resize_op(Interp::Nearest, CoordMode::HalfPixel)));
    let y = net.add_layer_opt("r", op, vec![Some(x), None, Some(s)], 1).unwrap();
    assert_eq!(net.graph().fact(y[0]).unwrap().shape, Some(Shape::known(&[1, 3, 10, 3])));
}

#[test]
fn infer_resize_keeps_symbolic_batch() {
    let mut net = NetworkDefinition::new("t");
    let dims = vec![kiln_ir::Dim::sym("N"), kiln_ir::Dim::Known(3), kiln_ir::Dim::Unknown, kiln_ir::Dim::Known(8)];
    let x = net.add_input("x", DType::F32, Shape(dims));
    let s = net.add_constant("s", scales(&[1.0, 1.0, 2.0, 2.0]).unwrap());
    let op = Op::Vision(VisionOp::Resize(resize_op(Interp::Nearest, CoordMode::HalfPixel)));
    let y = net.add_layer_opt("r", op, vec![Some(x), None, Some(s)], 1).unwrap();
    let want =
        Shape(vec![kiln_ir::Dim::sym("N"), kiln_ir::Dim::Known(3), kiln_ir::Dim::Unknown, kiln_ir::Dim::Known(16)]);
    assert_eq!(net.graph().fact(y[0]).unwrap().shape, Some(want));
}

#[test]
fn resize_tf_crop_and_resize_extrapolates() {
    let mut op = resize_op(Interp::Linear, CoordMode::TfCropAndResize);
    op.extrapolation_value = -1.0;
    op.axes = Some(vec![1]);
    let x = Tensor::from_vec(vec![1, 3], vec![0.0f32, 10.0, 20.0]).unwrap();
    // roi [0.5, 1.5] of the last axis: coordinates 1, 2, 3 (3 lies outside).
    let roi = Tensor::from_vec(vec![2], vec![0.5f32, 1.5]).unwrap();
    let sizes = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    let y = run1(VisionOp::Resize(op), x, vec![Some(roi), None, Some(sizes)]).unwrap();
    close(&f32s(&y), &[10.0, 20.0, -1.0]);
}

#[test]
fn upsample_scales_attribute() {
    let op = Resize {
        kind: ResizeKind::Upsample,
        inputs: ResizeInputs::ScalesAttr(vec![1.0, 3.0]),
        nearest: NearestMode::Simple,
        ..resize_op(Interp::Nearest, CoordMode::Asymmetric)
    };
    let x = Tensor::from_vec(vec![1, 2], vec![5u8, 7]).unwrap();
    let y = run1(VisionOp::Resize(op), x, vec![]).unwrap();
    assert_eq!(y.to_vec::<u8>().unwrap(), vec![5, 5, 5, 7, 7, 7]);
}
