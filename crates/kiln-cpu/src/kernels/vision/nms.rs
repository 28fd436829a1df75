//! NonMaxSuppression: per batch and class, greedily keep the best-scoring boxes that do
//! not overlap an already kept box by more than the IoU threshold.
//!
//! Arithmetic is in f32, as ONNX Runtime and the reference do, so boxes exactly at the
//! threshold are decided the same way.

use kiln_ir::{DType, Tensor};

use crate::array::{opt, req};
use crate::{CpuError, Result};

const OP: &str = "NonMaxSuppression";

/// A box as (x_min, x_max, y_min, y_max).
#[derive(Clone, Copy)]
struct Box4 {
    x0: f32,
    x1: f32,
    y0: f32,
    y1: f32,
}

impl Box4 {
    fn new(v: &[f32], center_point_box: bool) -> Box4 {
        if center_point_box {
            let (hw, hh) = (v[2] / 2.0, v[3] / 2.0);
            Box4 { x0: v[0] - hw, x1: v[0] + hw, y0: v[1] - hh, y1: v[1] + hh }
        } else {
            Box4 { x0: v[1].min(v[3]), x1: v[1].max(v[3]), y0: v[0].min(v[2]), y1: v[0].max(v[2]) }
        }
    }

    fn area(&self) -> f32 {
        (self.x1 - self.x0) * (self.y1 - self.y0)
    }

    /// Whether `self` and `o` overlap by more than `threshold` (IoU).
    fn suppresses(&self, o: &Box4, threshold: f32) -> bool {
        let (ix0, ix1) = (self.x0.max(o.x0), self.x1.min(o.x1));
        let (iy0, iy1) = (self.y0.max(o.y0), self.y1.min(o.y1));
        if ix1 <= ix0 || iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let (a, b) = (self.area(), o.area());
        let union = a + b - inter;
        if inter <= 0.0 || a <= 0.0 || b <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > threshold
    }
}

fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        DType::F32 => t.to_vec::<f32>()?,
        _ => t.to_f64_vec()?.into_iter().map(|v| v as f32).collect(),
    })
}

fn first_f32(t: Option<&Tensor>) -> Result<Option<f32>> {
    Ok(t.map(f32s).transpose()?.and_then(|v| v.first().copied()))
}

pub fn nms(center_point_box: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let (boxes_t, scores_t) = (req(inputs, 0, OP)?, req(inputs, 1, OP)?);
    let (&[nb, n, four], &[sb, nc, sn]) = (boxes_t.shape(), scores_t.shape()) else {
        return Err(CpuError::invalid(OP, "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes]"));
    };
    if four != 4 || nb != sb || n != sn {
        return Err(CpuError::invalid(
            OP,
            format!("boxes {:?} and scores {:?} do not match", boxes_t.shape(), scores_t.shape()),
        ));
    }
    let max_out = match opt(inputs, 2) {
        Some(t) => t.to_i64_vec()?.first().copied().unwrap_or(0).max(0) as usize,
        None => 0,
    };
    let iou = first_f32(opt(inputs, 3))?.unwrap_or(0.0);
    let score_min = first_f32(opt(inputs, 4))?;
    let (boxes, scores) = (f32s(boxes_t)?, f32s(scores_t)?);
    let mut selected: Vec<i64> = Vec::new();
    for b in 0..nb {
        let bx: Vec<Box4> =
            (0..n).map(|i| Box4::new(&boxes[(b * n + i) * 4..(b * n + i) * 4 + 4], center_point_box)).collect();
        for c in 0..nc {
            let s = &scores[(b * nc + c) * n..(b * nc + c + 1) * n];
            let mut cand: Vec<usize> = (0..n).filter(|&i| score_min.is_none_or(|m| s[i] > m)).collect();
            // Best score first; ties keep the lower index first.
            cand.sort_by(|&i, &j| s[j].partial_cmp(&s[i]).unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j)));
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| !bx[i].suppresses(&bx[k], iou)) {
                    kept.push(i);
                    selected.extend([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    let rows = selected.len() / 3;
    Ok(Tensor::from_vec(vec![rows, 3], selected)?)
}
