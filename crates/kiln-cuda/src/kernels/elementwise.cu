// Elementwise kernels: unary maps (activations and float math), broadcasting binary
// arithmetic and bit operations, comparisons and logic (bool out, one byte), Where, and
// the kernels taking any dtype as a run-time code (Cast, mixed Pow, IsNaN/IsInf, Range,
// EyeLike, Dropout). f32/f16/bf16 are computed in float and rounded once, f64 in
// double; integers (all eight) in their own type, wrapping. Broadcasting is by strides: the output index is decomposed over
// `rank` dims and each input's stride for a broadcast dim is 0.

typedef signed char i8;
typedef short i16;

// Whether an integer type is signed (no comparisons of unsigned values with -1).
template <typename T> struct IsSigned { static const bool value = (T)(-1) < (T)0; };

struct Strides {
    i64 out_dims[KILN_MAX_RANK];
    i64 a[KILN_MAX_RANK];
    i64 b[KILN_MAX_RANK];
};

struct Strides3 {
    i64 out_dims[KILN_MAX_RANK];
    i64 c[KILN_MAX_RANK];
    i64 x[KILN_MAX_RANK];
    i64 y[KILN_MAX_RANK];
};

// Keep in step with `UnaryCode` in kernels/mod.rs.
enum UnaryCode {
    U_RELU = 0, U_SIGMOID, U_TANH, U_EXP, U_LOG, U_SQRT, U_NEG, U_ABS, U_ERF, U_GELU, U_SILU,
    U_GELU_TANH, U_RECIPROCAL, U_LEAKY_RELU, U_HARD_SIGMOID, U_HARD_SWISH, U_CLIP, U_ELU,
    U_SOFTPLUS, U_FLOOR, U_CEIL, U_ROUND, U_SWISH, U_SIGN, U_SIN, U_COS, U_SOFTSIGN, U_MISH,
    U_SELU, U_CELU, U_THRESHOLDED_RELU, U_SHRINK, U_IDENTITY, U_TAN, U_ASIN, U_ACOS, U_ATAN, U_SINH,
    U_COSH, U_ASINH, U_ACOSH, U_ATANH, U_BIT_NOT
};
// Keep in step with `BinaryCode`.
enum BinaryCode {
    B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_PRELU, B_MOD, B_FMOD, B_BIT_AND, B_BIT_OR, B_BIT_XOR,
    B_SHL, B_SHR
};
// Keep in step with `CompareCode`.
enum CompareCode { C_EQ = 0, C_LT, C_GT, C_LE, C_GE, C_AND, C_OR, C_XOR };

__device__ __forceinline__ float sigmoid(float x) {
    if (x >= 0.f) return 1.f / (1.f + expf(-x));
    float e = expf(x);
    return e / (1.f + e);
}

__device__ __forceinline__ float softplus(float x) {
    return x != x ? x : fmaxf(x, 0.f) + log1pf(expf(-fabsf(x)));
}

