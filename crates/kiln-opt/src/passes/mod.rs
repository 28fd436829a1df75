//! The rewrites, one file per concept, grouped into the pipeline's stages. Each file
//! exposes `rewrites()`; the order inside a stage is the order they are offered a node.

pub mod attention;
pub mod batchnorm;
pub mod concat;
pub mod elementwise;
pub mod epilogue;
pub mod fold;
pub mod horizontal;
pub mod layout;
pub mod noop;
pub mod norm;
pub mod scale;
pub mod symbolic;
pub mod views;
pub mod weights;

use crate::rewrite::Rewrite;

/// Level 1: folding, symbolic shapes, no-op removal and cancellation.
pub fn simplify() -> Vec<&'static dyn Rewrite> {
    [fold::rewrites(), symbolic::rewrites(), noop::rewrites()].concat()
}

/// Level 2: BatchNorm and constant scales folded into compute ops; decomposed
/// softmax/norm/activation and attention patterns recognised.
pub fn canonicalize() -> Vec<&'static dyn Rewrite> {
    [batchnorm::rewrites(), scale::rewrites(), norm::rewrites(), attention::rewrites()].concat()
}

/// Level 3: merging layers (siblings, epilogues, elementwise chains).
pub fn fuse() -> Vec<&'static dyn Rewrite> {
    [horizontal::rewrites(), epilogue::rewrites(), elementwise::rewrites()].concat()
}

/// Level 3: buffers (concat elision, views) and layout.
pub fn memory() -> Vec<&'static dyn Rewrite> {
    [concat::rewrites(), views::rewrites(), layout::rewrites()].concat()
}
