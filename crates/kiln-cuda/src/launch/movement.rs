//! Launchers of `movement.cu`: the strided copy (and Transpose, Slice, Expand, Concat
//! built on it), Gather, Pad. All move elements by storage, so they take any dtype.

use kiln_ir::DType;
use kiln_ir::ops::movement::{AxisSlice, PadMode, slice_layout};

use super::elementwise::Operand;
use super::{Buf, Launcher, check_buf, contiguous_strides, elems, grid, launch, storage_suffix, to_i64};
use crate::kernels::{CopyDesc, MAX_RANK, MOVEMENT, PadCode, PadDesc};
use crate::{CudaError, Result};

/// One side of a strided copy: the element offset and the strides along the walked dims.
#[derive(Clone, Debug)]
pub struct Layout {
    pub offset: isize,
    pub strides: Vec<isize>,
}

impl Layout {
    /// A row-major tensor of `shape` from element 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { offset: 0, strides: contiguous_strides(shape) }
    }
}

/// Drops dims of one element and merges neighbours that are contiguous in both layouts.
fn coalesce2(dims: &[usize], a: &[isize], b: &[isize]) -> (Vec<usize>, Vec<isize>, Vec<isize>) {
    let (mut d, mut sa, mut sb) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..dims.len() {
        let n = dims[k];
        if n == 1 {
            continue;
        }
        match (d.last_mut(), sa.last_mut(), sb.last_mut()) {
            (Some(pd), Some(pa), Some(pb)) if *pa == a[k] * n as isize && *pb == b[k] * n as isize => {
                *pd *= n;
                *pa = a[k];
                *pb = b[k];
            }
            _ => {
                d.push(n);
                sa.push(a[k]);
                sb.push(b[k]);
            }
        }
    }
    (d, sa, sb)
}

/// The lowest and highest element index a layout touches over `dims` (none empty).
fn extent(dims: &[usize], l: &Layout) -> (isize, isize) {
    let (mut lo, mut hi) = (l.offset, l.offset);
    for (&n, &s) in dims.iter().zip(&l.strides) {
        let span = (n as isize - 1) * s;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo, hi)
}

fn check_extent(op: &str, what: &str, buf: &Buf, dims: &[usize], l: &Layout, dtype: DType) -> Result<()> {
    let (lo, hi) = extent(dims, l);
    if lo < 0 {
        return Err(CudaError::invalid(op, format!("{what} layout reaches before its buffer (element {lo})")));
    }
    check_buf(op, what, buf, hi as usize + 1, dtype)
}

fn to_array(v: &[i64]) -> [i64; MAX_RANK] {
    let mut a = [0i64; MAX_RANK];
    a[..v.len()].copy_from_slice(v);
    a
}

/// The constant of a Pad as the bits of one element of `dtype`.
fn pad_bits(dtype: DType, v: f64) -> Result<u64> {
    Ok(match dtype {
        DType::F32 => u64::from((v as f32).to_bits()),
        DType::F64 => v.to_bits(),
        DType::F16 => u64::from(half::f16::from_f64(v).to_bits()),
        DType::BF16 => u64::from(half::bf16::from_f64(v).to_bits()),
        DType::Bool => u64::from(v != 0.0),
        DType::F8E4M3FN | DType::F8E5M2 if v == 0.0 => 0,
        DType::F8E4M3FN | DType::F8E5M2 => {
            return Err(CudaError::unsupported("Pad", format!("a non-zero constant for {dtype}")));
        }
        // Integers: two's complement, the kernel keeps the element's low bytes.
        d if d.is_signed() => v as i64 as u64,
        _ => v as u64,
    })
}

