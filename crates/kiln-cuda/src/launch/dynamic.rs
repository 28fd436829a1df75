//! Launchers of `dynamic.cu`: ops whose output size depends on the data. Each uploads its
//! inputs, launches, waits, reads back the count and then that many results, so they
//! run between the executor's segments (see `crate::dynamic`), never inside a CUDA graph.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits};
use kiln_ir::{DType, Tensor};

use super::{Buf, Launcher, launch};
use crate::kernels::DYNAMIC;
use crate::{CudaError, Result};

/// Threads of the NonZero block (its shared scan holds this many).
const NONZERO_THREADS: u32 = 1024;

impl Launcher<'_> {
    fn upload<T: DeviceRepr>(&self, what: &str, v: &[T]) -> Result<CudaSlice<T>> {
        self.dev.stream.clone_htod(v).map_err(|e| CudaError::driver(format!("uploading {what}"), e))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, what: &str, n: usize) -> Result<CudaSlice<T>> {
        self.dev.stream.alloc_zeros(n.max(1)).map_err(|e| CudaError::driver(format!("allocating {what}"), e))
    }

    fn download<T: DeviceRepr + Default + Clone>(&self, what: &str, s: &CudaSlice<T>) -> Result<Vec<T>> {
        self.dev.stream.clone_dtoh(s).map_err(|e| CudaError::driver(format!("reading back {what}"), e))
    }

    /// NonZero of a bool tensor: the `[rank, count]` coordinates of its true elements in
    /// row-major order.
    pub fn nonzero(&self, x: &Tensor) -> Result<Tensor> {
        let op = "NonZero";
        if x.dtype() != DType::Bool {
            return Err(CudaError::invalid(op, format!("the kernel takes bool, not {}", x.dtype())));
        }
        let (n, rank) = (x.len(), x.rank());
        let dims: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        let xs = self.upload("the NonZero input", x.bytes())?;
        let dims_d = self.upload("the NonZero shape", &dims)?;
        let mut out = self.zeros::<i64>("the NonZero output", rank * n)?;
        let mut count = self.zeros::<i64>("the NonZero count", 1)?;
        let stream = &self.dev.stream;
        let (xb, db) = (Buf::of(&xs, stream).addr(), Buf::of(&dims_d, stream).addr());
        let (ob, cb) = (Buf::of_mut(&mut out, stream).addr(), Buf::of_mut(&mut count, stream).addr());
        let (n64, rank32) = (n as i64, rank as i32);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (NONZERO_THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(self, DYNAMIC, "nonzero_b1", cfg; xb, n64, rank32, db, ob, cb)?;
        let k = self.download("the NonZero count", &count)?[0].max(0) as usize;
        let all = self.download("the NonZero output", &out)?;
        let rows: Vec<i64> = (0..rank).flat_map(|d| all[d * n..d * n + k].iter().copied()).collect();
        Tensor::from_vec(vec![rank, k], rows).map_err(|e| CudaError::invalid(op, e.to_string()))
    }

    /// NonMaxSuppression of f32 `boxes` [B, N, 4] and `scores` [B, C, N]: the selected
    /// `[count, 3]` (batch, class, box) rows, by batch, class and score.
    pub fn nms(
        &self,
        boxes: &Tensor,
        scores: &Tensor,
        max_out: usize,
        iou: f32,
        score_min: Option<f32>,
        center_point_box: bool,
    ) -> Result<Tensor> {
        let op = "NonMaxSuppression";
        let (&[nb, n, 4], &[sb, nc, sn]) = (boxes.shape(), scores.shape()) else {
            return Err(CudaError::invalid(op, "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes]"));
        };
        if nb != sb || n != sn || boxes.dtype() != DType::F32 || scores.dtype() != DType::F32 {
            return Err(CudaError::invalid(
                op,
                format!(
                    "boxes {} {:?} and scores {} {:?}",
                    boxes.dtype(),
                    boxes.shape(),
                    scores.dtype(),
                    scores.shape()
                ),
            ));
        }
        let max_out = max_out.min(n);
        let pairs = nb * nc;
        let b = self.upload("the boxes", boxes.bytes())?;
        let s = self.upload("the scores", scores.bytes())?;
        let mut done = self.zeros::<u8>("the NMS scratch", pairs * n)?;
        let mut sel = self.zeros::<i64>("the NMS selection", pairs * max_out)?;
        let mut counts = self.zeros::<i64>("the NMS counts", pairs)?;
        let stream = &self.dev.stream;
        let (bb, sbuf) = (Buf::of(&b, stream).addr(), Buf::of(&s, stream).addr());
        let db = Buf::of_mut(&mut done, stream).addr();
        let (selb, cb) = (Buf::of_mut(&mut sel, stream).addr(), Buf::of_mut(&mut counts, stream).addr());
        let (batches, classes, nn, mo) = (nb as i64, nc as i64, n as i64, max_out as i64);
        let (has_min, smin, center) = (score_min.is_some() as i32, score_min.unwrap_or(0.0), center_point_box as i32);
        let threads = 64u32;
        let blocks = pairs.div_ceil(threads as usize).max(1) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        launch!(self, DYNAMIC, "nms_f32", cfg; bb, sbuf, batches, classes, nn, mo, iou, has_min, smin, center, db, selb, cb)?;
        let counts = self.download("the NMS counts", &counts)?;
        let sel = self.download("the NMS selection", &sel)?;
        let mut rows = Vec::new();
        for (pair, &k) in counts.iter().enumerate() {
            let (bi, ci) = ((pair / nc) as i64, (pair % nc) as i64);
            for &i in &sel[pair * max_out..pair * max_out + (k.max(0) as usize).min(max_out)] {
                rows.extend([bi, ci, i]);
            }
        }
        let count = rows.len() / 3;
        Tensor::from_vec(vec![count, 3], rows).map_err(|e| CudaError::invalid(op, e.to_string()))
    }
}
