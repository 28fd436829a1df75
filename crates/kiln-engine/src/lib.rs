//! Kiln's engine layer: the [`Builder`] (ONNX → optimised, bound, tuned graph → plan
//! file), the plan format ([`format`], [`codec`], [`meta`]; docs/PLAN-FORMAT.md), and the
//! runtime ([`Runtime`] → [`Engine`] → [`ExecutionContext`]) over the CPU and CUDA
//! backends, with TensorRT's names.

pub mod builder;
pub mod codec;
pub mod context;
pub mod error;
pub mod format;
pub mod layers;
pub mod meta;
pub mod prepare;
pub mod profile;
pub mod runtime;

pub use builder::{Builder, BuilderConfig, BuiltPlan, ProfileShapes};
pub use context::{ExecutionContext, LayerTime};
pub use error::{EngineError, Result};
pub use kiln_cuda::PhaseTimes;
pub use meta::{BackendKind, PlanMeta, PrecisionFlags, TensorDesc};
pub use profile::{Profile, ShapeRange, parse_shapes};
pub use runtime::{Engine, LoadOptions, Runtime};