// `p0`, `p1`: the op's attributes (alpha/beta, min/max, bias/lambd…).
__device__ __forceinline__ float unary(int op, float x, float p0, float p1) {
    switch (op) {
        case U_RELU: return x < 0.f ? 0.f : x;  // NaN stays NaN
        case U_SIGMOID: return sigmoid(x);
        case U_TANH: return tanhf(x);
        case U_EXP: return expf(x);
        case U_LOG: return logf(x);
        case U_SQRT: return sqrtf(x);
        case U_NEG: return -x;
        case U_ABS: return fabsf(x);
        case U_ERF: return erff(x);
        case U_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
        case U_SILU: return x * sigmoid(x);
        case U_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
        case U_RECIPROCAL: return 1.f / x;
        case U_LEAKY_RELU: return x < 0.f ? p0 * x : x;
        case U_HARD_SIGMOID: return fminf(fmaxf(p0 * x + p1, 0.f), 1.f);
        case U_HARD_SWISH: return x * fminf(fmaxf(x * (1.f / 6.f) + 0.5f, 0.f), 1.f);
        case U_CLIP: {  // NaN stays NaN; lo > hi gives hi
            float v = x < p0 ? p0 : x;
            return v > p1 ? p1 : v;
        }
        case U_ELU: return x < 0.f ? p0 * expm1f(x) : x;
        case U_SOFTPLUS: return softplus(x);
        case U_FLOOR: return floorf(x);
        case U_CEIL: return ceilf(x);
        case U_ROUND: return rintf(x);  // half to even
        case U_SWISH: return x * sigmoid(p0 * x);
        case U_SIGN: return x > 0.f ? 1.f : (x < 0.f ? -1.f : x);
        case U_SIN: return sinf(x);
        case U_COS: return cosf(x);
        case U_SOFTSIGN: return x / (1.f + fabsf(x));
        case U_MISH: return x * tanhf(softplus(x));
        case U_SELU: return x > 0.f ? p1 * x : p1 * (p0 * expf(x) - p0);
        case U_CELU: return fmaxf(x, 0.f) + fminf(p0 * expm1f(x / p0), 0.f);
        case U_THRESHOLDED_RELU: return x > p0 ? x : 0.f;
        case U_SHRINK: return x < -p1 ? x + p0 : (x > p1 ? x - p0 : 0.f);
        case U_IDENTITY: return x;
        case U_TAN: return tanf(x);
        case U_ASIN: return asinf(x);
        case U_ACOS: return acosf(x);
        case U_ATAN: return atanf(x);
        case U_SINH: return sinhf(x);
        case U_COSH: return coshf(x);
        case U_ASINH: return asinhf(x);
        case U_ACOSH: return acoshf(x);
        case U_ATANH: return atanhf(x);
    }
    return x;
}

// Integer unary ops: the launcher only sends these codes for integers.
// Integers wrap (Neg and Abs of the minimum give the minimum).
template <typename T> __device__ __forceinline__ T unary_int(int op, T x) {
    typedef unsigned long long U;
    const bool neg = IsSigned<T>::value && x < (T)0;
    switch (op) {
        case U_RELU: return neg ? (T)0 : x;
        case U_NEG: return (T)(0 - (U)x);
        case U_ABS: return neg ? (T)(0 - (U)x) : x;
        case U_SIGN: return x == (T)0 ? (T)0 : (neg ? (T)(0 - (U)1) : (T)1);
        case U_BIT_NOT: return (T)~x;
    }
    return x;
}

// Float math in F (float for f32/f16/bf16, double for f64).
__device__ __forceinline__ float k_fmod(float a, float b) { return fmodf(a, b); }
__device__ __forceinline__ double k_fmod(double a, double b) { return fmod(a, b); }
__device__ __forceinline__ float k_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double k_pow(double a, double b) { return pow(a, b); }

template <typename F> __device__ __forceinline__ F binary(int op, F a, F b) {
    const F zero = (F)0;
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_MAX: return (a > b || a != a) ? a : b;  // NaN wins
        case B_MIN: return (a < b || a != a) ? a : b;
        case B_POW: return k_pow(a, b);
        case B_PRELU: return a < zero ? a * b : a;
        case B_MOD: {  // Python's: the sign of the divisor
            F r = k_fmod(a, b);
            return (r != zero && ((r < zero) != (b < zero))) ? r + b : r;
        }
        case B_FMOD: return k_fmod(a, b);
    }
    return a;
}

