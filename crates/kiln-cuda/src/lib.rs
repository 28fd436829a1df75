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
//! - `bind`: a graph bound to one build's input shapes and shape-tensor values.
//! - `plan`: a graph with known shapes → steps in order, every value's slot (arena
//!   offset or packed weights), aliases for reshapes, the memory report. Host only.
//! - `precision`: a graph computing in FP16/BF16 where it computed in FP32 (`--fp16`).
//! - `memory`: the executor's device buffers (arena, weights, workspace) and views.
//! - `blas`: cuBLASLt matrix products (FP32 without TF32 unless asked, FP16 with FP32
//!   accumulation), algorithms enumerated by heuristic.
//! - `dnn`: cuDNN convolutions (Conv, ConvTranspose): geometry from the IR, algorithms
//!   enumerated by heuristic, FP32 without TF32 unless asked, FP16 with FP32 accumulation.
//! - `dynamic`: graphs with data-dependent shapes or control flow, run in segments
//!   (NonZero/NMS kernels that report their counts; If/Loop/Scan control on the host).
//! - `executor`: per-op lowering to launches, `run` on host tensors; `graph_capture`:
//!   the launches captured once into a CUDA graph and replayed; `io`: the asynchronous
//!   phases (upload, enqueue, download, `begin`/`finish` with event timings) and copies
//!   to and from caller-owned device memory.
//! - `weights`: constants shared between executors (one device copy per engine).
//! - `tactics`: which algorithm each launch runs, and the timing cache; `tune`: choosing
//!   (forced by a plan, from the cache, or timed on the GPU).

pub mod bind;
pub mod blas;
pub mod device;
pub mod dnn;
pub mod dynamic;
mod error;
pub mod executor;
pub mod graph_capture;
mod io;
pub mod kernels;
pub mod launch;
pub mod libs;
pub mod lower;
pub mod memory;
pub mod nvrtc;
pub mod plan;
pub mod planner;
pub mod precision;
pub mod tactics;
mod tune;
pub mod weights;

pub use device::Device;
pub use error::{CudaError, Result};
pub use executor::{Executor, Options};
pub use io::{PhaseTimes, SlotInfo};
pub use launch::{Buf, Kernels, Launcher, ModuleImage};
pub use libs::{LibVersions, lib_versions};
pub use plan::{ExecutionPlan, MemoryReport};
pub use tactics::{Tactic, TimingCache, TimingEntry};
pub use weights::WeightStore;
