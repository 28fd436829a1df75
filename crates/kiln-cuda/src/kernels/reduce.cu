// Reductions, accumulated in float, in three layouts:
// - rows: the reduced elements are each row's R contiguous ones ([rows, R]); one block
//   per row, a shared-memory tree.
// - mid: [outer, R, inner] with inner > 1; one thread per (outer, inner) output, the R
//   elements `inner` apart (neighbouring threads read neighbouring elements).
// - strided: any set of axes; one thread per output, the kept and the reduced dims each
//   decomposed by their own strides.
// Integers (i32, i64) take the strided layout only. Softmax/LogSoftmax over an axis in the
// rows and mid layouts, and ArgMax/ArgMin in the mid layout (rows are mid with inner = 1).

// Keep in step with `ReduceCode` in kernels/mod.rs.
enum ReduceCode { R_SUM = 0, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_LOG_SUM, R_LOG_SUM_EXP, R_SUM_SQUARE };

struct ReduceDesc {
    // Output dims (the kept ones) and their strides in the input.
    i64 kept_dims[KILN_MAX_RANK];
    i64 kept_strides[KILN_MAX_RANK];
    // Reduced dims and their strides in the input.
    i64 red_dims[KILN_MAX_RANK];
    i64 red_strides[KILN_MAX_RANK];
};

__device__ __forceinline__ int block_op_of(int op) {
    switch (op) {
        case R_MAX: return BLOCK_MAX;
        case R_MIN: return BLOCK_MIN;
        case R_PROD: return BLOCK_PROD;
    }
    return BLOCK_SUM;
}

__device__ __forceinline__ float identity_of(int op) {
    switch (op) {
        case R_MAX: return -KILN_INF;
        case R_MIN: return KILN_INF;
        case R_PROD: return 1.f;
    }
    return 0.f;
}

// What each element contributes (`shift`: LogSumExp's max).
__device__ __forceinline__ float contribution(int op, float v, float shift) {
    switch (op) {
        case R_L1: return fabsf(v);
        case R_L2:
        case R_SUM_SQUARE: return v * v;
        case R_LOG_SUM_EXP: return expf(v - shift);
    }
    return v;
}

__device__ __forceinline__ float finish(int op, float acc, i64 r, float shift) {
    switch (op) {
        case R_MEAN: return acc / (float)r;
        case R_L2: return sqrtf(acc);
        case R_LOG_SUM: return logf(acc);
        case R_LOG_SUM_EXP: return (isinf(shift) || shift != shift) ? shift : shift + logf(acc);
    }
    return acc;
}

template <typename T> __device__ void reduce_rows(int op, const T* x, T* y, i64 rows, i64 r) {
    __shared__ float scratch[1024];
    const int bop = block_op_of(op);
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * r;
        float shift = 0.f;
        if (op == R_LOG_SUM_EXP) {
            float m = -KILN_INF;
            for (i64 j = threadIdx.x; j < r; j += blockDim.x) m = block_combine(BLOCK_MAX, m, to_f(xr[j]));
            shift = block_reduce(BLOCK_MAX, m, scratch);
        }
        float acc = identity_of(op);
        for (i64 j = threadIdx.x; j < r; j += blockDim.x) acc = block_combine(bop, acc, contribution(op, to_f(xr[j]), shift));
        acc = block_reduce(bop, acc, scratch);
        if (threadIdx.x == 0) y[row] = from_f<T>(finish(op, acc, r, shift));
    }
}

template <typename T> __device__ void reduce_mid(int op, const T* x, T* y, i64 outer, i64 r, i64 inner) {
    const int bop = block_op_of(op);
    KILN_GRID_STRIDE(i, outer * inner) {
        const T* xp = x + (i / inner) * r * inner + (i % inner);
        float shift = 0.f;
        if (op == R_LOG_SUM_EXP) {
            shift = -KILN_INF;
            for (i64 j = 0; j < r; ++j) shift = block_combine(BLOCK_MAX, shift, to_f(xp[j * inner]));
        }
        float acc = identity_of(op);
        for (i64 j = 0; j < r; ++j) acc = block_combine(bop, acc, contribution(op, to_f(xp[j * inner]), shift));
        y[i] = from_f<T>(finish(op, acc, r, shift));
    }
}

