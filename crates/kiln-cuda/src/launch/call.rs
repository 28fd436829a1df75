//! A direct launch of one of the index, loss and quantisation kernels (`index.cu`,
//! `loss.cu`, `quant.cu`): the function, its arguments in order (slots, integers,
//! floats, small dim arrays) and the grid. The lowering computes every argument on the
//! host from the planned shapes; the launcher checks that each slot's buffer holds the
//! bytes the lowering said the kernel touches there, so a buffer smaller than its shape
//! is an error, never an out-of-bounds access.

use super::{Buf, Launcher, grid};
use crate::kernels::{ALL, MAX_RANK};
use crate::plan::SlotId;
use crate::{CudaError, Result};

/// Up to `MAX_RANK` dims or strides, passed by value (the kernels' `struct Dims`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Dims {
    pub d: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernels' `struct Dims`.
unsafe impl cudarc::driver::DeviceRepr for Dims {}

impl Dims {
    /// `v` (at most `MAX_RANK` values; the rest 0).
    pub fn of(v: &[i64]) -> std::result::Result<Dims, String> {
        if v.len() > MAX_RANK {
            return Err(format!("rank {} (the kernels take at most {MAX_RANK})", v.len()));
        }
        let mut d = [0i64; MAX_RANK];
        d[..v.len()].copy_from_slice(v);
        Ok(Dims { d })
    }

    pub fn of_usize(v: &[usize]) -> std::result::Result<Dims, String> {
        Dims::of(&v.iter().map(|&x| x as i64).collect::<Vec<_>>())
    }
}

/// One kernel argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A slot's device address; the kernel touches at most `bytes` bytes there.
    Slot {
        id: SlotId,
        bytes: usize,
    },
    /// A null pointer (an absent optional operand).
    Null,
    I64(i64),
    I32(i32),
    F32(f32),
    Dims(Dims),
}

/// How the kernel is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// Grid-stride over this many work items.
    Items(usize),
    /// One block of 256 threads (a block-wide reduction).
    OneBlock,
}

/// A direct kernel launch (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The kernel module (`kernels::Source::name`).
    pub module: &'static str,
    pub function: String,
    pub args: Vec<Arg>,
    pub grid: Grid,
}

impl Launcher<'_> {
    /// Launches `c`, `buf` giving each slot's device memory.
    pub fn call<'b>(&self, c: &Call, buf: &dyn Fn(SlotId) -> Buf<'b>) -> Result<()> {
        let src = ALL
            .iter()
            .find(|s| s.name == c.module)
            .copied()
            .ok_or_else(|| CudaError::invalid(&c.function, format!("no kernel module '{}'", c.module)))?;
        // Each argument's value, owned here until the launch.
        let mut vals: Vec<Arg> = Vec::with_capacity(c.args.len());
        for a in &c.args {
            vals.push(match a {
                Arg::Slot { id, bytes } => {
                    let b = buf(*id);
                    if *bytes > b.bytes() {
                        return Err(CudaError::BufferTooSmall {
                            op: c.function.clone(),
                            what: format!("slot {id}"),
                            need: *bytes,
                            have: b.bytes(),
                        });
                    }
                    Arg::I64(b.addr() as i64)
                }
                Arg::Null => Arg::I64(0),
                a => a.clone(),
            });
        }
        let cfg = match c.grid {
            Grid::Items(0) => return Ok(()),
            Grid::Items(n) => grid(n),
            Grid::OneBlock => cudarc::driver::LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (super::ROW_THREADS, 1, 1),
                shared_mem_bytes: 0,
            },
        };
        let func = self.kernels.function(src, &c.function)?;
        let mut builder = self.dev.stream.launch_builder(&func);
        for v in &vals {
            use cudarc::driver::PushKernelArg;
            match v {
                Arg::I64(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
                Arg::Dims(v) => builder.arg(v),
                Arg::Slot { .. } | Arg::Null => return Err(CudaError::invalid(&c.function, "an unresolved pointer")),
            };
        }
        // SAFETY: the lowering passes the arguments its kernel declares, in order and of
        // the same C types, and every buffer was checked above against the bytes the
        // kernel touches for these shapes.
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(|e| CudaError::launch(&c.function, e))
    }
}