// Integer arithmetic wraps; division truncates; division by zero gives 0 (the host
// reports it as an error; a kernel cannot).
template <typename T> __device__ __forceinline__ T binary_int(int op, T a, T b) {
    typedef unsigned long long U;
    const bool sg = IsSigned<T>::value;
    const bool minus_one = sg && b == (T)(0 - (U)1);
    const int bits = 8 * (int)sizeof(T);
    switch (op) {
        case B_ADD: return (T)((U)a + (U)b);
        case B_SUB: return (T)((U)a - (U)b);
        case B_MUL: return (T)((U)a * (U)b);
        case B_DIV: return b == (T)0 ? (T)0 : (minus_one ? (T)(0 - (U)a) : (T)(a / b));
        case B_MAX: return a > b ? a : b;
        case B_MIN: return a < b ? a : b;
        case B_PRELU: return (sg && a < (T)0) ? (T)((U)a * (U)b) : a;
        case B_MOD: {
            if (b == (T)0 || minus_one) return 0;
            T r = (T)(a % b);
            return (sg && r != (T)0 && ((r < (T)0) != (b < (T)0))) ? (T)(r + b) : r;
        }
        case B_FMOD: return (b == (T)0 || minus_one) ? (T)0 : (T)(a % b);
        case B_BIT_AND: return (T)(a & b);
        case B_BIT_OR: return (T)(a | b);
        case B_BIT_XOR: return (T)(a ^ b);
        // Shifting out every bit (or by a negative count) gives 0.
        case B_SHL: return ((sg && b < (T)0) || (U)b >= (U)bits) ? (T)0 : (T)((U)a << (int)b);
        case B_SHR: return ((sg && b < (T)0) || (U)b >= (U)bits) ? (T)0 : (T)(a >> (int)b);
    }
    return a;
}

