use std::fmt;
use std::sync::Arc;

use crate::{DType, Tensor};

/// One dimension of a shape: a known size, a named symbol (`batch`, `seq`), or unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dim {
    Known(usize),
    Sym(Arc<str>),
    Unknown,
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(name.into())
    }

    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }

    /// Broadcast two dims (numpy rules); `None` when they cannot broadcast.
    pub fn broadcast(&self, other: &Dim) -> Option<Dim> {
        match (self, other) {
            (Dim::Known(1), d) | (d, Dim::Known(1)) => Some(d.clone()),
            (Dim::Known(a), Dim::Known(b)) => (a == b).then_some(Dim::Known(*a)),
            (a, b) if a == b => Some(a.clone()),
            (Dim::Known(n), _) | (_, Dim::Known(n)) => Some(Dim::Known(*n)),
            _ => Some(Dim::Unknown),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape whose rank is known; its dims may be symbolic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All dims as numbers, if all are known.
    pub fn as_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::known).collect()
    }

    /// Numpy multidirectional broadcast of several shapes.
    pub fn broadcast(shapes: &[&Shape]) -> Option<Shape> {
        let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
        let mut out = vec![Dim::Known(1); rank];
        for s in shapes {
            let offset = rank - s.rank();
            for (i, d) in s.0.iter().enumerate() {
                out[offset + i] = out[offset + i].broadcast(d)?;
            }
        }
        Some(Shape(out))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        write!(f, "[{}]", dims.join(","))
    }
}

/// What is known about a value before running the graph.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Fact {
    /// `None` when the dtype is not known yet (e.g. an unannotated subgraph value).
    pub dtype: Option<DType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
    /// The value itself, when it is a constant or folds to one (shape arithmetic).
    pub value: Option<Tensor>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Shape) -> Fact {
        Fact { dtype: Some(dtype), shape: Some(shape), value: None }
    }

    pub fn dtype_only(dtype: DType) -> Fact {
        Fact { dtype: Some(dtype), shape: None, value: None }
    }

    pub fn unknown() -> Fact {
        Fact::default()
    }

    /// Whether two facts about one value can both be true: dtypes equal where both are
    /// known, ranks equal where both are known, and known dims equal.
    pub fn agrees_with(&self, other: &Fact) -> bool {
        let dtype = match (self.dtype, other.dtype) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let shape = match (&self.shape, &other.shape) {
            (Some(a), Some(b)) => {
                a.0.len() == b.0.len()
                    && a.0.iter().zip(&b.0).all(|(x, y)| match (x.known(), y.known()) {
                        (Some(x), Some(y)) => x == y,
                        _ => true,
                    })
            }
            _ => true,
        };
        dtype && shape
    }

    pub fn constant(t: Tensor) -> Fact {
        Fact { dtype: Some(t.dtype()), shape: Some(Shape::known(t.shape())), value: Some(t) }
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Shape::rank)
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("[..]"),
        }
    }
}