template <typename T>
__device__ void reduce_strided(int op, const T* x, T* y, i64 n_out, int kept_rank, int red_rank, i64 r, ReduceDesc d) {
    const int bop = block_op_of(op);
    KILN_GRID_STRIDE(i, n_out) {
        i64 rem = i, base = 0;
        for (int k = kept_rank - 1; k >= 0; --k) {
            base += (rem % d.kept_dims[k]) * d.kept_strides[k];
            rem /= d.kept_dims[k];
        }
        float shift = 0.f;
        for (int pass = op == R_LOG_SUM_EXP ? 0 : 1; pass < 2; ++pass) {
            float acc = pass == 0 ? -KILN_INF : identity_of(op);
            for (i64 j = 0; j < r; ++j) {
                i64 q = j, off = base;
                for (int k = red_rank - 1; k >= 0; --k) {
                    off += (q % d.red_dims[k]) * d.red_strides[k];
                    q /= d.red_dims[k];
                }
                const float v = to_f(x[off]);
                acc = pass == 0 ? block_combine(BLOCK_MAX, acc, v) : block_combine(bop, acc, contribution(op, v, shift));
            }
            if (pass == 0) {
                shift = acc;
            } else {
                y[i] = from_f<T>(finish(op, acc, r, shift));
            }
        }
    }
}

// Softmax (log_ = 0) or LogSoftmax (1) of each row of R contiguous elements.
template <typename T> __device__ void softmax_rows(int log_, const T* x, T* y, i64 rows, i64 r) {
    __shared__ float scratch[1024];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * r;
        T* yr = y + row * r;
        float m = -KILN_INF;
        for (i64 j = threadIdx.x; j < r; j += blockDim.x) m = block_combine(BLOCK_MAX, m, to_f(xr[j]));
        m = block_reduce(BLOCK_MAX, m, scratch);
        float s = 0.f;
        for (i64 j = threadIdx.x; j < r; j += blockDim.x) s += expf(to_f(xr[j]) - m);
        s = block_reduce(BLOCK_SUM, s, scratch);
        if (log_) {
            const float ls = logf(s);
            for (i64 j = threadIdx.x; j < r; j += blockDim.x) yr[j] = from_f<T>(to_f(xr[j]) - m - ls);
        } else {
            const float inv = 1.f / s;
            for (i64 j = threadIdx.x; j < r; j += blockDim.x) yr[j] = from_f<T>(expf(to_f(xr[j]) - m) * inv);
        }
    }
}

template <typename T> __device__ void softmax_mid(int log_, const T* x, T* y, i64 outer, i64 r, i64 inner) {
    KILN_GRID_STRIDE(i, outer * inner) {
        const i64 base = (i / inner) * r * inner + (i % inner);
        float m = -KILN_INF;
        for (i64 j = 0; j < r; ++j) m = block_combine(BLOCK_MAX, m, to_f(x[base + j * inner]));
        float s = 0.f;
        for (i64 j = 0; j < r; ++j) s += expf(to_f(x[base + j * inner]) - m);
        const float ls = logf(s), inv = 1.f / s;
        for (i64 j = 0; j < r; ++j) {
            const float v = to_f(x[base + j * inner]) - m;
            y[base + j * inner] = from_f<T>(log_ ? v - ls : expf(v) * inv);
        }
    }
}

// ArgMax (max_ = 1) or ArgMin over [outer, R, inner]: the first index of the extreme, or
// the last one with `last`. NaN counts as the extreme (first NaN wins).
template <typename T>
__device__ void arg_reduce(int max_, int last, const T* x, i64* y, i64 outer, i64 r, i64 inner) {
    KILN_GRID_STRIDE(i, outer * inner) {
        const i64 base = (i / inner) * r * inner + (i % inner);
        float best = to_f(x[base]);
        i64 at = 0;
        for (i64 j = 1; j < r && best == best; ++j) {
            const float v = to_f(x[base + j * inner]);
            const bool better = v != v || (max_ ? (last ? v >= best : v > best) : (last ? v <= best : v < best));
            if (better) {
                best = v;
                at = j;
            }
        }
        y[i] = at;
    }
}

