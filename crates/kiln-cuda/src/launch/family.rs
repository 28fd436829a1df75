//! One launcher for the kernels of `attention.cu`, `recurrent.cu`, `sample.cu` and
//! `einsum.cu`: each takes a single [`FamArgs`] (its buffers' addresses, integer and
//! float parameters, laid out as that kernel's comment says). The lowering
//! (`lower/{attention,recurrent,sample,einsum}.rs`) fills a [`FamilyCall`] on the host;
//! here every buffer is checked against the bytes the kernel touches before the launch.

use cudarc::driver::LaunchConfig;

use super::{Buf, Launcher, grid, launch, row_grid};
use crate::kernels::Source;
use crate::plan::SlotId;
use crate::{CudaError, Result};

/// Pointer, integer and float slots of [`FamArgs`].
pub const FAM_PTRS: usize = 16;
pub const FAM_INTS: usize = 96;
pub const FAM_FLOATS: usize = 16;

/// The single argument of the family kernels (`struct FamArgs` in common.cuh).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct FamArgs {
    pub p: [u64; FAM_PTRS],
    pub n: [i64; FAM_INTS],
    pub f: [f32; FAM_FLOATS],
}

// SAFETY: plain old data, laid out as the kernels' `struct FamArgs`.
unsafe impl cudarc::driver::DeviceRepr for FamArgs {}

/// How a family kernel is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamGrid {
    /// Grid-stride over `n` elements.
    Elems(usize),
    /// One block of `KILN_ROW_THREADS` per row (grid-stride over rows).
    Rows(usize),
}

/// A family kernel with its operands as slots: `ptrs[i]` is `(slot, bytes the kernel
/// touches)`, or `None` for an absent operand (address 0).
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyCall {
    pub src: &'static str,
    pub name: String,
    pub grid: FamGrid,
    pub ptrs: Vec<Option<(SlotId, usize)>>,
    pub ints: Vec<i64>,
    pub floats: Vec<f32>,
}

impl FamilyCall {
    pub fn new(src: Source, name: impl Into<String>, grid: FamGrid) -> FamilyCall {
        FamilyCall { src: src.name, name: name.into(), grid, ptrs: vec![], ints: vec![], floats: vec![] }
    }
}

fn source(name: &str) -> Result<Source> {
    crate::kernels::ALL
        .iter()
        .copied()
        .find(|s| s.name == name)
        .ok_or_else(|| CudaError::invalid("family", format!("no kernel source '{name}'")))
}

impl Launcher<'_> {
    /// Launches `call`, its slots resolved by `buf`.
    pub fn family(&self, call: &FamilyCall, buf: &dyn Fn(SlotId) -> Buf<'static>) -> Result<()> {
        let op = call.name.as_str();
        if call.ptrs.len() > FAM_PTRS || call.ints.len() > FAM_INTS || call.floats.len() > FAM_FLOATS {
            return Err(CudaError::invalid(op, "too many kernel parameters"));
        }
        let mut args = FamArgs { p: [0; FAM_PTRS], n: [0; FAM_INTS], f: [0.0; FAM_FLOATS] };
        for (k, p) in call.ptrs.iter().enumerate() {
            if let Some((slot, need)) = *p {
                let b = buf(slot);
                if need > b.bytes() {
                    return Err(CudaError::BufferTooSmall {
                        op: op.into(),
                        what: format!("operand {k}"),
                        need,
                        have: b.bytes(),
                    });
                }
                args.p[k] = b.addr();
            }
        }
        args.n[..call.ints.len()].copy_from_slice(&call.ints);
        args.f[..call.floats.len()].copy_from_slice(&call.floats);
        let cfg: LaunchConfig = match call.grid {
            FamGrid::Elems(0) | FamGrid::Rows(0) => return Ok(()),
            FamGrid::Elems(n) => grid(n),
            FamGrid::Rows(n) => row_grid(n),
        };
        let src = source(call.src)?;
        launch!(self, src, call.name, cfg; args)
    }
}
