//! Launchers of `elementwise.cu`: unary maps, broadcasting binary ops, comparisons and
//! logic, Where, Cast.

use kiln_ir::DType;
use kiln_ir::ops::elementwise::{BinaryOp, CompareOp, LogicOp, UnaryOp};

use super::{Launcher, check_buf, check_rank, elems, float_suffix, grid, launch, storage_suffix, to_i64};
use crate::kernels::{BinaryCode, CompareCode, ELEMENTWISE, Strides, Strides3, UnaryCode, dtype_code};
use crate::{CudaError, Result};

use super::Buf;

/// A tensor operand: its buffer and shape.
pub type Operand<'s, 'b> = (&'s Buf<'b>, &'s [usize]);

/// The unary kernel code and its two parameters for an IR unary op (BitwiseNot: integers
/// only).
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
        U::BitwiseNot => (UnaryCode::BitNot, none),
    })
}

/// The binary kernel code of an IR binary op (bit operations: integers only).
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
        BinaryOp::BitwiseAnd => BinaryCode::BitAnd,
        BinaryOp::BitwiseOr => BinaryCode::BitOr,
        BinaryOp::BitwiseXor => BinaryCode::BitXor,
        BinaryOp::BitShift { left: true } => BinaryCode::Shl,
        BinaryOp::BitShift { left: false } => BinaryCode::Shr,
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

/// The kernel-name suffix of the integer elementwise kernels.
pub fn int_suffix(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::I8 => "i8",
        DType::U8 => "u8",
        DType::I16 => "i16",
        DType::U16 => "u16",
        DType::I32 => "i32",
        DType::U32 => "u32",
        DType::I64 => "i64",
        DType::U64 => "u64",
        _ => return None,
    })
}

/// The kernel-name suffix of the unary and binary kernels: floats (f32, f16, bf16
/// computed in float; f64 in double, binary only) and every integer.
fn arith_suffix(op: &str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F64 => Ok("f64"),
        d => int_suffix(d).map_or_else(|| float_suffix(op, d), Ok),
    }
}

/// The kernel-name suffix of the compare kernels (bool as its byte).
fn compare_suffix(op: &str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::Bool => Ok("u8"),
        d => arith_suffix(op, d),
    }
}

/// Whether `code` has an integer kernel.
pub fn unary_int_ok(code: UnaryCode) -> bool {
    matches!(
        code,
        UnaryCode::Relu | UnaryCode::Neg | UnaryCode::Abs | UnaryCode::Sign | UnaryCode::Identity | UnaryCode::BitNot
    )
}

/// Whether `code` has an f64 kernel.
pub fn unary_f64_ok(code: UnaryCode) -> bool {
    use UnaryCode as U;
    matches!(
        code,
        U::Relu
            | U::Neg
            | U::Abs
            | U::Sign
            | U::Identity
            | U::Floor
            | U::Ceil
            | U::Round
            | U::Sqrt
            | U::Exp
            | U::Log
            | U::Reciprocal
            | U::Sin
            | U::Cos
            | U::Tanh
            | U::Erf
            | U::Sigmoid
    )
}

/// Whether the binary kernels run `code` on `dtype`.
pub fn binary_ok(code: BinaryCode, dtype: DType) -> bool {
    let bits =
        matches!(code, BinaryCode::BitAnd | BinaryCode::BitOr | BinaryCode::BitXor | BinaryCode::Shl | BinaryCode::Shr);
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => !bits,
        d => int_suffix(d).is_some() && code != BinaryCode::Pow,
    }
}

/// The dtypes `kiln_cast` reads and writes (all of Kiln's).
pub fn cast_ok(_dtype: DType) -> bool {
    true
}

