//! Kiln's graph IR: one representation from ONNX import to lowering.
//!
//! A [`Graph`] is a list of [`Node`]s; a value is the output `slot` of a node,
//! addressed by an [`OutletId`]. Graph inputs and constants are nodes too
//! ([`Op::Input`], [`Op::Constant`]), so rewrites only ever deal with outlets.

pub mod dtype;
pub mod error;
pub mod fact;
pub mod graph;
pub mod network;
pub mod ops;
pub mod tensor;

pub use dtype::DType;
pub use error::IrError;
pub use fact::{Dim, Fact, Shape};
pub use graph::{Capture, Graph, Node, NodeId, Outlet, OutletId, captured_names};
pub use network::NetworkDefinition;
pub use ops::Op;
pub use tensor::{Element, Tensor};

pub type Result<T> = std::result::Result<T, IrError>;
