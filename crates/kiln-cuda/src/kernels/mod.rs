//! Kiln's own CUDA C kernels, kept as `.cu` files in this folder and embedded in the
//! binary. Each is compiled by NVRTC for the GPU at hand (`crate::nvrtc`).

/// A kernel source file.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
}

pub const ELEMENTWISE: Source = Source { name: "elementwise", code: include_str!("elementwise.cu") };

/// Every kernel source, for cache warm-up and compile checks.
pub const ALL: &[Source] = &[ELEMENTWISE];

/// Operation codes of `elementwise.cu` (its `UnaryCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum UnaryCode {
    Relu = 0,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Erf,
    Gelu,
    Silu,
}

/// Operation codes of `elementwise.cu` (its `BinaryCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BinaryCode {
    Add = 0,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// Maximum rank of the broadcasting kernels (`KILN_MAX_RANK`).
pub const MAX_RANK: usize = 8;

/// The `Strides` argument of the binary kernels: output dims, and each input's element
/// strides with 0 where it is broadcast.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Strides {
    pub out_dims: [i64; MAX_RANK],
    pub a: [i64; MAX_RANK],
    pub b: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct Strides`.
unsafe impl cudarc::driver::DeviceRepr for Strides {}

impl Strides {
    /// Broadcast strides for inputs of shapes `a` and `b` into `out` (numpy rules; ranks
    /// aligned at the right). `None` when the shapes do not broadcast or rank > MAX_RANK.
    pub fn broadcast(a: &[usize], b: &[usize], out: &[usize]) -> Option<Strides> {
        let rank = out.len();
        if rank > MAX_RANK || a.len() > rank || b.len() > rank {
            return None;
        }
        let mut s = Strides::default();
        for (d, &n) in out.iter().enumerate() {
            s.out_dims[d] = n as i64;
        }
        for (shape, strides) in [(a, &mut s.a), (b, &mut s.b)] {
            let offset = rank - shape.len();
            let mut stride = 1i64;
            for d in (0..shape.len()).rev() {
                let n = shape[d];
                if n != 1 && n != out[offset + d] {
                    return None;
                }
                strides[offset + d] = if n == 1 { 0 } else { stride };
                stride *= n as i64;
            }
        }
        Some(s)
    }
}
