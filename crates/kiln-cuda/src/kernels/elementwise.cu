// Elementwise kernels: unary maps (activations and float math), broadcasting binary
// arithmetic, comparisons and logic (bool out, one byte), Where, and Cast between the
// common dtypes. Floats of every width are computed in float and rounded once; integers
// in their own type. Broadcasting is by strides: the output index is decomposed over
// `rank` dims and each input's stride for a broadcast dim is 0.

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
    U_COSH, U_ASINH, U_ACOSH, U_ATANH
};
// Keep in step with `BinaryCode`.
enum BinaryCode { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_PRELU, B_MOD, B_FMOD };
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
template <typename T> __device__ __forceinline__ T unary_int(int op, T x) {
    switch (op) {
        case U_RELU: return x < 0 ? 0 : x;
        case U_NEG: return -x;
        case U_ABS: return x < 0 ? -x : x;
        case U_SIGN: return x > 0 ? 1 : (x < 0 ? -1 : 0);
    }
    return x;
}

__device__ __forceinline__ float binary(int op, float a, float b) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_MAX: return (a > b || a != a) ? a : b;  // NaN wins
        case B_MIN: return (a < b || a != a) ? a : b;
        case B_POW: return powf(a, b);
        case B_PRELU: return a < 0.f ? a * b : a;
        case B_MOD: {  // Python's: the sign of the divisor
            float r = fmodf(a, b);
            return (r != 0.f && ((r < 0.f) != (b < 0.f))) ? r + b : r;
        }
        case B_FMOD: return fmodf(a, b);
    }
    return a;
}

// Integer arithmetic wraps; division truncates; division by zero gives 0 (the host
// reports it as an error; a kernel cannot).
template <typename T> __device__ __forceinline__ T binary_int(int op, T a, T b) {
    typedef unsigned long long U;
    switch (op) {
        case B_ADD: return (T)((U)a + (U)b);
        case B_SUB: return (T)((U)a - (U)b);
        case B_MUL: return (T)((U)a * (U)b);
        case B_DIV: return b == 0 ? 0 : (b == -1 ? (T)(0 - (U)a) : a / b);
        case B_MAX: return a > b ? a : b;
        case B_MIN: return a < b ? a : b;
        case B_PRELU: return a < 0 ? (T)((U)a * (U)b) : a;
        case B_MOD: {
            if (b == 0 || b == -1) return 0;
            T r = a % b;
            return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
        }
        case B_FMOD: return (b == 0 || b == -1) ? 0 : a % b;
    }
    return a;
}

// Values as compared: floats widened to float, integers as themselves.
__device__ __forceinline__ float cmp_val(float v) { return v; }
__device__ __forceinline__ float cmp_val(f16 v) { return __half2float(v); }
__device__ __forceinline__ float cmp_val(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ i32 cmp_val(i32 v) { return v; }
__device__ __forceinline__ i64 cmp_val(i64 v) { return v; }
__device__ __forceinline__ u8 cmp_val(u8 v) { return v; }

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
        y[i] = from_f<T>(binary(op, to_f(a[ia]), to_f(b[ib])));
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

// One element of a cast: through float for floats (one rounding into the target),
// truncation toward zero from float to integer, integers through i64 (wrapping), and
// bool as "not zero" (NaN is true).
template <typename S, typename D> __device__ __forceinline__ D cast_elem(S s) {
    if constexpr (sizeof(D) == 1) {
        if constexpr (IsFloat<S>::value) {
            return to_f(s) != 0.f ? 1 : 0;
        } else {
            return s != 0 ? 1 : 0;
        }
    } else if constexpr (IsFloat<D>::value) {
        return from_f<D>(to_f(s));
    } else if constexpr (IsFloat<S>::value) {
        float v = to_f(s);
        return v != v ? (D)0 : (D)(i64)v;
    } else {
        return (D)(i64)s;
    }
}

template <typename S, typename D> __device__ void cast_kernel(const S* x, D* y, i64 n) {
    KILN_GRID_STRIDE(i, n) { y[i] = cast_elem<S, D>(x[i]); }
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

#define KILN_INT_EW(T, N)                                                                                    \
    extern "C" __global__ void kiln_unary_##N(int op, float p0, float p1, const T* x, T* y, i64 n) {        \
        unary_int_kernel<T>(op, x, y, n);                                                                    \
    }                                                                                                        \
    extern "C" __global__ void kiln_binary_##N(int op, const T* a, const T* b, T* y, i64 n, int rank, Strides s) { \
        binary_int_kernel<T>(op, a, b, y, n, rank, s);                                                       \
    }
KILN_INT_EW(i32, i32)
KILN_INT_EW(i64, i64)

#define KILN_COMPARE(T, N)                                                                                   \
    extern "C" __global__ void kiln_compare_##N(int op, const T* a, const T* b, u8* y, i64 n, int rank, Strides s) { \
        compare_kernel<T>(op, a, b, y, n, rank, s);                                                          \
    }
KILN_COMPARE(float, f32)
KILN_COMPARE(f16, f16)
KILN_COMPARE(bf16, bf16)
KILN_COMPARE(i32, i32)
KILN_COMPARE(i64, i64)
KILN_COMPARE(u8, u8)

#define KILN_WHERE(T, N)                                                                                     \
    extern "C" __global__ void kiln_where_##N(const u8* c, const T* x, const T* y, T* out, i64 n, int rank, Strides3 s) { \
        where_kernel<T>(c, x, y, out, n, rank, s);                                                           \
    }
KILN_WHERE(u8, b1)
KILN_WHERE(u16, b2)
KILN_WHERE(u32, b4)
KILN_WHERE(u64, b8)

#define KILN_CAST(S, SN, D, DN)                                                                              \
    extern "C" __global__ void kiln_cast_##SN##_##DN(const S* x, D* y, i64 n) { cast_kernel<S, D>(x, y, n); }
#define KILN_CAST_FROM(S, SN)          \
    KILN_CAST(S, SN, float, f32)       \
    KILN_CAST(S, SN, f16, f16)         \
    KILN_CAST(S, SN, bf16, bf16)       \
    KILN_CAST(S, SN, i32, i32)         \
    KILN_CAST(S, SN, i64, i64)         \
    KILN_CAST(S, SN, u8, bool)
KILN_CAST_FROM(float, f32)
KILN_CAST_FROM(f16, f16)
KILN_CAST_FROM(bf16, bf16)
KILN_CAST_FROM(i32, i32)
KILN_CAST_FROM(i64, i64)
KILN_CAST_FROM(u8, bool)
