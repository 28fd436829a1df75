use super::OpFamily;
use crate::{Fact, Result};

#[derive(Clone, Debug)]
pub enum RecurrentOp {}

impl OpFamily for RecurrentOp {
    fn name(&self) -> &'static str {
        match *self {}
    }

    fn infer(&self, _inputs: &[Option<&Fact>], _n_outputs: usize) -> Result<Vec<Fact>> {
        match *self {}
    }
}
