// Small ops of their own: Trilu, ReverseSequence (both by storage), CumSum/CumProd (one
// thread per line, accumulating in the element type as the CPU backend does: half
// types rounded at every step, integers wrapping), Hardmax (one thread per row).

typedef signed char i8;
typedef short i16;

// `kp`: k read on the device (an input not known when the graph was built), else `k`.
template <typename T>
__device__ void trilu_kernel(int upper, i64 k, const i64* kp, const T* x, T* y, i64 n, i64 rows, i64 cols) {
    if (kp) k = *kp;
    KILN_GRID_STRIDE(i, n) {
        const i64 c = i % cols, r = (i / cols) % rows, d = c - r;
        const bool keep = upper ? d >= k : d <= k;
        y[i] = keep ? x[i] : (T)0;
    }
}

// Time axis of `nt` steps (element stride `st`), batch axis of `nb` (stride `sb`);
// each batch's first lens[b] steps reversed.
template <typename T>
__device__ void reverse_seq_kernel(const T* x, const i64* lens, T* y, i64 n, i64 nt, i64 st, i64 nb, i64 sb) {
    KILN_GRID_STRIDE(i, n) {
        const i64 t = (i / st) % nt, b = (i / sb) % nb;
        i64 len = lens[b];
        len = len < 0 ? 0 : (len > nt ? nt : len);
        y[i] = t < len ? x[i + (len - 1 - 2 * t) * st] : x[i];
    }
}

template <typename T> __device__ __forceinline__ T cum_of_int(int v) {
    if constexpr (IsFloat<T>::value) {
        return from_f<T>((float)v);
    } else {
        return (T)v;
    }
}

template <typename T> __device__ __forceinline__ T cum_step(int prod, T a, T b) {
    if constexpr (IsFloat<T>::value) {
        const float fa = to_f(a), fb = to_f(b);
        return from_f<T>(prod ? fa * fb : fa + fb);
    } else {
        typedef unsigned long long U;
        return (T)(prod ? (U)a * (U)b : (U)a + (U)b);
    }
}
__device__ __forceinline__ double cum_step(int prod, double a, double b) { return prod ? a * b : a + b; }

struct Dims {
    i64 d[KILN_MAX_RANK];
};

// Lines of `dim` elements at stride `inner`, `outer * inner` of them, around the axis:
// `axis`, or (`ap` given) the value there, an i32 (`a64` 0) or i64, read on the device.
template <typename T>
__device__ void cumulate_kernel(int prod, int exclusive, int reverse, const T* x, T* y, int rank, Dims dims,
                                int axis, const void* ap, int a64) {
    i64 a = ap ? (a64 ? *(const i64*)ap : (i64)*(const i32*)ap) : (i64)axis;
    if (a < 0) a += rank;
    if (a < 0 || a >= rank) return;
    i64 outer = 1, dim = dims.d[a], inner = 1;
    for (int d = 0; d < rank; ++d) {
        if (d < a) outer *= dims.d[d];
        if (d > a) inner *= dims.d[d];
    }
    KILN_GRID_STRIDE(line, outer * inner) {
        const i64 o = line / inner, r = line % inner;
        const i64 base = o * dim * inner + r;
        T acc = cum_of_int<T>(prod ? 1 : 0);
        for (i64 s = 0; s < dim; ++s) {
            const i64 j = base + (reverse ? dim - 1 - s : s) * inner;
            const T v = x[j];
            if (exclusive) {
                y[j] = acc;
                acc = cum_step(prod, acc, v);
            } else {
                acc = cum_step(prod, acc, v);
                y[j] = acc;
            }
        }
    }
}

// 1 at the first maximum of each row (`len` elements at stride `inner`), 0 elsewhere.
template <typename T> __device__ void hardmax_kernel(const T* x, T* y, i64 outer, i64 len, i64 inner) {
    KILN_GRID_STRIDE(line, outer * inner) {
        const i64 base = (line / inner) * len * inner + line % inner;
        i64 best = 0;
        float bv = to_f(x[base]);
        for (i64 j = 1; j < len; ++j) {
            const float v = to_f(x[base + j * inner]);
            if (v > bv) {
                best = j;
                bv = v;
            }
        }
        for (i64 j = 0; j < len; ++j) y[base + j * inner] = from_f<T>(j == best ? 1.f : 0.f);
    }
}

#define KILN_STORAGE_MISC(T, N)                                                                              \
    extern "C" __global__ void kiln_trilu_##N(int upper, i64 k, const i64* kp, const T* x, T* y, i64 n, i64 rows, \
                                              i64 cols) {                                                    \
        trilu_kernel<T>(upper, k, kp, x, y, n, rows, cols);                                                  \
    }                                                                                                        \
    extern "C" __global__ void kiln_reverse_seq_##N(const T* x, const i64* lens, T* y, i64 n, i64 nt, i64 st, \
                                                    i64 nb, i64 sb) {                                        \
        reverse_seq_kernel<T>(x, lens, y, n, nt, st, nb, sb);                                                \
    }
KILN_STORAGE_MISC(u8, b1)
KILN_STORAGE_MISC(u16, b2)
KILN_STORAGE_MISC(u32, b4)
KILN_STORAGE_MISC(u64, b8)

#define KILN_CUMULATE(T, N)                                                                                  \
    extern "C" __global__ void kiln_cumulate_##N(int prod, int exclusive, int reverse, const T* x, T* y,      \
                                                 int rank, Dims dims, int axis, const void* ap, int a64) {   \
        cumulate_kernel<T>(prod, exclusive, reverse, x, y, rank, dims, axis, ap, a64);                       \
    }
KILN_CUMULATE(float, f32)
KILN_CUMULATE(f16, f16)
KILN_CUMULATE(bf16, bf16)
KILN_CUMULATE(double, f64)
KILN_CUMULATE(i8, i8)
KILN_CUMULATE(u8, u8)
KILN_CUMULATE(i16, i16)
KILN_CUMULATE(u16, u16)
KILN_CUMULATE(i32, i32)
KILN_CUMULATE(u32, u32)
KILN_CUMULATE(i64, i64)
KILN_CUMULATE(u64, u64)

#define KILN_HARDMAX(T, N)                                                                                   \
    extern "C" __global__ void kiln_hardmax_##N(const T* x, T* y, i64 outer, i64 len, i64 inner) {           \
        hardmax_kernel<T>(x, y, outer, len, inner);                                                          \
    }
KILN_HARDMAX(float, f32)
KILN_HARDMAX(f16, f16)
KILN_HARDMAX(bf16, bf16)