impl Launcher<'_> {
    /// `y = op(x)` over `n` elements of `dtype` (floats: every code; i32/i64: Relu, Neg,
    /// Abs, Sign). `p` holds the op's parameters (see `UnaryCode`). `y` may be `x`.
    pub fn unary(&self, code: UnaryCode, p: [f32; 2], dtype: DType, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = format!("{code:?}");
        let suffix = arith_suffix(&op, dtype)?;
        let float = matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
        let ok = match dtype {
            DType::F64 => unary_f64_ok(code),
            _ if float => code != UnaryCode::BitNot,
            _ => unary_int_ok(code),
        };
        if !ok {
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

    /// `y = a op b` with numpy broadcasting into `out` (rank ≤ 8). Floats and every
    /// integer (see [`binary_ok`]). Both inputs have `dtype`.
    pub fn binary(&self, code: BinaryCode, dtype: DType, a: Operand, b: Operand, y: &Buf, out: &[usize]) -> Result<()> {
        let op = format!("{code:?}");
        let suffix = arith_suffix(&op, dtype)?;
        if !binary_ok(code, dtype) {
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

    /// Cast `n` elements between any of Kiln's dtypes, as the CPU backend does: through
    /// an exact intermediate, rounded once (to nearest even); float to integer toward
    /// zero, integers wrapping; bool is "not zero" (NaN is true). FP8 targets saturate.
    pub fn cast(&self, from: DType, to: DType, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        self.cast_sat(from, to, true, x, y, n)
    }

    /// [`Launcher::cast`] with ONNX's `saturate` for FP8 targets: out-of-range values
    /// become the largest finite value, else infinity (E5M2) or NaN (E4M3FN).
    pub fn cast_sat(&self, from: DType, to: DType, saturate: bool, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = "Cast";
        check_buf(op, "input", x, n, from)?;
        check_buf(op, "output", y, n, to)?;
        if n == 0 {
            return Ok(());
        }
        let (f, t, sat, xa, ya, nn) =
            (dtype_code(from), dtype_code(to), i32::from(saturate), x.addr(), y.addr(), to_i64(op, n)?);
        launch!(self, ELEMENTWISE, "kiln_cast", grid(n); f, t, sat, xa, ya, nn)
    }

    /// Pow of a base of `base` dtype (the output's) and an exponent of `exp` dtype, in
    /// double, broadcasting; integer outputs saturate (toward zero).
    pub fn pow_any(&self, base: DType, exp: DType, a: Operand, b: Operand, y: &Buf, out: &[usize]) -> Result<()> {
        let op = "Pow";
        check_rank(op, out.len())?;
        let s = Strides::broadcast(a.1, b.1, out).ok_or_else(|| {
            CudaError::invalid(op, format!("shapes {:?} and {:?} do not broadcast to {out:?}", a.1, b.1))
        })?;
        if matches!(base, DType::Bool | DType::F8E4M3FN | DType::F8E5M2) {
            return Err(CudaError::unsupported(op, format!("base dtype {base}")));
        }
        check_buf(op, "base", a.0, elems(a.1), base)?;
        check_buf(op, "exponent", b.0, elems(b.1), exp)?;
        let n = elems(out);
        check_buf(op, "output", y, n, base)?;
        if n == 0 {
            return Ok(());
        }
        let (bt, et, aa, ba, ya, nn, rank) =
            (dtype_code(base), dtype_code(exp), a.0.addr(), b.0.addr(), y.addr(), to_i64(op, n)?, out.len() as i32);
        launch!(self, ELEMENTWISE, "kiln_pow_any", grid(n); bt, et, aa, ba, ya, nn, rank, s)
    }

    /// IsNaN (`inf: None`) or IsInf (detecting +inf, -inf) of a float tensor into bool.
    pub fn classify(&self, dtype: DType, inf: Option<(bool, bool)>, x: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = if inf.is_some() { "IsInf" } else { "IsNaN" };
        if !dtype.is_float() {
            return Err(CudaError::unsupported(op, format!("dtype {dtype}")));
        }
        check_buf(op, "input", x, n, dtype)?;
        check_buf(op, "output", y, n, DType::Bool)?;
        if n == 0 {
            return Ok(());
        }
        let mode = inf.map_or(0, |(p, q)| 4 | i32::from(p) | (i32::from(q) << 1));
        let (dt, xa, ya, nn) = (dtype_code(dtype), x.addr(), y.addr(), to_i64(op, n)?);
        launch!(self, ELEMENTWISE, "kiln_classify", grid(n); dt, mode, xa, ya, nn)
    }

    /// Dropout of a float tensor into `y` (and `mask`, of `mask_dtype`): a copy with an
    /// all-true mask unless `training` (a bool read on the device) is true and `ratio`
    /// (a float scalar of `ratio_dtype`, read on the device; absent: 0.5) above 0, when
    /// elements are dropped at random (from `seed`) and the rest scaled by 1/(1-ratio).
    #[allow(clippy::too_many_arguments)]
    pub fn dropout(
        &self,
        dtype: DType,
        x: &Buf,
        y: &Buf,
        mask: Option<(&Buf, DType)>,
        n: usize,
        ratio: Option<(&Buf, DType)>,
        training: Option<&Buf>,
        seed: u64,
    ) -> Result<()> {
        let op = "Dropout";
        if !dtype.is_float() {
            return Err(CudaError::unsupported(op, format!("dtype {dtype}")));
        }
        check_buf(op, "input", x, n, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        if let Some((m, t)) = mask {
            check_buf(op, "mask", m, n, t)?;
        }
        if let Some((r, t)) = ratio {
            if !t.is_float() {
                return Err(CudaError::unsupported(op, format!("ratio of dtype {t}")));
            }
            check_buf(op, "ratio", r, 1, t)?;
        }
        if let Some(t) = training {
            check_buf(op, "training_mode", t, 1, DType::Bool)?;
        }
        if n == 0 {
            return Ok(());
        }
        let (dt, xa, ya, nn) = (dtype_code(dtype), x.addr(), y.addr(), to_i64(op, n)?);
        let (mt, ma) = mask.map_or((0, 0u64), |(m, t)| (dtype_code(t), m.addr()));
        let (rt, ra) = ratio.map_or((0, 0u64), |(r, t)| (dtype_code(t), r.addr()));
        let ta = training.map_or(0u64, |t| t.addr());
        launch!(self, ELEMENTWISE, "kiln_dropout", grid(n); dt, xa, ya, mt, ma, nn, rt, ra, ta, seed)
    }

    /// Range: `n` elements `start + i · delta` of `dtype`, the scalars `start` and
    /// `delta` read on the device.
    pub fn range(&self, dtype: DType, start: &Buf, delta: &Buf, y: &Buf, n: usize) -> Result<()> {
        let op = "Range";
        if !(matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) || dtype.is_integer()) {
            return Err(CudaError::unsupported(op, format!("dtype {dtype}")));
        }
        check_buf(op, "start", start, 1, dtype)?;
        check_buf(op, "delta", delta, 1, dtype)?;
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (dt, sa, da, ya, nn) = (dtype_code(dtype), start.addr(), delta.addr(), y.addr(), to_i64(op, n)?);
        launch!(self, ELEMENTWISE, "kiln_range", grid(n); dt, sa, da, ya, nn)
    }

    /// EyeLike: a `rows × cols` matrix of `dtype`, ones where column − row = `k`.
    pub fn eye(&self, dtype: DType, k: i64, y: &Buf, rows: usize, cols: usize) -> Result<()> {
        let op = "EyeLike";
        let n = rows.checked_mul(cols).ok_or_else(|| CudaError::invalid(op, "too large"))?;
        check_buf(op, "output", y, n, dtype)?;
        if n == 0 {
            return Ok(());
        }
        let (dt, ya, r, c) = (dtype_code(dtype), y.addr(), to_i64(op, rows)?, to_i64(op, cols)?);
        launch!(self, ELEMENTWISE, "kiln_eye", grid(n); dt, k, ya, r, c)
    }
}
