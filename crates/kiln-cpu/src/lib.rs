//! Kiln's CPU backend and reference executor: every op with exact ONNX semantics.
//! Other backends are checked against it.

pub mod array;
mod error;
mod executor;
pub mod kernels;

pub use error::{CpuError, Result};
pub use executor::{Captures, EvalContext, GraphRunner, eval_op, run, run_named};
