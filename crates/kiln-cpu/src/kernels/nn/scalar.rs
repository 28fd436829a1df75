//! Element types as the nn kernels compute them: f16/bf16 widen to f32, every other
//! type computes as itself. [`Acc`] is the compute type and its matrix product.

use std::borrow::Cow;

use half::{bf16, f16};
use kiln_ir::{Element, Tensor};

use crate::Result;

/// A compute type: arithmetic, ordering, and a strided matrix product.
pub trait Acc: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    const ZERO: Self;
    const ONE: Self;
    /// The smallest value (−∞ for floats): the identity of max.
    const LOWEST: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool {
        false
    }

    /// `C = alpha·A·B + beta·C` for an `m×k` A and a `k×n` B given by element strides,
    /// into a row-major C with row stride `ldc`. `beta == 0` does not read C.
    ///
    /// # Safety
    /// Every strided index of A, B and C must be in bounds of their allocations.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        ldc: isize,
    );
}

macro_rules! float_acc {
    ($t:ty, $gemm:path) => {
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self + o
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                ldc: isize,
            ) {
                // SAFETY: the caller guarantees the strided ranges are in bounds.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, ldc, 1) }
            }
        }
    };
}
float_acc!(f32, matrixmultiply::sgemm);
float_acc!(f64, matrixmultiply::dgemm);

macro_rules! int_acc {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                ldc: isize,
            ) {
                // Integers wrap like ORT's; a plain i-j-k loop is enough for the
                // sizes integer products have in practice.
                for i in 0..m as isize {
                    for j in 0..n as isize {
                        let mut s: $t = 0;
                        for p in 0..k as isize {
                            // SAFETY: the caller guarantees the strided ranges are in bounds.
                            let (x, y) = unsafe { (*a.offset(i * rsa + p * csa), *b.offset(p * rsb + j * csb)) };
                            s = s.wrapping_add(x.wrapping_mul(y));
                        }
                        // SAFETY: as above.
                        let out = unsafe { &mut *c.offset(i * ldc + j) };
                        let prev = if beta == 0 { 0 } else { beta.wrapping_mul(*out) };
                        *out = alpha.wrapping_mul(s).wrapping_add(prev);
                    }
                }
            }
        }
    )*};
}
int_acc!(i8, u8, i16, u16, i32, u32, i64, u64);

/// A matrix operand: a slice and the element strides of its rows and columns.
#[derive(Clone, Copy)]
pub struct Mat<'a, A> {
    pub data: &'a [A],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, A> Mat<'a, A> {
    /// A row-major `rows×cols` matrix.
    pub fn row_major(data: &'a [A], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `C = alpha·A·B + beta·C` into the row-major `c` (`a.rows × b.cols`, row stride `ldc`).
/// Shapes and bounds are checked here, so callers stay safe.
pub fn gemm<A: Acc>(alpha: A, a: Mat<A>, b: Mat<A>, beta: A, c: &mut [A], ldc: usize) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let c_ok = m == 0 || n == 0 || ((m - 1) * ldc + n <= c.len() && n <= ldc);
    if b.rows != k || !a.in_bounds() || !b.in_bounds() || !c_ok {
        return Err(crate::CpuError::invalid("gemm", format!("bad operands: {m}x{k} · {}x{n}", b.rows)));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        // An empty sum: C = beta·C.
        for row in c.chunks_mut(ldc.max(1)).take(m) {
            row[..n].iter_mut().for_each(|v| *v = if beta == A::ZERO { A::ZERO } else { beta.mul(*v) });
        }
        return Ok(());
    }
    // SAFETY: in_bounds and c_ok above check every strided index.
    unsafe {
        A::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
        );
    }
    Ok(())
}

/// A tensor element type with its compute type.
pub trait NnElem: Element {
    type A: Acc;
    fn to_acc(self) -> Self::A;
    fn from_acc(a: Self::A) -> Self;

    /// The elements in the compute type (borrowed when it is the same type).
    fn acc_slice(s: &[Self]) -> Cow<'_, [Self::A]> {
        Cow::Owned(s.iter().map(|v| v.to_acc()).collect())
    }

    fn from_acc_vec(v: Vec<Self::A>) -> Vec<Self> {
        v.into_iter().map(Self::from_acc).collect()
    }
}

macro_rules! same_elem {
    ($($t:ty),*) => {$(
        impl NnElem for $t {
            type A = $t;
            fn to_acc(self) -> $t {
                self
            }
            fn from_acc(a: $t) -> $t {
                a
            }
            fn acc_slice(s: &[$t]) -> Cow<'_, [$t]> {
                Cow::Borrowed(s)
            }
            fn from_acc_vec(v: Vec<$t>) -> Vec<$t> {
                v
            }
        }
    )*};
}
same_elem!(f32, f64, i8, u8, i16, u16, i32, u32, i64, u64);

impl NnElem for f16 {
    type A = f32;
    fn to_acc(self) -> f32 {
        self.to_f32()
    }
    fn from_acc(a: f32) -> f16 {
        f16::from_f32(a)
    }
}

impl NnElem for bf16 {
    type A = f32;
    fn to_acc(self) -> f32 {
        self.to_f32()
    }
    fn from_acc(a: f32) -> bf16 {
        bf16::from_f32(a)
    }
}

/// A tensor's elements in the compute type of `T`.
/// Borrowed (no copy) when `T` computes as itself and the tensor's bytes are aligned.
pub fn acc_data<T: NnElem>(t: &Tensor) -> Result<Cow<'_, [T::A]>> {
    Ok(match t.as_slice::<T>()? {
        Cow::Borrowed(s) => T::acc_slice(s),
        Cow::Owned(v) => Cow::Owned(T::acc_slice(&v).into_owned()),
    })
}

/// A tensor from compute-type values, rounded once to `T`.
pub fn from_acc<T: NnElem>(shape: Vec<usize>, v: Vec<T::A>) -> Result<Tensor> {
    Ok(Tensor::from_vec(shape, T::from_acc_vec(v))?)
}
