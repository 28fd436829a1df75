use super::OpFamily;
use crate::{Fact, Result};

#[derive(Clone, Debug)]
pub enum VisionOp {}

impl OpFamily for VisionOp {
    fn name(&self) -> &'static str {
        match *self {}
    }

    fn infer(&self, _inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        match *self {}
    }
}