// Values as compared: floats widened to float, integers as themselves.
__device__ __forceinline__ float cmp_val(float v) { return v; }
__device__ __forceinline__ float cmp_val(f16 v) { return __half2float(v); }
__device__ __forceinline__ float cmp_val(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ double cmp_val(double v) { return v; }
__device__ __forceinline__ i8 cmp_val(i8 v) { return v; }
__device__ __forceinline__ u8 cmp_val(u8 v) { return v; }
__device__ __forceinline__ i16 cmp_val(i16 v) { return v; }
__device__ __forceinline__ u16 cmp_val(u16 v) { return v; }
__device__ __forceinline__ i32 cmp_val(i32 v) { return v; }
__device__ __forceinline__ u32 cmp_val(u32 v) { return v; }
__device__ __forceinline__ i64 cmp_val(i64 v) { return v; }
__device__ __forceinline__ u64 cmp_val(u64 v) { return v; }

template <typename V> __device__ __forceinline__ u8 compare(int op, V a, V b) {
    switch (op) {
        case C_EQ: return a == b;
        case C_LT: return a < b;
        case C_GT: return a > b;
        case C_LE: return a <= b;
        case C_GE: return a >= b;
        case C_AND: return (a != 0) && (b != 0);
        case C_OR: return (a != 0) || (b != 0);
        case C_XOR: return (a != 0) != (b != 0);
    }
    return 0;
}

// Offsets of output element `i` in inputs a and b.
__device__ __forceinline__ void offsets2(i64 i, int rank, const Strides& s, i64& ia, i64& ib) {
    i64 rem = i;
    ia = 0;
    ib = 0;
    for (int d = rank - 1; d >= 0; --d) {
        i64 c = rem % s.out_dims[d];
        rem /= s.out_dims[d];
        ia += c * s.a[d];
        ib += c * s.b[d];
    }
}

template <typename T>
__device__ void unary_kernel(int op, float p0, float p1, const T* x, T* y, i64 n) {
    KILN_GRID_STRIDE(i, n) { y[i] = from_f<T>(unary(op, to_f(x[i]), p0, p1)); }
}

template <typename T> __device__ void unary_int_kernel(int op, const T* x, T* y, i64 n) {
    KILN_GRID_STRIDE(i, n) { y[i] = unary_int<T>(op, x[i]); }
}

template <typename T>
__device__ void binary_kernel(int op, const T* a, const T* b, T* y, i64 n, int rank, const Strides& s) {
    KILN_GRID_STRIDE(i, n) {
        i64 ia, ib;
        offsets2(i, rank, s, ia, ib);
        y[i] = from_f<T>(binary<float>(op, to_f(a[ia]), to_f(b[ib])));
    }
}

__device__ void binary_f64_kernel(int op, const double* a, const double* b, double* y, i64 n, int rank, const Strides& s) {
    KILN_GRID_STRIDE(i, n) {
        i64 ia, ib;
        offsets2(i, rank, s, ia, ib);
        y[i] = binary<double>(op, a[ia], b[ib]);
    }
}

template <typename T>
__device__ void binary_int_kernel(int op, const T* a, const T* b, T* y, i64 n, int rank, const Strides& s) {
    KILN_GRID_STRIDE(i, n) {
        i64 ia, ib;
        offsets2(i, rank, s, ia, ib);
        y[i] = binary_int<T>(op, a[ia], b[ib]);
    }
}

template <typename T>
__device__ void compare_kernel(int op, const T* a, const T* b, u8* y, i64 n, int rank, const Strides& s) {
    KILN_GRID_STRIDE(i, n) {
        i64 ia, ib;
        offsets2(i, rank, s, ia, ib);
        y[i] = compare(op, cmp_val(a[ia]), cmp_val(b[ib]));
    }
}

// Where by storage: T is the unsigned integer of the element's size.
template <typename T>
__device__ void where_kernel(const u8* c, const T* x, const T* y, T* out, i64 n, int rank, const Strides3& s) {
    KILN_GRID_STRIDE(i, n) {
        i64 rem = i, ic = 0, ix = 0, iy = 0;
        for (int d = rank - 1; d >= 0; --d) {
            i64 k = rem % s.out_dims[d];
            rem /= s.out_dims[d];
            ic += k * s.c[d];
            ix += k * s.x[d];
            iy += k * s.y[d];
        }
        out[i] = c[ic] ? x[ix] : y[iy];
    }
}

// ---------------------------------------------------------------------------------------
// Elements of any dtype, chosen at run time (`DtCode`, in step with `DType::ALL`): Cast,
// mixed-dtype Pow, IsNaN/IsInf, EyeLike. Each value goes through an exact intermediate
// (double for floats, 64-bit integers for integers) and is rounded once into the target,
// as the CPU backend's Cast does.
// ---------------------------------------------------------------------------------------

enum DtCode {
    DT_F32 = 0, DT_F16, DT_BF16, DT_F64, DT_I8, DT_U8, DT_I16, DT_U16, DT_I32, DT_U32, DT_I64, DT_U64, DT_BOOL,
    DT_F8E4M3FN, DT_F8E5M2
};

// kind 0: a float in `f`; 1: a signed integer in `i`; 2: an unsigned one (its bits in `i`).
struct Repr {
    int kind;
    double f;
    i64 i;
};

__device__ __forceinline__ Repr repr_f(double f) { Repr r; r.kind = 0; r.f = f; r.i = 0; return r; }
__device__ __forceinline__ Repr repr_i(i64 i) { Repr r; r.kind = 1; r.f = 0.0; r.i = i; return r; }
__device__ __forceinline__ Repr repr_u(u64 u) { Repr r; r.kind = 2; r.f = 0.0; r.i = (i64)u; return r; }

__device__ __forceinline__ double repr_f64(Repr r) {
    return r.kind == 0 ? r.f : (r.kind == 1 ? (double)r.i : (double)(u64)r.i);
}

// floor(log2(a)) of a positive finite double (its biased exponent field).
__device__ __forceinline__ int f64_exponent(double a) {
    return (int)((__double_as_longlong(a) >> 52) & 0x7FF) - 1023;
}

// OCP FP8: E4M3FN (no infinities, NaN 0x7F, max 448) and E5M2 (inf 0x7C, NaN 0x7E, max
// 57344). Round to nearest even; out of range: the largest finite value when saturating,
// else infinity (E5M2) or NaN (E4M3FN).
struct Fp8Fmt {
    int man_bits, bias;
    double max;
    int max_code, inf_code, nan_code;  // inf_code -1: none
};

__device__ __forceinline__ Fp8Fmt fp8_fmt(int dt) {
    Fp8Fmt f;
    if (dt == DT_F8E4M3FN) {
        f.man_bits = 3; f.bias = 7; f.max = 448.0; f.max_code = 0x7E; f.inf_code = -1; f.nan_code = 0x7F;
    } else {
        f.man_bits = 2; f.bias = 15; f.max = 57344.0; f.max_code = 0x7B; f.inf_code = 0x7C; f.nan_code = 0x7E;
    }
    return f;
}

__device__ u8 fp8_encode(const Fp8Fmt& f, double v, bool saturate) {
    const int sign = signbit(v) ? 0x80 : 0;
    if (isnan(v)) return (u8)(sign | f.nan_code);
    const double a = fabs(v);
    const int over = saturate ? f.max_code : (f.inf_code >= 0 ? f.inf_code : f.nan_code);
    if (isinf(a)) return (u8)(sign | over);
    if (a == 0.0) return (u8)sign;
    const int min_exp = 1 - f.bias;
    int e = max(f64_exponent(a), min_exp);
    const double quantum = ldexp(1.0, e - f.man_bits);
    const double r = rint(a / quantum) * quantum;
    if (r > f.max) return (u8)(sign | over);
    if (r == 0.0) return (u8)sign;
    e = f64_exponent(r);
    unsigned code;
    if (e < min_exp) {
        code = (unsigned)(r / ldexp(1.0, min_exp - f.man_bits));
    } else {
        code = ((unsigned)(e + f.bias) << f.man_bits) | ((unsigned)(r / ldexp(1.0, e - f.man_bits)) - (1u << f.man_bits));
    }
    return (u8)(sign | (int)code);
}

__device__ float fp8_decode(const Fp8Fmt& f, u8 b) {
    const double sign = (b & 0x80) ? -1.0 : 1.0;
    const int bits = b & 0x7F;
    if (bits == f.nan_code || (f.inf_code >= 0 && bits > 0x7C)) return __int_as_float(0x7fc00000);
    if (bits == f.inf_code) return (float)(sign * (double)KILN_INF);
    const int man = bits & ((1 << f.man_bits) - 1);
    const int ex = bits >> f.man_bits;
    const double v = ex == 0 ? man * ldexp(1.0, 1 - f.bias - f.man_bits)
                             : (double)((1 << f.man_bits) + man) * ldexp(1.0, ex - f.bias - f.man_bits);
    return (float)(sign * v);
}

__device__ Repr load_any(int dt, const void* p, i64 i) {
    switch (dt) {
        case DT_F32: return repr_f((double)((const float*)p)[i]);
        case DT_F16: return repr_f((double)__half2float(((const f16*)p)[i]));
        case DT_BF16: return repr_f((double)__bfloat162float(((const bf16*)p)[i]));
        case DT_F64: return repr_f(((const double*)p)[i]);
        case DT_I8: return repr_i(((const i8*)p)[i]);
        case DT_U8: return repr_u(((const u8*)p)[i]);
        case DT_I16: return repr_i(((const i16*)p)[i]);
        case DT_U16: return repr_u(((const u16*)p)[i]);
        case DT_I32: return repr_i(((const i32*)p)[i]);
        case DT_U32: return repr_u(((const u32*)p)[i]);
        case DT_I64: return repr_i(((const i64*)p)[i]);
        case DT_U64: return repr_u(((const u64*)p)[i]);
        case DT_BOOL: return repr_u(((const u8*)p)[i] != 0 ? 1 : 0);
        case DT_F8E4M3FN:
        case DT_F8E5M2: return repr_f((double)fp8_decode(fp8_fmt(dt), ((const u8*)p)[i]));
    }
    return repr_f(0.0);
}

// Rust's `f as i64` / `f as u64`: toward zero, saturating, NaN 0.
__device__ __forceinline__ i64 sat_i64(double f) {
    if (f != f) return 0;
    if (f >= 9223372036854775808.0) return 0x7fffffffffffffffLL;
    if (f <= -9223372036854775808.0) return (i64)0x8000000000000000ULL;
    return (i64)f;
}
__device__ __forceinline__ u64 sat_u64(double f) {
    if (!(f > 0.0)) return 0;
    if (f >= 18446744073709551616.0) return 0xffffffffffffffffULL;
    return (u64)f;
}

// A cast's integer bits: floats toward zero (saturating at 64 bits, NaN 0), then wrapped.
__device__ __forceinline__ i64 repr_bits(Repr r) {
    if (r.kind != 0) return r.i;
    return r.f < 0.0 ? sat_i64(r.f) : (i64)sat_u64(r.f);
}

// f64 into half types as the CPU's `half` crate does it (with x86's F16C): f16 through
// f32 (two roundings), bf16 from the f64's upper 32 bits (its low mantissa bits dropped,
// then rounded to nearest even).
__device__ __forceinline__ f16 f16_of_f64(double v) { return __float2half_rn((float)v); }
__device__ __forceinline__ bf16 bf16_of_f64(double v) {
    if (v == v) v = __longlong_as_double(__double_as_longlong(v) & (i64)0xFFFFFFFF00000000ULL);
    return __double2bfloat16(v);
}

// Stores `r` as Cast does: floats round once (to nearest even), integers wrap, bool is
// "not zero" (NaN is true), FP8 sees the value through f32 first.
__device__ void store_cast(int dt, void* p, i64 i, Repr r, bool saturate) {
    switch (dt) {
        case DT_F32:
            ((float*)p)[i] = r.kind == 0 ? (float)r.f : (r.kind == 1 ? (float)r.i : (float)(u64)r.i);
            return;
        case DT_F16: ((f16*)p)[i] = f16_of_f64(repr_f64(r)); return;
        case DT_BF16: ((bf16*)p)[i] = bf16_of_f64(repr_f64(r)); return;
        case DT_F64: ((double*)p)[i] = repr_f64(r); return;
        case DT_I8: ((i8*)p)[i] = (i8)repr_bits(r); return;
        case DT_U8: ((u8*)p)[i] = (u8)repr_bits(r); return;
        case DT_I16: ((i16*)p)[i] = (i16)repr_bits(r); return;
        case DT_U16: ((u16*)p)[i] = (u16)repr_bits(r); return;
        case DT_I32: ((i32*)p)[i] = (i32)repr_bits(r); return;
        case DT_U32: ((u32*)p)[i] = (u32)repr_bits(r); return;
        case DT_I64: ((i64*)p)[i] = repr_bits(r); return;
        case DT_U64: ((u64*)p)[i] = (u64)repr_bits(r); return;
        case DT_BOOL: ((u8*)p)[i] = (r.kind == 0 ? r.f != 0.0 : r.i != 0) ? 1 : 0; return;
        case DT_F8E4M3FN:
        case DT_F8E5M2: ((u8*)p)[i] = fp8_encode(fp8_fmt(dt), (double)(float)repr_f64(r), saturate); return;
    }
}

// Stores a double result as an arithmetic op's output: floats round once, integers
// saturate toward zero (Rust's `as`; NaN 0).
__device__ void store_sat(int dt, void* p, i64 i, double v) {
    switch (dt) {
        case DT_F32: ((float*)p)[i] = (float)v; return;
        case DT_F16: ((f16*)p)[i] = f16_of_f64(v); return;
        case DT_BF16: ((bf16*)p)[i] = bf16_of_f64(v); return;
        case DT_F64: ((double*)p)[i] = v; return;
        case DT_I8: ((i8*)p)[i] = (i8)max(-128LL, min(127LL, sat_i64(v))); return;
        case DT_U8: ((u8*)p)[i] = (u8)min(255ULL, sat_u64(v)); return;
        case DT_I16: ((i16*)p)[i] = (i16)max(-32768LL, min(32767LL, sat_i64(v))); return;
        case DT_U16: ((u16*)p)[i] = (u16)min(65535ULL, sat_u64(v)); return;
        case DT_I32: ((i32*)p)[i] = (i32)max(-2147483648LL, min(2147483647LL, sat_i64(v))); return;
        case DT_U32: ((u32*)p)[i] = (u32)min(4294967295ULL, sat_u64(v)); return;
        case DT_I64: ((i64*)p)[i] = sat_i64(v); return;
        case DT_U64: ((u64*)p)[i] = sat_u64(v); return;
    }
}

// x^e in double; an integral exponent (|e| <= 64) by repeated squaring, exact wherever
// the powers are (integer bases), so integer results never land one below.
__device__ double pow_any(double x, double e) {
    if (e == rint(e) && fabs(e) <= 64.0 && x == x) {
        unsigned long long k = (unsigned long long)fabs(e);
        double r = 1.0, b = x;
        while (k) {
            if (k & 1) r *= b;
            b *= b;
            k >>= 1;
        }
        return e < 0.0 ? 1.0 / r : r;
    }
    return pow(x, e);
}

extern "C" __global__ void kiln_cast(int from, int to, int saturate, const void* x, void* y, i64 n) {
    KILN_GRID_STRIDE(i, n) { store_cast(to, y, i, load_any(from, x, i), saturate != 0); }
}

// Pow of a base of dtype `bt` (the output's) and an exponent of dtype `et`, broadcasting.
extern "C" __global__ void kiln_pow_any(int bt, int et, const void* a, const void* b, void* y, i64 n, int rank, Strides s) {
    KILN_GRID_STRIDE(i, n) {
        i64 ia, ib;
        offsets2(i, rank, s, ia, ib);
        store_sat(bt, y, i, pow_any(repr_f64(load_any(bt, a, ia)), repr_f64(load_any(et, b, ib))));
    }
}

// mode 0: IsNaN; else IsInf, bit 1 detecting +inf and bit 2 -inf. Bool out.
extern "C" __global__ void kiln_classify(int dt, int mode, const void* x, u8* y, i64 n) {
    KILN_GRID_STRIDE(i, n) {
        const double v = repr_f64(load_any(dt, x, i));
        u8 r;
        if (mode == 0) {
            r = v != v;
        } else {
            r = isinf(v) && (v > 0.0 ? (mode & 1) != 0 : (mode & 2) != 0);
        }
        y[i] = r;
    }
}

// Range: y[i] = start + i * delta, `start` and `delta` (of dtype `dt`) read on the
// device. Integers exactly; floats in double (no fused multiply-add), then through f32
// (as the CPU's NumCast).
extern "C" __global__ void kiln_range(int dt, const void* start, const void* delta, void* y, i64 n) {
    const Repr s = load_any(dt, start, 0), d = load_any(dt, delta, 0);
    KILN_GRID_STRIDE(i, n) {
        if (s.kind == 0) {
            const double v = __dadd_rn(s.f, __dmul_rn((double)i, d.f));
            const float f = (float)v;
            switch (dt) {
                case DT_F64: ((double*)y)[i] = v; break;
                case DT_F32: ((float*)y)[i] = f; break;
                case DT_F16: ((f16*)y)[i] = __float2half_rn(f); break;
                case DT_BF16: ((bf16*)y)[i] = __float2bfloat16_rn(f); break;
            }
        } else {
            store_cast(dt, y, i, repr_i((i64)((u64)s.i + (u64)i * (u64)d.i)), true);
        }
    }
}

// EyeLike: ones (of dtype `dt`) where column - row == k, zeros elsewhere.
extern "C" __global__ void kiln_eye(int dt, i64 k, void* y, i64 rows, i64 cols) {
    KILN_GRID_STRIDE(i, rows * cols) {
        const i64 r = i / cols, c = i % cols;
        store_cast(dt, y, i, repr_u(c - r == k ? 1 : 0), true);
    }
}

// Dropout: in training mode (`training` true) with a ratio above 0, each element kept
// with probability 1 - ratio (a hash of `seed` and its index) and scaled by
// 1 / (1 - ratio); otherwise a copy, every mask element true. `ratio` (of dtype `rt`)
// and `training` are read on the device; absent, they are 0.5 and false. `mask` (of
// dtype `mt`) may be null.
extern "C" __global__ void kiln_dropout(int dt, const void* x, void* y, int mt, void* mask, i64 n, int rt,
                                        const void* ratio, const u8* training, u64 seed) {
    const bool train = training && *training != 0;
    const double r = ratio ? repr_f64(load_any(rt, ratio, 0)) : 0.5;
    const bool drop = train && r > 0.0;
    const double scale = drop ? 1.0 / (1.0 - r) : 1.0;
    KILN_GRID_STRIDE(i, n) {
        bool keep = true;
        if (drop) {
            u64 h = seed ^ ((u64)i * 0x9E3779B97F4A7C15ULL);
            h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
            keep = (double)(h >> 11) * (1.0 / 9007199254740992.0) >= r;
        }
        Repr v = load_any(dt, x, i);
        if (drop) v = repr_f(keep ? repr_f64(v) * scale : 0.0);
        store_cast(dt, y, i, v, true);
        if (mask) store_cast(mt, mask, i, repr_u(keep ? 1 : 0), true);
    }
}

#define KILN_FLOAT_EW(T, N)                                                                                  \
    extern "C" __global__ void kiln_unary_##N(int op, float p0, float p1, const T* x, T* y, i64 n) {        \
        unary_kernel<T>(op, p0, p1, x, y, n);                                                                \
    }                                                                                                        \
    extern "C" __global__ void kiln_binary_##N(int op, const T* a, const T* b, T* y, i64 n, int rank, Strides s) { \
        binary_kernel<T>(op, a, b, y, n, rank, s);                                                           \
    }
