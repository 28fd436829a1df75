//! Launchers of `elementwise.cu`: unary maps, broadcasting binary ops, comparisons and
//! logic, Where, Cast.

use kiln_ir::DType;
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, LogicOp, UnaryOp};

use super::{
    Launcher, check_buf, check_rank, elems, float_suffix, grid, launch, numeric_suffix, storage_suffix, to_i64,
};
use crate::kernels::{BinaryCode, CompareCode, ELEMENTWISE, Strides, Strides3, UnaryCode};
use crate::{CudaError, Result};

use super::Buf;

/// A tensor operand: its buffer and shape.
pub type Operand<'s, 'b> = (&'s Buf<'b>, &'s [usize]);

/// The unary kernel code and its two parameters for an IR unary op; `None` for the one
/// op the kernels lack (BitwiseNot).
pub fn unary_code(op: &UnaryOp) -> Option<(UnaryCode, [f32; 2])> {
    use UnaryOp as U;
    let none = [0.0, 0.0];
    Some(match *op {
        U::Relu => (UnaryCode::Relu, none),
        U::Sigmoid => (UnaryCode::Sigmoid, none),
        U::Tanh => (UnaryCode::Tanh, none),
        U::Exp => (UnaryCode::Exp, none),
        U::Log => (UnaryCode::Log, none),
        U::Sqrt => (UnaryCode::Sqrt, none),
        U::Reciprocal => (UnaryCode::Reciprocal, none),
        U::Neg => (UnaryCode::Neg, none),
        U::Abs => (UnaryCode::Abs, none),
        U::Sign => (UnaryCode::Sign, none),
        U::Erf => (UnaryCode::Erf, none),
        U::Floor => (UnaryCode::Floor, none),
        U::Ceil => (UnaryCode::Ceil, none),
        U::Round => (UnaryCode::Round, none),
        U::Sin => (UnaryCode::Sin, none),
        U::Cos => (UnaryCode::Cos, none),
        U::Tan => (UnaryCode::Tan, none),
        U::Asin => (UnaryCode::Asin, none),
        U::Acos => (UnaryCode::Acos, none),
        U::Atan => (UnaryCode::Atan, none),
        U::Sinh => (UnaryCode::Sinh, none),
        U::Cosh => (UnaryCode::Cosh, none),
        U::Asinh => (UnaryCode::Asinh, none),
        U::Acosh => (UnaryCode::Acosh, none),
        U::Atanh => (UnaryCode::Atanh, none),
        U::Gelu { tanh: false } => (UnaryCode::Gelu, none),
        U::Gelu { tanh: true } => (UnaryCode::GeluTanh, none),
        U::Swish { alpha: 1.0 } => (UnaryCode::Silu, none),
        U::Swish { alpha } => (UnaryCode::Swish, [alpha, 0.0]),
        U::HardSwish => (UnaryCode::HardSwish, none),
        U::HardSigmoid { alpha, beta } => (UnaryCode::HardSigmoid, [alpha, beta]),
        U::LeakyRelu { alpha } => (UnaryCode::LeakyRelu, [alpha, 0.0]),
        U::Elu { alpha } => (UnaryCode::Elu, [alpha, 0.0]),
        U::Selu { alpha, gamma } => (UnaryCode::Selu, [alpha, gamma]),
        U::Celu { alpha } => (UnaryCode::Celu, [alpha, 0.0]),
        U::Softplus => (UnaryCode::Softplus, none),
        U::Softsign => (UnaryCode::Softsign, none),
        U::Mish => (UnaryCode::Mish, none),
        U::ThresholdedRelu { alpha } => (UnaryCode::ThresholdedRelu, [alpha, 0.0]),
        U::Shrink { bias, lambd } => (UnaryCode::Shrink, [bias, lambd]),
        _ => return None,
    })
}

/// The binary kernel code of an IR binary op (`None`: bit operations).
pub fn binary_code(op: BinaryOp) -> Option<BinaryCode> {
    Some(match op {
        BinaryOp::Add => BinaryCode::Add,
        BinaryOp::Sub => BinaryCode::Sub,
        BinaryOp::Mul => BinaryCode::Mul,
        BinaryOp::Div => BinaryCode::Div,
        BinaryOp::Pow => BinaryCode::Pow,
        BinaryOp::PRelu => BinaryCode::PRelu,
        BinaryOp::Mod { fmod: false } => BinaryCode::Mod,
        BinaryOp::Mod { fmod: true } => BinaryCode::Fmod,
        _ => return None,
    })
}

pub fn compare_code(op: CompareOp) -> CompareCode {
    match op {
        CompareOp::Equal => CompareCode::Equal,
        CompareOp::Less => CompareCode::Less,
        CompareOp::Greater => CompareCode::Greater,
        CompareOp::LessOrEqual => CompareCode::LessOrEqual,
        CompareOp::GreaterOrEqual => CompareCode::GreaterOrEqual,
    }
}

pub fn logic_code(op: LogicOp) -> CompareCode {
    match op {
        LogicOp::And => CompareCode::And,
        LogicOp::Or => CompareCode::Or,
        LogicOp::Xor => CompareCode::Xor,
    }
}

/// The kernel-name suffix of the compare kernels (bool as its byte).
fn compare_suffix(op: &str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::Bool => Ok("u8"),
        d => numeric_suffix(op, d),
    }
}

