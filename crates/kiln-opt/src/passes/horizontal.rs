//! (to be written)

use crate::rewrite::Rewrite;

pub fn rewrites() -> Vec<&'static dyn Rewrite> {
    vec![]
}
