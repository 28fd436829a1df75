//! CenterCropPad: crop (or zero-pad) the listed axes to a target size around the centre.

use kiln_ir::Tensor;
use kiln_ir::ops::normalize_axis;
use ndarray::{ArrayD, IxDyn, Slice};

use crate::array::{req, tensor_as, view};
use crate::{CpuError, Result, dispatch};

const OP: &str = "CenterCropPad";

pub fn center_crop_pad(axes: Option<&[i64]>, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let (x, shape_t) = (req(inputs, 0, OP)?, req(inputs, 1, OP)?);
    let target = shape_t.to_i64_vec()?;
    let rank = x.rank();
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(a) => a.iter().map(|&v| normalize_axis(v, rank, OP)).collect::<kiln_ir::Result<_>>()?,
    };
    if axes.len() != target.len() {
        return Err(CpuError::invalid(OP, format!("{} target sizes for {} axes", target.len(), axes.len())));
    }
    let mut out_shape = x.shape().to_vec();
    for (&a, &t) in axes.iter().zip(&target) {
        out_shape[a] = usize::try_from(t).map_err(|_| CpuError::invalid(OP, format!("negative target size {t}")))?;
    }
    dispatch!(any, x.dtype(), OP, T => {
        let src = view::<T>(x)?;
        let mut out = ArrayD::<T>::zeros(IxDyn(&out_shape));
        let (mut s, mut d) = (src.view(), out.view_mut());
        for (a, (&n, &m)) in x.shape().iter().zip(&out_shape).enumerate() {
            // Cropping takes the centre (the extra element on the right, as the
            // reference's floor((n - m) / 2) start); padding puts the source there.
            if n >= m {
                let start = (n - m) / 2;
                s.slice_axis_inplace(ndarray::Axis(a), Slice::from(start..start + m));
            } else {
                let start = (m - n) / 2;
                d.slice_axis_inplace(ndarray::Axis(a), Slice::from(start..start + n));
            }
        }
        d.assign(&s);
        Ok(tensor_as(x.dtype(), out))
    })
}
