//! Optimisation profiles (TensorRT's term): per input, the smallest, the optimal and the
//! largest shape a context may run. A plan is tuned at `opt`; any shape inside
//! `[min, max]` (dim by dim) runs without rebuilding.

use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeRange {
    pub input: String,
    pub min: Vec<usize>,
    pub opt: Vec<usize>,
    pub max: Vec<usize>,
}

impl ShapeRange {
    pub fn fixed(input: &str, dims: Vec<usize>) -> ShapeRange {
        ShapeRange { input: input.into(), min: dims.clone(), opt: dims.clone(), max: dims }
    }

    pub fn contains(&self, dims: &[usize]) -> bool {
        dims.len() == self.min.len()
            && dims.iter().zip(&self.min).zip(&self.max).all(|((d, lo), hi)| lo <= d && d <= hi)
    }

    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }

    /// min ≤ opt ≤ max, dim by dim, all of one rank.
    fn check(&self) -> Result<()> {
        let ordered = self.min.len() == self.opt.len()
            && self.opt.len() == self.max.len()
            && self.min.iter().zip(&self.opt).zip(&self.max).all(|((a, b), c)| a <= b && b <= c);
        if ordered {
            Ok(())
        } else {
            Err(EngineError::Binding(format!(
                "input '{}': shapes must satisfy min ≤ opt ≤ max dim by dim, got min {:?}, opt {:?}, max {:?}",
                self.input, self.min, self.opt, self.max
            )))
        }
    }
}

impl std::fmt::Display for ShapeRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_fixed() {
            write!(f, "{}:{}", self.input, dims_str(&self.opt))
        } else {
            write!(
                f,
                "{}: min {} opt {} max {}",
                self.input,
                dims_str(&self.min),
                dims_str(&self.opt),
                dims_str(&self.max)
            )
        }
    }
}

pub fn dims_str(d: &[usize]) -> String {
    d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// One optimisation profile: a range per graph input, in the graph's input order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub inputs: Vec<ShapeRange>,
}

impl Profile {
    pub fn check(&self) -> Result<()> {
        self.inputs.iter().try_for_each(ShapeRange::check)
    }

    pub fn range(&self, input: &str) -> Option<&ShapeRange> {
        self.inputs.iter().find(|r| r.input == input)
    }

    pub fn opt_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|r| r.opt.clone()).collect()
    }

    pub fn is_fixed(&self) -> bool {
        self.inputs.iter().all(ShapeRange::is_fixed)
    }
}

/// `name:1x3x224x224,other:1x128` (trtexec's `--shapes`) as (name, dims) pairs. A name
/// may itself contain ':' (the last one separates); a scalar is an empty dims list.
pub fn parse_shapes(spec: &str) -> Result<Vec<(String, Vec<usize>)>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let bad = || EngineError::Binding(format!("shape '{item}': expected NAME:DxDxD (e.g. input:1x3x224x224)"));
            let (name, dims) = item.trim().rsplit_once(':').ok_or_else(bad)?;
            let dims = if dims.is_empty() {
                vec![]
            } else {
                dims.split('x').map(|d| d.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<Vec<_>>>()?
            };
            Ok((name.to_string(), dims))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trtexec_shapes() {
        let s = parse_shapes("input:1x3x224x224,mask:8x128, ns:scope:2").unwrap();
        assert_eq!(s[0], ("input".into(), vec![1, 3, 224, 224]));
        assert_eq!(s[1], ("mask".into(), vec![8, 128]));
        assert_eq!(s[2], ("ns:scope".into(), vec![2]));
        assert!(parse_shapes("input=1x3").is_err());
        assert!(parse_shapes("input:1xa").is_err());
    }

    #[test]
    fn ranges() {
        let r = ShapeRange { input: "x".into(), min: vec![1, 3], opt: vec![4, 3], max: vec![8, 3] };
        assert!(r.contains(&[8, 3]) && !r.contains(&[9, 3]) && !r.contains(&[4]));
        assert!(r.check().is_ok());
        let bad = ShapeRange { input: "x".into(), min: vec![4], opt: vec![1], max: vec![8] };
        assert!(bad.check().is_err());
    }
}