KILN_FLOAT_EW(float, f32)
KILN_FLOAT_EW(f16, f16)
KILN_FLOAT_EW(bf16, bf16)

// f64 unary maps in double: the launcher sends only the codes of `unary_f64_ok`.
__device__ __forceinline__ double unary_f64(int op, double x) {
    switch (op) {
        case U_RELU: return x < 0.0 ? 0.0 : x;
        case U_NEG: return -x;
        case U_ABS: return fabs(x);
        case U_SIGN: return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x);
        case U_FLOOR: return floor(x);
        case U_CEIL: return ceil(x);
        case U_ROUND: return rint(x);
        case U_SQRT: return sqrt(x);
        case U_EXP: return exp(x);
        case U_LOG: return log(x);
        case U_RECIPROCAL: return 1.0 / x;
        case U_SIN: return sin(x);
        case U_COS: return cos(x);
        case U_TANH: return tanh(x);
        case U_ERF: return erf(x);
        case U_SIGMOID: return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    }
    return x;
}

extern "C" __global__ void kiln_unary_f64(int op, float p0, float p1, const double* x, double* y, i64 n) {
    KILN_GRID_STRIDE(i, n) { y[i] = unary_f64(op, x[i]); }
}

extern "C" __global__ void kiln_binary_f64(int op, const double* a, const double* b, double* y, i64 n, int rank, Strides s) {
    binary_f64_kernel(op, a, b, y, n, rank, s);
}

