//! Kernels, one file per op family (mirroring `kiln_ir::ops`). Each family's `eval`
//! takes the node's inputs (`None` for omitted optional ones) and the number of
//! outputs the node has, and returns at least that many tensors.

pub mod attention;
pub mod control;
pub mod elementwise;
pub mod fused;
pub mod movement;
pub mod nn;
pub mod quant;
pub mod recurrent;
pub mod reduce;
pub mod vision;
