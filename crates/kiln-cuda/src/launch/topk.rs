//! Launcher of `topk.cu`.

use kiln_ir::DType;

use super::{Buf, Launcher, check_buf, elems, grid, launch, to_i64};
use crate::kernels::TOPK;
use crate::{CudaError, Result};

/// The kernel-name suffix of TopK's element type.
fn topk_suffix(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I8 => "i8",
        DType::I16 => "i16",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::U8 => "u8",
        DType::U16 => "u16",
        DType::U32 => "u32",
        DType::U64 => "u64",
        _ => return None,
    })
}

/// Whether TopK has a kernel for `dtype`.
pub fn topk_supports(dtype: DType) -> bool {
    topk_suffix(dtype).is_some()
}

impl Launcher<'_> {
    /// TopK of `x` (`shape`) along `axis`: the `k` largest (or smallest) values and
    /// their i64 indices, in order.
    #[allow(clippy::too_many_arguments)]
    pub fn topk(
        &self,
        largest: bool,
        dtype: DType,
        x: &Buf,
        shape: &[usize],
        axis: usize,
        k: usize,
        values: &Buf,
        indices: &Buf,
    ) -> Result<()> {
        let op = "TopK";
        let suffix = topk_suffix(dtype).ok_or_else(|| CudaError::unsupported(op, format!("dtype {dtype}")))?;
        if axis >= shape.len() || k > shape[axis] {
            return Err(CudaError::invalid(op, format!("k = {k} along axis {axis} of {shape:?}")));
        }
        let (outer, r, inner) = (elems(&shape[..axis]), shape[axis], elems(&shape[axis + 1..]));
        check_buf(op, "input", x, elems(shape), dtype)?;
        check_buf(op, "values", values, outer * k * inner, dtype)?;
        check_buf(op, "indices", indices, outer * k * inner, DType::I64)?;
        if outer * inner * k == 0 {
            return Ok(());
        }
        let (lg, xa, va, ia) = (i32::from(largest), x.addr(), values.addr(), indices.addr());
        let (o, rr, i, kk) = (to_i64(op, outer)?, to_i64(op, r)?, to_i64(op, inner)?, to_i64(op, k)?);
        launch!(self, TOPK, format!("kiln_topk_{suffix}"), grid(outer * inner); lg, xa, va, ia, o, rr, i, kk)
    }
}