// Integer reductions (any layout, one thread per output): wrapping Sum, Prod, L1 and
// SumSquare (U: the unsigned type of T's width), Max, Min, and Mean through double
// (truncated toward zero). The launcher sends no other code.
template <typename T, typename U>
__device__ void reduce_int(int op, const T* x, T* y, i64 n_out, int kept_rank, int red_rank, i64 r, ReduceDesc d) {
    const T lowest = (T)((U)1 << (sizeof(T) * 8 - 1));
    const T highest = (T)~(U)lowest;
    KILN_GRID_STRIDE(i, n_out) {
        i64 rem = i, base = 0;
        for (int k = kept_rank - 1; k >= 0; --k) {
            base += (rem % d.kept_dims[k]) * d.kept_strides[k];
            rem /= d.kept_dims[k];
        }
        T acc = op == R_PROD ? (T)1 : (op == R_MAX ? lowest : (op == R_MIN ? highest : (T)0));
        double fsum = 0.0;
        for (i64 j = 0; j < r; ++j) {
            i64 q = j, off = base;
            for (int k = red_rank - 1; k >= 0; --k) {
                off += (q % d.red_dims[k]) * d.red_strides[k];
                q /= d.red_dims[k];
            }
            const T v = x[off];
            switch (op) {
                case R_SUM: acc = (T)((U)acc + (U)v); break;
                case R_PROD: acc = (T)((U)acc * (U)v); break;
                case R_L1: acc = (T)((U)acc + (v < 0 ? (U)0 - (U)v : (U)v)); break;
                case R_SUM_SQUARE: acc = (T)((U)acc + (U)v * (U)v); break;
                case R_MAX: acc = v > acc ? v : acc; break;
                case R_MIN: acc = v < acc ? v : acc; break;
                case R_MEAN: fsum += (double)v; break;
            }
        }
        if (op == R_MEAN) acc = r == 0 ? (T)0 : (T)(fsum / (double)r);
        y[i] = acc;
    }
}

extern "C" __global__ void kiln_reduce_int_i32(int op, const i32* x, i32* y, i64 n_out, int kept_rank, int red_rank,
                                               i64 r, ReduceDesc d) {
    reduce_int<i32, u32>(op, x, y, n_out, kept_rank, red_rank, r, d);
}
extern "C" __global__ void kiln_reduce_int_i64(int op, const i64* x, i64* y, i64 n_out, int kept_rank, int red_rank,
                                               i64 r, ReduceDesc d) {
    reduce_int<i64, u64>(op, x, y, n_out, kept_rank, red_rank, r, d);
}

#define KILN_REDUCE(T, N)                                                                                    \
    extern "C" __global__ void kiln_reduce_rows_##N(int op, const T* x, T* y, i64 rows, i64 r) {            \
        reduce_rows<T>(op, x, y, rows, r);                                                                   \
    }                                                                                                        \
    extern "C" __global__ void kiln_reduce_mid_##N(int op, const T* x, T* y, i64 outer, i64 r, i64 inner) { \
        reduce_mid<T>(op, x, y, outer, r, inner);                                                            \
    }                                                                                                        \
    extern "C" __global__ void kiln_reduce_strided_##N(int op, const T* x, T* y, i64 n_out, int kept_rank,  \
                                                       int red_rank, i64 r, ReduceDesc d) {                  \
        reduce_strided<T>(op, x, y, n_out, kept_rank, red_rank, r, d);                                       \
    }                                                                                                        \
    extern "C" __global__ void kiln_softmax_rows_##N(int log_, const T* x, T* y, i64 rows, i64 r) {         \
        softmax_rows<T>(log_, x, y, rows, r);                                                                \
    }                                                                                                        \
    extern "C" __global__ void kiln_softmax_mid_##N(int log_, const T* x, T* y, i64 outer, i64 r, i64 inner) { \
        softmax_mid<T>(log_, x, y, outer, r, inner);                                                         \
    }                                                                                                        \
    extern "C" __global__ void kiln_arg_reduce_##N(int max_, int last, const T* x, i64* y, i64 outer, i64 r, \
                                                   i64 inner) {                                              \
        arg_reduce<T>(max_, last, x, y, outer, r, inner);                                                    \
    }
KILN_REDUCE(float, f32)
KILN_REDUCE(f16, f16)
KILN_REDUCE(bf16, bf16)