#define KILN_INT_EW(T, N)                                                                                    \
    extern "C" __global__ void kiln_unary_##N(int op, float p0, float p1, const T* x, T* y, i64 n) {        \
        unary_int_kernel<T>(op, x, y, n);                                                                    \
    }                                                                                                        \
    extern "C" __global__ void kiln_binary_##N(int op, const T* a, const T* b, T* y, i64 n, int rank, Strides s) { \
        binary_int_kernel<T>(op, a, b, y, n, rank, s);                                                       \
    }
KILN_INT_EW(i8, i8)
KILN_INT_EW(u8, u8)
KILN_INT_EW(i16, i16)
KILN_INT_EW(u16, u16)
KILN_INT_EW(i32, i32)
KILN_INT_EW(u32, u32)
KILN_INT_EW(i64, i64)
KILN_INT_EW(u64, u64)

#define KILN_COMPARE(T, N)                                                                                   \
    extern "C" __global__ void kiln_compare_##N(int op, const T* a, const T* b, u8* y, i64 n, int rank, Strides s) { \
        compare_kernel<T>(op, a, b, y, n, rank, s);                                                          \
    }
KILN_COMPARE(float, f32)
KILN_COMPARE(f16, f16)
KILN_COMPARE(bf16, bf16)
KILN_COMPARE(double, f64)
KILN_COMPARE(i8, i8)
KILN_COMPARE(u8, u8)
KILN_COMPARE(i16, i16)
KILN_COMPARE(u16, u16)
KILN_COMPARE(i32, i32)
KILN_COMPARE(u32, u32)
KILN_COMPARE(i64, i64)
KILN_COMPARE(u64, u64)

#define KILN_WHERE(T, N)                                                                                     \
    extern "C" __global__ void kiln_where_##N(const u8* c, const T* x, const T* y, T* out, i64 n, int rank, Strides3 s) { \
        where_kernel<T>(c, x, y, out, n, rank, s);                                                           \
    }
KILN_WHERE(u8, b1)
KILN_WHERE(u16, b2)
KILN_WHERE(u32, b4)
KILN_WHERE(u64, b8)
