//! Image ops: resampling (Resize/Upsample, GridSample, AffineGrid), RoiAlign,
//! NonMaxSuppression and CenterCropPad.

use super::{OpFamily, normalize_axis, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape, Tensor};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VisionOp {
    /// Resize (opsets 10..19) and the deprecated Upsample (7, 9).
    Resize(Resize),
    /// Inputs X `[N, C, D1..Dr]`, grid `[N, O1..Or, r]`.
    GridSample(GridSample),
    /// Inputs theta `[N, r, r+1]`, size (`[N, C, D1..Dr]` as a 1-D tensor).
    AffineGrid { align_corners: bool },
    /// Inputs X `[N, C, H, W]`, rois `[R, 4]`, batch_indices `[R]`.
    RoiAlign(RoiAlign),
    /// Inputs boxes, scores, max_output_boxes_per_class?, iou_threshold?, score_threshold?.
    NonMaxSuppression { center_point_box: bool },
    /// Inputs X, shape; crops or pads `axes` (all when `None`) around the centre.
    CenterCropPad { axes: Option<Vec<i64>> },
}

/// Interpolation kernel, shared by Resize and GridSample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Interp {
    Nearest,
    Linear,
    Cubic,
}

/// How an output coordinate maps back to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// Opsets 11 and 13 only.
    TfHalfPixelForNn,
    TfCropAndResize,
}

/// How a fractional coordinate picks a pixel in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Upsample and Resize-10 (as ONNX Runtime): floor when upsampling, ceil when downsampling.
    Simple,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeepAspect {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where a Resize node's scales/sizes/roi come from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ResizeInputs {
    /// Upsample-7: scales attribute, X the only input.
    ScalesAttr(Vec<f32>),
    /// Upsample-9, Resize-10: inputs X, scales.
    Scales,
    /// Resize-11+: inputs X, roi?, scales?, sizes?.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResizeKind {
    Resize,
    Upsample,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resize {
    pub kind: ResizeKind,
    pub inputs: ResizeInputs,
    pub mode: Interp,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub keep_aspect: KeepAspect,
}

/// Output shape and per-axis scale of a resize, from the input shape and either scales or
/// sizes (both given over `axes`, or over all dims).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResizePlan {
    pub out_shape: Vec<usize>,
    pub scales: Vec<f64>,
    /// Per dim: the `[start, end]` region of interest (tf_crop_and_resize), `[0, 1]` otherwise.
    pub roi: Vec<(f64, f64)>,
}