impl Launcher<'_> {
    /// The generic strided copy: for each row-major position `k` of `dims`,
    /// `dst[dst.offset + Σ k·dst.strides] = src[src.offset + Σ k·src.strides]`, elements
    /// of `dtype` (by storage). Strides may be 0 (broadcast) or negative (reversed).
    /// Ranks above 8 are accepted when they coalesce to 8 or fewer.
    pub fn copy_strided(
        &self,
        dtype: DType,
        src: &Buf,
        sl: &Layout,
        dst: &Buf,
        dl: &Layout,
        dims: &[usize],
    ) -> Result<()> {
        let op = "Copy";
        if sl.strides.len() != dims.len() || dl.strides.len() != dims.len() {
            return Err(CudaError::invalid(op, "strides and dims differ in length"));
        }
        let n = elems(dims);
        if n == 0 {
            return Ok(());
        }
        check_extent(op, "source", src, dims, sl, dtype)?;
        check_extent(op, "destination", dst, dims, dl, dtype)?;
        let (d, ss, ds) = coalesce2(dims, &sl.strides, &dl.strides);
        if d.len() > MAX_RANK {
            return Err(CudaError::unsupported(op, format!("a copy of rank {} after merging dims", d.len())));
        }
        let i64s = |v: &[isize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let desc = CopyDesc {
            dims: to_array(&d.iter().map(|&x| x as i64).collect::<Vec<_>>()),
            src: to_array(&i64s(&ss)),
            dst: to_array(&i64s(&ds)),
        };
        let (sa, da, nn, rank, so, doff) =
            (src.addr(), dst.addr(), to_i64(op, n)?, d.len() as i32, sl.offset as i64, dl.offset as i64);
        launch!(self, MOVEMENT, format!("kiln_copy_{}", storage_suffix(dtype)), grid(n); sa, da, nn, rank, desc, so, doff)
    }

    /// Transpose: `y` (row-major, dims `x_shape[perm[k]]`) = `x` permuted.
    pub fn transpose(&self, dtype: DType, x: Operand, perm: &[usize], y: &Buf) -> Result<()> {
        let (x, shape) = x;
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..shape.len()).collect::<Vec<_>>() {
            return Err(CudaError::invalid(
                "Transpose",
                format!("{perm:?} is not a permutation of rank {}", shape.len()),
            ));
        }
        let xs = contiguous_strides(shape);
        let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let sl = Layout { offset: 0, strides: perm.iter().map(|&p| xs[p]).collect() };
        self.copy_strided(dtype, x, &sl, y, &Layout::contiguous(&dims), &dims)
    }

    /// Slice (steps, negative too): `slices` holds one resolved `AxisSlice` per axis
    /// (see `kiln_ir::ops::movement::slice_axes`); `y` is row-major.
    pub fn slice(&self, dtype: DType, x: Operand, slices: &[AxisSlice], y: &Buf) -> Result<()> {
        let (x, shape) = x;
        if slices.len() != shape.len() {
            return Err(CudaError::invalid("Slice", format!("{} slices for rank {}", slices.len(), shape.len())));
        }
        let (offset, dims, strides) = slice_layout(shape, slices);
        self.copy_strided(dtype, x, &Layout { offset, strides }, y, &Layout::contiguous(&dims), &dims)
    }

    /// Expand (numpy broadcasting of `x` into `out`, which is row-major in `y`).
    pub fn expand(&self, dtype: DType, x: Operand, y: &Buf, out: &[usize]) -> Result<()> {
        let (x, shape) = x;
        let op = "Expand";
        if shape.len() > out.len() {
            return Err(CudaError::invalid(op, format!("{shape:?} has a higher rank than {out:?}")));
        }
        let xs = contiguous_strides(shape);
        let lead = out.len() - shape.len();
        let mut strides = vec![0isize; out.len()];
        for (k, &n) in shape.iter().enumerate() {
            if n != 1 && n != out[lead + k] {
                return Err(CudaError::invalid(op, format!("{shape:?} does not broadcast to {out:?}")));
            }
            strides[lead + k] = if n == 1 { 0 } else { xs[k] };
        }
        self.copy_strided(dtype, x, &Layout { offset: 0, strides }, y, &Layout::contiguous(out), out)
    }

    /// Concat along `axis`: each input copied into its place in `y` (row-major `out`).
    pub fn concat(&self, dtype: DType, inputs: &[Operand], axis: usize, y: &Buf, out: &[usize]) -> Result<()> {
        let op = "Concat";
        if axis >= out.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", out.len())));
        }
        let mut at = 0usize;
        for (_, shape) in inputs {
            let fits =
                shape.len() == out.len() && shape.iter().zip(out).enumerate().all(|(k, (a, b))| k == axis || a == b);
            if !fits {
                return Err(CudaError::invalid(op, format!("input of shape {shape:?} does not fit output {out:?}")));
            }
            at += shape[axis];
        }
        if at != out[axis] {
            return Err(CudaError::invalid(
                op,
                format!("inputs add up to {at} along axis {axis}, output has {}", out[axis]),
            ));
        }
        let os = contiguous_strides(out);
        let mut at = 0usize;
        for (buf, shape) in inputs {
            let dl = Layout { offset: at as isize * os[axis], strides: os.clone() };
            self.copy_strided(dtype, buf, &Layout::contiguous(shape), y, &dl, shape)?;
            at += shape[axis];
        }
        Ok(())
    }

    /// Gather along `axis` with i32 or i64 indices (negative ones count from the end).
    /// `y` has dims `data[..axis] + indices + data[axis + 1..]`. An index out of range
    /// gives zeros and, when `bad` is given (one u32, zeroed by the caller), sets it to 1.
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &self,
        dtype: DType,
        data: Operand,
        axis: usize,
        idx_dtype: DType,
        indices: Operand,
        y: &Buf,
        bad: Option<&Buf>,
    ) -> Result<()> {
        let op = "Gather";
        let (d, shape) = data;
        if axis >= shape.len() {
            return Err(CudaError::invalid(op, format!("axis {axis} for rank {}", shape.len())));
        }
        let isuffix = match idx_dtype {
            DType::I32 => "i32",
            DType::I64 => "i64",
            t => return Err(CudaError::invalid(op, format!("indices must be i32 or i64, got {t}"))),
        };
        let (outer, axis_dim, inner) = (elems(&shape[..axis]), shape[axis], elems(&shape[axis + 1..]));
        let n_idx = elems(indices.1);
        check_buf(op, "data", d, elems(shape), dtype)?;
        check_buf(op, "indices", indices.0, n_idx, idx_dtype)?;
        let n = outer * n_idx * inner;
        check_buf(op, "output", y, n, dtype)?;
        if let Some(b) = bad {
            check_buf(op, "error flag", b, 1, DType::U32)?;
        }
        if n == 0 {
            return Ok(());
        }
        let (da, ia, ya, ba) = (d.addr(), indices.0.addr(), y.addr(), bad.map_or(0, |b| b.addr()));
        let (outer, axis_dim, n_idx, inner) =
            (to_i64(op, outer)?, to_i64(op, axis_dim)?, to_i64(op, n_idx)?, to_i64(op, inner)?);
        let name = format!("kiln_gather_{}_{isuffix}", storage_suffix(dtype));
        launch!(self, MOVEMENT, name, grid(n); da, ia, ya, outer, axis_dim, n_idx, inner, ba)
    }

    /// Pad with per-axis `(begin, end)` amounts (negative: crop); `value` is the constant
    /// of `PadMode::Constant`. `y` has dims `x + begin + end`.
    pub fn pad(&self, dtype: DType, mode: PadMode, x: Operand, pads: &[(i64, i64)], value: f64, y: &Buf) -> Result<()> {
        let op = "Pad";
        let (x, shape) = x;
        if pads.len() != shape.len() {
            return Err(CudaError::invalid(op, format!("{} pads for rank {}", pads.len(), shape.len())));
        }
        if shape.len() > MAX_RANK {
            return Err(CudaError::unsupported(op, format!("rank {}", shape.len())));
        }
        let mut out = Vec::with_capacity(shape.len());
        for (&d, &(b, e)) in shape.iter().zip(pads) {
            let o = d as i64 + b + e;
            if o < 0 {
                return Err(CudaError::invalid(op, format!("pads ({b}, {e}) remove more than the dim {d}")));
            }
            if d == 0 && o > 0 && mode != PadMode::Constant {
                return Err(CudaError::invalid(op, "cannot pad an empty axis except with a constant"));
            }
            out.push(o as usize);
        }
        check_buf(op, "input", x, elems(shape), dtype)?;
        let n = elems(&out);
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let code = match mode {
            PadMode::Constant => PadCode::Constant,
            PadMode::Reflect => PadCode::Reflect,
            PadMode::Edge => PadCode::Edge,
            PadMode::Wrap => PadCode::Wrap,
        } as i32;
        let desc = PadDesc {
            out_dims: to_array(&out.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            in_dims: to_array(&shape.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            begin: to_array(&pads.iter().map(|p| p.0).collect::<Vec<_>>()),
        };
        let (xa, ya, nn, rank, bits) =
            (x.addr(), y.addr(), to_i64(op, n)?, shape.len() as i32, pad_bits(dtype, value)?);
        launch!(self, MOVEMENT, format!("kiln_pad_{}", storage_suffix(dtype)), grid(n); code, xa, ya, nn, rank, desc, bits)
    }
}
