//! Kiln's CUDA backend. Builds and links on machines without CUDA (cudarc loads every
//! library at run time); at run time a missing library or GPU is an error that says
//! what is missing and where Kiln looked.
//!
//! - `libs`: finding the driver, NVRTC, cuBLASLt and cuDNN.
//! - `device`: opening a GPU.
//! - `nvrtc`: compiling Kiln's CUDA C kernels (`kernels/*.cu`) for the exact GPU, cached
//!   on disk by a hash of source, options and GPU.
//! - `launch`: typed launchers of those kernels (a loaded-module cache, device buffers
//!   checked against shapes, the kernel for each dtype, grid sizes).
//! - `planner`: one activation arena, offsets planned from tensor lifetimes (best fit).

pub mod device;
mod error;
pub mod kernels;
pub mod launch;
pub mod libs;
pub mod nvrtc;
pub mod planner;

pub use device::Device;
pub use error::{CudaError, Result};
pub use launch::{Buf, Kernels, Launcher};
