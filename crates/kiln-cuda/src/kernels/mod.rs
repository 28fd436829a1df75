//! Kiln's own CUDA C kernels, kept as `.cu` files in this folder and embedded in the
//! binary. Each is compiled by NVRTC for the GPU at hand (`crate::nvrtc`).

/// A kernel source file.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
}

macro_rules! source {
    ($name:literal) => {
        Source { name: $name, code: concat!(include_str!("common.cuh"), include_str!(concat!($name, ".cu"))) }
    };
}

/// Unary maps, broadcasting binary ops (every integer dtype, f64), comparisons, Where, and
/// the ops on any dtype chosen at run time: Cast (FP8 too), mixed Pow, IsNaN/IsInf, Range,
/// EyeLike, Dropout.
pub const ELEMENTWISE: Source = source!("elementwise");
/// Strided copy (Transpose, Slice, Expand, Concat…), Gather, Pad.
pub const MOVEMENT: Source = source!("movement");
/// Reductions, Softmax/LogSoftmax, ArgMax/ArgMin.
pub const REDUCE: Source = source!("reduce");
/// LayerNormalization, RMSNormalization.
pub const NORM: Source = source!("norm");
/// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.
pub const POOL: Source = source!("pool");
/// Trilu, ReverseSequence, CumSum/CumProd, Hardmax.
pub const MISC: Source = source!("misc");

/// BatchNormalization, Instance/GroupNormalization, LRN, MaxUnpool, Col2Im.
pub const CONVPOOL: Source = source!("convpool");

/// Ops whose output size depends on the data: NonZero, NonMaxSuppression.
pub const DYNAMIC: Source = source!("dynamic");

/// TopK (every numeric dtype).
pub const TOPK: Source = source!("topk");

/// The family kernels (one `FamArgs` argument each, see `launch/family.rs`).
macro_rules! family_source {
    ($name:literal) => {
        Source {
            name: $name,
            code: concat!(include_str!("common.cuh"), include_str!("family.cuh"), include_str!(concat!($name, ".cu"))),
        }
    };
}
/// Attention, LinearAttention.
pub const ATTENTION: Source = family_source!("attention");
/// RNN, GRU, LSTM.
pub const RECURRENT: Source = family_source!("recurrent");
/// GridSample, AffineGrid, RoiAlign, Resize.
pub const SAMPLE: Source = family_source!("sample");
/// Einsum.
pub const EINSUM: Source = family_source!("einsum");

/// GatherElements, GatherND, ScatterElements, ScatterND, TensorScatter, OneHot.
pub const INDEX: Source = source!("index");
/// NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss.
pub const LOSS: Source = source!("loss");
/// QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul.
pub const QUANT: Source = source!("quant");

/// Every kernel source, for cache warm-up and compile checks.
pub const ALL: &[Source] = &[
    ELEMENTWISE,
    MOVEMENT,
    REDUCE,
    NORM,
    POOL,
    MISC,
    CONVPOOL,
    DYNAMIC,
    TOPK,
    ATTENTION,
    RECURRENT,
    SAMPLE,
    EINSUM,
    INDEX,
    LOSS,
    QUANT,
];

/// Operation codes of `elementwise.cu`'s unary kernels (its `UnaryCode`). The comment
/// names the attributes passed as `p0`, `p1`. Integer kernels know Relu, Neg, Abs, Sign.
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
    /// Exact (erf) GELU.
    Gelu,
    /// x · sigmoid(x).
    Silu,
    /// GELU's tanh approximation.
    GeluTanh,
    Reciprocal,
    /// alpha
    LeakyRelu,
    /// alpha, beta
    HardSigmoid,
    HardSwish,
    /// min, max (±inf where absent)
    Clip,
    /// alpha
    Elu,
    Softplus,
    Floor,
    Ceil,
    /// Half to even.
    Round,
    /// alpha: x · sigmoid(alpha · x)
    Swish,
    Sign,
    Sin,
    Cos,
    Softsign,
    Mish,
    /// alpha, gamma
    Selu,
    /// alpha
    Celu,
    /// alpha
    ThresholdedRelu,
    /// bias, lambd
    Shrink,
    Identity,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    /// Integers only.
    BitNot,
}

/// Operation codes of `elementwise.cu`'s binary kernels (its `BinaryCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BinaryCode {
    Add = 0,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Floats only.
    Pow,
    /// The slope is input b.
    PRelu,
    /// Python's remainder (sign of the divisor).
    Mod,
    /// C's remainder (sign of the dividend).
    Fmod,
    /// Integers only, as are the shifts (a count outside the type's bits gives 0).
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