/// The kernel-name part of a Cast's source or target.
fn cast_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        DType::I32 => Ok("i32"),
        DType::I64 => Ok("i64"),
        DType::Bool => Ok("bool"),
        d => Err(CudaError::unsupported("Cast", format!("dtype {d}"))),
    }
}

impl Launcher<'_> {
    /// `y = op(x)` over `n` elements of `dtype` (floats: every code; i32/i64: Relu, Neg,
    /// Abs, Sign). `p` holds the op's parameters (see `UnaryCode`). `y` may be `x`.
    pub fn unary(&self, code: UnaryCode, p: [f32; 2], dtype: DType, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = format!("{code:?}");
        let suffix = numeric_suffix(&op, dtype)?;
        if !dtype.is_float()
            && !matches!(
                code,
                UnaryCode::Relu | UnaryCode::Neg | UnaryCode::Abs | UnaryCode::Sign | UnaryCode::Identity
            )
        {
            return Err(CudaError::unsupported(&op, format!("dtype {dtype}")));
        }
        check_buf(&op, "input", x, n, dtype)?;
        check_buf(&op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (code, p0, p1, xa, ya, nn) = (code as i32, p[0], p[1], x.addr(), y.addr(), to_i64(&op, n)?);
        launch!(self, ELEMENTWISE, format!("kiln_unary_{suffix}"), grid(n); code, p0, p1, xa, ya, nn)
    }

    /// An IR unary op (see [`unary_code`] for those covered).
    pub fn unary_op(&self, op: &UnaryOp, dtype: DType, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let (code, p) = unary_code(op).ok_or_else(|| CudaError::unsupported(op.name(), "no CUDA kernel"))?;
        self.unary(code, p, dtype, x, y, n)
    }

    /// Clip to `[lo, hi]` (either may be absent) of a float tensor.
    pub fn clip(&self, dtype: DType, lo: Option<f32>, hi: Option<f32>, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        float_suffix("Clip", dtype)?;
        let p = [lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY)];
        self.unary(UnaryCode::Clip, p, dtype, x, y, n)
    }

    /// `y = a op b` with numpy broadcasting into `out` (rank ≤ 8). Floats and i32/i64;
    /// Pow is float only. Both inputs have `dtype`.
    pub fn binary(&self, code: BinaryCode, dtype: DType, a: Operand, b: Operand, y: &Buf, out: &[usize]) -> Result<()> {
        let op = format!("{code:?}");
        let suffix = numeric_suffix(&op, dtype)?;
        if code == BinaryCode::Pow && !dtype.is_float() {
            return Err(CudaError::unsupported(&op, format!("dtype {dtype}")));
        }
        let (s, n) = self.broadcast2(&op, dtype, a, b, y, out, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (code, aa, ba, ya, nn, rank) =
            (code as i32, a.0.addr(), b.0.addr(), y.addr(), to_i64(&op, n)?, out.len() as i32);
        launch!(self, ELEMENTWISE, format!("kiln_binary_{suffix}"), grid(n); code, aa, ba, ya, nn, rank, s)
    }

    /// An IR binary op (see [`binary_code`]).
    pub fn binary_op(&self, op: BinaryOp, dtype: DType, a: Operand, b: Operand, y: &Buf, out: &[usize]) -> Result<()> {
        let code = binary_code(op).ok_or_else(|| CudaError::unsupported(op.name(), "no CUDA kernel"))?;
        self.binary(code, dtype, a, b, y, out)
    }

    /// Comparison or logic with broadcasting; `y` is bool (one byte an element).
    pub fn compare(
        &self,
        code: CompareCode,
        dtype: DType,
        a: Operand,
        b: Operand,
        y: &Buf,
        out: &[usize],
    ) -> Result<()> {
        let op = format!("{code:?}");
        let suffix = compare_suffix(&op, dtype)?;
        let (s, n) = self.broadcast2(&op, dtype, a, b, y, out, DType::Bool)?;
        if n == 0 {
            return Ok(());
        }
        let (code, aa, ba, ya, nn, rank) =
            (code as i32, a.0.addr(), b.0.addr(), y.addr(), to_i64(&op, n)?, out.len() as i32);
        launch!(self, ELEMENTWISE, format!("kiln_compare_{suffix}"), grid(n); code, aa, ba, ya, nn, rank, s)
    }

    /// Checks the operands of a broadcasting binary kernel; returns its strides and the
    /// output's element count.
    #[allow(clippy::too_many_arguments)]
    fn broadcast2(
        &self,
        op: &str,
        dtype: DType,
        a: Operand,
        b: Operand,
        y: &Buf,
        out: &[usize],
        out_dtype: DType,
    ) -> Result<(Strides, usize)> {
        check_rank(op, out.len())?;
        let s = Strides::broadcast(a.1, b.1, out).ok_or_else(|| {
            CudaError::invalid(op, format!("shapes {:?} and {:?} do not broadcast to {out:?}", a.1, b.1))
        })?;
        check_buf(op, "input 0", a.0, elems(a.1), dtype)?;
        check_buf(op, "input 1", b.0, elems(b.1), dtype)?;
        let n = elems(out);
        check_buf(op, "output", y, n, out_dtype)?;
        Ok((s, n))
    }

    /// `out = cond ? x : y` with broadcasting, any dtype (by storage); `cond` is bool.
    pub fn where_(
        &self,
        dtype: DType,
        cond: Operand,
        x: Operand,
        y: Operand,
        out: &Buf,
        out_shape: &[usize],
    ) -> Result<()> {
        let op = "Where";
        check_rank(op, out_shape.len())?;
        let s = Strides3::broadcast(cond.1, x.1, y.1, out_shape).ok_or_else(|| {
            CudaError::invalid(
                op,
                format!("shapes {:?}, {:?}, {:?} do not broadcast to {out_shape:?}", cond.1, x.1, y.1),
            )
        })?;
        check_buf(op, "condition", cond.0, elems(cond.1), DType::Bool)?;
        check_buf(op, "x", x.0, elems(x.1), dtype)?;
        check_buf(op, "y", y.0, elems(y.1), dtype)?;
        let n = elems(out_shape);
        check_buf(op, "output", out, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (ca, xa, ya, oa, nn, rank) =
            (cond.0.addr(), x.0.addr(), y.0.addr(), out.addr(), to_i64(op, n)?, out_shape.len() as i32);
        launch!(self, ELEMENTWISE, format!("kiln_where_{}", storage_suffix(dtype)), grid(n); ca, xa, ya, oa, nn, rank, s)
    }

    /// Cast `n` elements between f32, f16, bf16, i32, i64 and bool: floats round once
    /// (to nearest even), float to integer truncates toward zero (NaN gives 0), integers
    /// wrap, bool is "not zero" (NaN is true).
    pub fn cast(&self, from: DType, to: DType, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = "Cast";
        let name = format!("kiln_cast_{}_{}", cast_name(from)?, cast_name(to)?);
        check_buf(op, "input", x, n, from)?;
        check_buf(op, "output", y, n, to)?;
        if n == 0 {
            return Ok(());
        }
        let (xa, ya, nn) = (x.addr(), y.addr(), to_i64(op, n)?);
        launch!(self, ELEMENTWISE, name, grid(n); xa, ya, nn)
    }
}
