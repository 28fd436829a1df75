// Pooling over the spatial axes of NC... tensors (up to KILN_POOL_AXES of them; fewer
// are padded with size-1 axes): MaxPool (optionally with row-major flat indices),
// AveragePool (count_include_pad either way), with pads, strides and dilations, one
// thread per output element; and the global pools, one block per (n, c) plane.
// Everything is accumulated in float and rounded once.

#define KILN_POOL_AXES 3

struct PoolDesc {
    i64 in[KILN_POOL_AXES];
    i64 out[KILN_POOL_AXES];
    i64 kernel[KILN_POOL_AXES];
    i64 stride[KILN_POOL_AXES];
    i64 dilation[KILN_POOL_AXES];
    i64 pad_begin[KILN_POOL_AXES];
    i64 pad_end[KILN_POOL_AXES];
};

enum PoolCode { POOL_MAX = 0, POOL_AVG_EXCLUDE_PAD = 1, POOL_AVG_INCLUDE_PAD = 2, POOL_LP = 3 };

// Pool loads and stores: 8-bit integers by value (not common.cuh's bool reading of u8).
template <typename T> __device__ __forceinline__ float pool_load(T v) { return to_f(v); }
template <> __device__ __forceinline__ float pool_load<u8>(u8 v) { return (float)v; }
template <> __device__ __forceinline__ float pool_load<signed char>(signed char v) { return (float)v; }
template <typename T> __device__ __forceinline__ T pool_store(float v) { return from_f<T>(v); }
template <> __device__ __forceinline__ u8 pool_store<u8>(float v) { return (u8)v; }
template <> __device__ __forceinline__ signed char pool_store<signed char>(float v) { return (signed char)v; }

template <typename T>
__device__ void pool(const T* x, T* y, i64* indices, PoolDesc d, i64 planes, int code, float p, int col_major) {
    const i64 out_size = d.out[0] * d.out[1] * d.out[2];
    const i64 in_size = d.in[0] * d.in[1] * d.in[2];
    KILN_GRID_STRIDE(i, planes * out_size) {
        const i64 pl = i / out_size;
        i64 r = i % out_size;
        const i64 o2 = r % d.out[2];
        r /= d.out[2];
        const i64 o1 = r % d.out[1];
        const i64 o0 = r / d.out[1];
        const i64 s0 = o0 * d.stride[0] - d.pad_begin[0];
        const i64 s1 = o1 * d.stride[1] - d.pad_begin[1];
        const i64 s2 = o2 * d.stride[2] - d.pad_begin[2];
        const T* xp = x + pl * in_size;
        float acc = code == POOL_MAX ? -KILN_INF : 0.f;
        i64 best = -1;
        i64 count = 0;
        for (i64 k0 = 0; k0 < d.kernel[0]; ++k0) {
            const i64 i0 = s0 + k0 * d.dilation[0];
            const bool in0 = i0 >= 0 && i0 < d.in[0];
            const bool pad0 = i0 >= -d.pad_begin[0] && i0 < d.in[0] + d.pad_end[0];
            for (i64 k1 = 0; k1 < d.kernel[1]; ++k1) {
                const i64 i1 = s1 + k1 * d.dilation[1];
                const bool in1 = in0 && i1 >= 0 && i1 < d.in[1];
                const bool pad1 = pad0 && i1 >= -d.pad_begin[1] && i1 < d.in[1] + d.pad_end[1];
                for (i64 k2 = 0; k2 < d.kernel[2]; ++k2) {
                    const i64 i2 = s2 + k2 * d.dilation[2];
                    const bool inside = in1 && i2 >= 0 && i2 < d.in[2];
                    const bool padded = pad1 && i2 >= -d.pad_begin[2] && i2 < d.in[2] + d.pad_end[2];
                    if (code == POOL_AVG_INCLUDE_PAD ? padded : inside) ++count;
                    if (!inside) continue;
                    const i64 at = (i0 * d.in[1] + i1) * d.in[2] + i2;
                    const float v = pool_load<T>(xp[at]);
                    if (code == POOL_LP) {
                        acc += powf(fabsf(v), p);
                    } else if (code == POOL_MAX) {
                        // NaN wins (and stays).
                        if (best < 0 || v > acc || (v != v && acc == acc)) {
                            acc = v;
                            best = at;
                        }
                    } else {
                        acc += v;
                    }
                }
            }
        }
        if (code == POOL_LP) {
            acc = powf(acc, 1.f / p);
        } else if (code != POOL_MAX) {
            acc /= (float)(count > 0 ? count : 1);
        }
        y[i] = pool_store<T>(acc);
        if (indices) {
            i64 at = best < 0 ? 0 : best;
            if (col_major) {
                // The same position's column-major flat index over the spatial dims.
                const i64 a2 = at % d.in[2], a1 = (at / d.in[2]) % d.in[1], a0 = at / (d.in[2] * d.in[1]);
                at = a0 + d.in[0] * (a1 + d.in[1] * a2);
            }
            indices[i] = pl * in_size + at;
        }
    }
}

// GlobalAveragePool (mean = 1) / GlobalMaxPool (mean = 0) / GlobalLpPool (mean = 2) of each of `planes` rows of
// `d` contiguous elements.
template <typename T>
__device__ void global_pool(const T* x, T* y, i64 planes, i64 d, int mean, float p) {
    __shared__ float scratch[1024];
    for (i64 row = blockIdx.x; row < planes; row += gridDim.x) {
        const T* xr = x + row * d;
        float acc = mean ? 0.f : -KILN_INF;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            const float v = to_f(xr[j]);
            acc = mean == 1 ? acc + v : mean == 2 ? acc + powf(fabsf(v), p) : block_combine(BLOCK_MAX, acc, v);
        }
        const float r = block_reduce(mean ? BLOCK_SUM : BLOCK_MAX, acc, scratch);
        if (threadIdx.x == 0) y[row] = from_f<T>(mean == 1 ? r / (float)d : mean == 2 ? powf(r, 1.f / p) : r);
    }
}

#define KILN_POOL(T, N)                                                                                      \
    extern "C" __global__ void kiln_pool_##N(const T* x, T* y, i64* indices, PoolDesc d, i64 planes,         \
                                             int code, float p, int col_major) {                             \
        pool<T>(x, y, indices, d, planes, code, p, col_major);                                               \
    }
#define KILN_GLOBAL_POOL(T, N)                                                                               \
    extern "C" __global__ void kiln_global_pool_##N(const T* x, T* y, i64 planes, i64 d, int mean, float p) { \
        global_pool<T>(x, y, planes, d, mean, p);                                                            \
    }
KILN_POOL(float, f32)
KILN_POOL(f16, f16)
KILN_POOL(bf16, bf16)
KILN_POOL(u8, u8)
KILN_POOL(signed char, i8)
KILN_GLOBAL_POOL(float, f32)
KILN_GLOBAL_POOL(f16, f16)
KILN_GLOBAL_POOL(bf16, bf16)