/// `elementwise.cu`'s run-time dtype code (its `DtCode`): the position in `DType::ALL`.
pub fn dtype_code(d: kiln_ir::DType) -> i32 {
    kiln_ir::DType::ALL.iter().position(|&x| x == d).unwrap_or(0) as i32
}

/// Operation codes of `elementwise.cu`'s compare kernels (its `CompareCode`): bool out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum CompareCode {
    Equal = 0,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    /// Logic on bools (any dtype: "not zero").
    And,
    Or,
    Xor,
}

/// Padding modes of `movement.cu` (its `PadCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum PadCode {
    Constant = 0,
    Reflect,
    Edge,
    Wrap,
}

/// Reductions of `reduce.cu` (its `ReduceCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ReduceCode {
    Sum = 0,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
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
        Some(Strides { out_dims: dims_array(out), a: broadcast_strides(a, out)?, b: broadcast_strides(b, out)? })
    }
}

/// Element strides of a row-major tensor of `dims` that broadcasts (numpy rules, ranks
/// aligned at the right) into `out`: 0 for a broadcast dim. `None` when it does not.
fn broadcast_strides(dims: &[usize], out: &[usize]) -> Option<[i64; MAX_RANK]> {
    let rank = out.len();
    if rank > MAX_RANK || dims.len() > rank {
        return None;
    }
    let mut strides = [0i64; MAX_RANK];
    let offset = rank - dims.len();
    let mut stride = 1i64;
    for d in (0..dims.len()).rev() {
        let n = dims[d];
        if n != 1 && n != out[offset + d] {
            return None;
        }
        strides[offset + d] = if n == 1 { 0 } else { stride };
        stride *= n as i64;
    }
    Some(strides)
}

fn dims_array(dims: &[usize]) -> [i64; MAX_RANK] {
    let mut a = [1i64; MAX_RANK];
    for (d, &n) in dims.iter().enumerate().take(MAX_RANK) {
        a[d] = n as i64;
    }
    a
}

/// The `Strides3` argument of the Where kernels: output dims and the strides of the
/// condition, x and y.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Strides3 {
    pub out_dims: [i64; MAX_RANK],
    pub c: [i64; MAX_RANK],
    pub x: [i64; MAX_RANK],
    pub y: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct Strides3`.
unsafe impl cudarc::driver::DeviceRepr for Strides3 {}

impl Strides3 {
    pub fn broadcast(c: &[usize], x: &[usize], y: &[usize], out: &[usize]) -> Option<Strides3> {
        Some(Strides3 {
            out_dims: dims_array(out),
            c: broadcast_strides(c, out)?,
            x: broadcast_strides(x, out)?,
            y: broadcast_strides(y, out)?,
        })
    }
}

/// The `CopyDesc` argument of the copy kernels: the dims walked, and the source's and
/// destination's element strides along them.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct CopyDesc {
    pub dims: [i64; MAX_RANK],
    pub src: [i64; MAX_RANK],
    pub dst: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct CopyDesc`.
unsafe impl cudarc::driver::DeviceRepr for CopyDesc {}

/// The `PadDesc` argument of the pad kernels.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct PadDesc {
    pub out_dims: [i64; MAX_RANK],
    pub in_dims: [i64; MAX_RANK],
    /// Padding before each axis (negative: cropped).
    pub begin: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct PadDesc`.
unsafe impl cudarc::driver::DeviceRepr for PadDesc {}

/// The `ReduceDesc` argument of the strided reduce kernels: the kept dims (the output's)
/// and the reduced dims, each with its strides in the input.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ReduceDesc {
    pub kept_dims: [i64; MAX_RANK],
    pub kept_strides: [i64; MAX_RANK],
    pub red_dims: [i64; MAX_RANK],
    pub red_strides: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct ReduceDesc`.
unsafe impl cudarc::driver::DeviceRepr for ReduceDesc {}

/// The `Dims` argument of `misc.cu`'s kernels: a shape (rank ≤ 8), 1 past its rank.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Dims {
    pub d: [i64; MAX_RANK],
}

// SAFETY: plain old data, laid out as the kernel's `struct Dims`.
unsafe impl cudarc::driver::DeviceRepr for Dims {}

impl Dims {
    pub fn of(shape: &[usize]) -> Option<Dims> {
        (shape.len() <= MAX_RANK).then(|| Dims { d: dims_array(shape) })
    }
}