impl Resize {
    pub fn name(&self) -> &'static str {
        match self.kind {
            ResizeKind::Resize => "Resize",
            ResizeKind::Upsample => "Upsample",
        }
    }

    /// Indices of the scales, sizes and roi inputs for this node's layout.
    pub fn input_slots(&self) -> (Option<usize>, Option<usize>, Option<usize>) {
        match self.inputs {
            ResizeInputs::ScalesAttr(_) => (None, None, None),
            ResizeInputs::Scales => (Some(1), None, None),
            ResizeInputs::Full => (Some(2), Some(3), Some(1)),
        }
    }

    fn axes_for(&self, rank: usize) -> Result<Vec<usize>> {
        match &self.axes {
            None => Ok((0..rank).collect()),
            Some(a) => {
                let axes = a.iter().map(|&x| normalize_axis(x, rank, self.name())).collect::<Result<Vec<_>>>()?;
                let mut seen = axes.clone();
                seen.sort_unstable();
                seen.dedup();
                if seen.len() != axes.len() {
                    return Err(IrError::invalid(self.name(), format!("axes {a:?} repeat an axis")));
                }
                Ok(axes)
            }
        }
    }

    /// The resize plan; `scales`, `sizes` and `roi` are the (non-empty) input values.
    pub fn plan(
        &self,
        in_shape: &[usize],
        scales: Option<&[f32]>,
        sizes: Option<&[i64]>,
        roi: Option<&[f64]>,
    ) -> Result<ResizePlan> {
        let name = self.name();
        let rank = in_shape.len();
        let axes = self.axes_for(rank)?;
        let scales = match (&self.inputs, scales) {
            (ResizeInputs::ScalesAttr(s), _) => Some(s.as_slice()),
            (_, s) => s,
        };
        let mut out_shape = in_shape.to_vec();
        let mut axis_scales = vec![1.0f64; rank];
        match (scales, sizes) {
            (Some(_), Some(_)) => return Err(IrError::invalid(name, "only one of scales and sizes may be given")),
            (None, None) => return Err(IrError::invalid(name, "one of scales and sizes is required")),
            (Some(s), None) => {
                if s.len() != axes.len() {
                    return Err(IrError::invalid(name, format!("{} scales for {} axes", s.len(), axes.len())));
                }
                for (&a, &sc) in axes.iter().zip(s) {
                    if sc.is_nan() || sc <= 0.0 || sc.is_infinite() {
                        return Err(IrError::invalid(name, format!("scale {sc} must be positive")));
                    }
                    axis_scales[a] = sc as f64;
                    // In f32, as ONNX Runtime (the reference uses f64): 60 × 2.3f is 138,
                    // not 137.99….
                    out_shape[a] = (sc * in_shape[a] as f32) as usize;
                }
            }
            (None, Some(z)) => {
                if z.len() != axes.len() {
                    return Err(IrError::invalid(name, format!("{} sizes for {} axes", z.len(), axes.len())));
                }
                if let Some(&bad) = z.iter().find(|&&v| v < 0) {
                    return Err(IrError::invalid(name, format!("size {bad} is negative")));
                }
                let ratio = |a: usize, v: i64| if in_shape[a] == 0 { 1.0 } else { v as f64 / in_shape[a] as f64 };
                match self.keep_aspect {
                    KeepAspect::Stretch => {
                        for (&a, &v) in axes.iter().zip(z) {
                            out_shape[a] = v as usize;
                            axis_scales[a] = ratio(a, v);
                        }
                    }
                    policy => {
                        let rs = axes.iter().zip(z).map(|(&a, &v)| ratio(a, v));
                        let s = if policy == KeepAspect::NotLarger {
                            rs.fold(f64::INFINITY, f64::min)
                        } else {
                            rs.fold(f64::NEG_INFINITY, f64::max)
                        };
                        for &a in &axes {
                            axis_scales[a] = s;
                            out_shape[a] = (s * in_shape[a] as f64 + 0.5) as usize;
                        }
                    }
                }
            }
        }
        let mut full_roi = vec![(0.0, 1.0); rank];
        if let Some(r) = roi
            && self.coord == CoordMode::TfCropAndResize
        {
            let n = r.len() / 2;
            if r.len() % 2 != 0 || (n != axes.len() && n != rank) {
                return Err(IrError::invalid(name, format!("roi has {} values for rank {rank}", r.len())));
            }
            if n == rank && axes.len() != rank {
                for a in 0..rank {
                    full_roi[a] = (r[a], r[rank + a]);
                }
            } else {
                for (i, &a) in axes.iter().enumerate() {
                    full_roi[a] = (r[i], r[n + i]);
                }
            }
        }
        Ok(ResizePlan { out_shape, scales: axis_scales, roi: full_roi })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GridPadding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridSample {
    pub mode: Interp,
    pub padding: GridPadding,
    pub align_corners: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoiPool {
    Avg,
    Max,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoiAlign {
    pub mode: RoiPool,
    pub output_height: usize,
    pub output_width: usize,
    pub sampling_ratio: usize,
    pub spatial_scale: f32,
    /// `half_pixel` (opset 16 default) shifts roi coordinates by -0.5.
    pub half_pixel: bool,
}

impl OpFamily for VisionOp {
    fn name(&self) -> &'static str {
        match self {
            VisionOp::Resize(r) => r.name(),
            VisionOp::GridSample(_) => "GridSample",
            VisionOp::AffineGrid { .. } => "AffineGrid",
            VisionOp::RoiAlign(_) => "RoiAlign",
            VisionOp::NonMaxSuppression { .. } => "NonMaxSuppression",
            VisionOp::CenterCropPad { .. } => "CenterCropPad",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        let name = self.name();
        let x = required(inputs, 0, name)?;
        match self {
            VisionOp::Resize(r) => infer_resize(r, x, inputs),
            VisionOp::GridSample(_) => {
                let grid = required(inputs, 1, name)?;
                let shape = match (&x.shape, &grid.shape) {
                    (Some(xs), Some(gs)) => {
                        if xs.rank() < 3 || gs.rank() != xs.rank() {
                            return Err(IrError::invalid(name, format!("X {xs} and grid {gs} ranks do not fit")));
                        }
                        let mut d = vec![xs.0[0].clone(), xs.0[1].clone()];
                        d.extend(gs.0[1..gs.rank() - 1].iter().cloned());
                        Some(Shape(d))
                    }
                    _ => None,
                };
                Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
            }
            VisionOp::AffineGrid { .. } => {
                let size = required(inputs, 1, name)?;
                let shape = size.value.as_ref().and_then(|v| v.to_i64_vec().ok()).map(|s| {
                    let mut d: Vec<Dim> = vec![Dim::Known(s[0].max(0) as usize)];
                    d.extend(s.iter().skip(2).map(|&v| Dim::Known(v.max(0) as usize)));
                    d.push(Dim::Known(s.len().saturating_sub(2)));
                    Shape(d)
                });
                Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
            }
            VisionOp::RoiAlign(r) => {
                let rois = required(inputs, 1, name)?;
                let c = x.shape.as_ref().and_then(|s| s.0.get(1).cloned()).unwrap_or(Dim::Unknown);
                let n = rois.shape.as_ref().and_then(|s| s.0.first().cloned()).unwrap_or(Dim::Unknown);
                let shape = Shape(vec![n, c, Dim::Known(r.output_height), Dim::Known(r.output_width)]);
                Ok(vec![Fact { dtype: x.dtype, shape: Some(shape), value: None }])
            }
            VisionOp::NonMaxSuppression { .. } => {
                Ok(vec![Fact::new(DType::I64, Shape(vec![Dim::Unknown, Dim::Known(3)]))])
            }
            VisionOp::CenterCropPad { axes } => {
                let shape_in = required(inputs, 1, name)?;
                let shape = match (&x.shape, shape_in.value.as_ref().and_then(|v| v.to_i64_vec().ok())) {
                    (Some(xs), Some(target)) => {
                        let axes: Vec<usize> = match axes {
                            None => (0..xs.rank()).collect(),
                            Some(a) => a.iter().map(|&v| normalize_axis(v, xs.rank(), name)).collect::<Result<_>>()?,
                        };
                        if axes.len() != target.len() {
                            return Err(IrError::invalid(name, "shape and axes lengths differ"));
                        }
                        let mut d = xs.0.clone();
                        for (&a, &t) in axes.iter().zip(&target) {
                            d[a] = Dim::Known(t.max(0) as usize);
                        }
                        Some(Shape(d))
                    }
                    (Some(xs), None) => Some(Shape(vec![Dim::Unknown; xs.rank()])),
                    _ => None,
                };
                Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
            }
        }
    }
}

fn const_f32(f: Option<&Fact>) -> Option<Option<Vec<f32>>> {
    match f {
        None => Some(None),
        Some(f) => {
            let v = f.value.as_ref()?;
            let v = v.to_f64_vec().ok()?;
            Some(if v.is_empty() { None } else { Some(v.into_iter().map(|x| x as f32).collect()) })
        }
    }
}

fn infer_resize(r: &Resize, x: &Fact, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
    let (si, zi, ri) = r.input_slots();
    let unknown =
        |rank: Option<usize>| Fact { dtype: x.dtype, shape: rank.map(|n| Shape(vec![Dim::Unknown; n])), value: None };
    let Some(xs) = &x.shape else { return Ok(vec![unknown(None)]) };
    let scales = match si.map(|i| const_f32(optional(inputs, i))) {
        Some(None) => return Ok(vec![unknown(Some(xs.rank()))]),
        Some(Some(s)) => s,
        None => None,
    };
    let sizes = match zi.map(|i| optional(inputs, i)) {
        Some(Some(f)) => match &f.value {
            None => return Ok(vec![unknown(Some(xs.rank()))]),
            Some(v) => Some(v.to_i64_vec()?).filter(|v| !v.is_empty()),
        },
        _ => None,
    };
    let roi: Option<Vec<f64>> =
        ri.and_then(|i| optional(inputs, i)).and_then(|f| f.value.as_ref()).and_then(|v| v.to_f64_vec().ok());
    // Unknown or symbolic dims stand in as 1: an axis the resize leaves alone keeps its
    // dim, one set by `sizes` gets the size, others become unknown.
    let all_known = xs.as_known().is_some();
    let dims: Vec<usize> = xs.0.iter().map(|d| d.known().unwrap_or(1)).collect();
    let plan = r.plan(&dims, scales.as_deref(), sizes.as_deref(), roi.as_deref().filter(|v| !v.is_empty()))?;
    let axes = r.axes_for(dims.len())?;
    let out =
        xs.0.iter()
            .enumerate()
            .map(|(a, d)| {
                let resized = axes.contains(&a);
                let stretch = r.keep_aspect == KeepAspect::Stretch;
                match d {
                    Dim::Known(_) if all_known || stretch || !resized => Dim::Known(plan.out_shape[a]),
                    _ if !resized || (sizes.is_none() && plan.scales[a] == 1.0 && stretch) => d.clone(),
                    _ if sizes.is_some() && stretch => Dim::Known(plan.out_shape[a]),
                    _ => Dim::Unknown,
                }
            })
            .collect();
    Ok(vec![Fact { dtype: x.dtype, shape: Some(Shape(out)), value: None }])
}

/// Used by importers and tests: the f32 values of a constant tensor.
pub fn tensor_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_f64_vec()?.into_iter().map(|v| v as f32).collect())
}
