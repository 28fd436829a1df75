// Normalisations and window ops of the conv/pool family: BatchNormalization (the
// per-channel affine, batch statistics and running statistics of training mode),
// Instance/GroupNormalization (one block per (n, group) row), LRN, MaxUnpool's scatter,
// Col2Im. Statistics and sums in float, each result rounded once.

// Per-channel `(x - mean[p]) * scale[p] / sqrt(var[p] + eps) + bias[p]` over
// `[N, C, S]`, p = c (per = 0) or c * S + s (per = 1: one parameter per activation).
template <typename T>
__device__ void channel_affine(const T* x, T* y, const float* scale, const float* bias, const float* mean,
                               const float* var, i64 total, i64 c, i64 s, int per, float eps) {
    KILN_GRID_STRIDE(i, total) {
        const i64 ch = (i / s) % c;
        const i64 p = per ? ch * s + i % s : ch;
        const float f = scale[p] / sqrtf(var[p] + eps);
        y[i] = from_f<T>((to_f(x[i]) - mean[p]) * f + bias[p]);
    }
}

// Mean and (biased) variance of each channel of `[N, C, S]`: one block per channel.
template <typename T>
__device__ void channel_moments(const T* x, float* mean, float* var, i64 n, i64 c, i64 s) {
    __shared__ float scratch[1024];
    const i64 count = n * s;
    for (i64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        float acc = 0.f;
        for (i64 j = threadIdx.x; j < count; j += blockDim.x) acc += to_f(x[((j / s) * c + ch) * s + j % s]);
        const float m = block_reduce(BLOCK_SUM, acc, scratch) / (float)count;
        float sq = 0.f;
        for (i64 j = threadIdx.x; j < count; j += blockDim.x) {
            const float d = to_f(x[((j / s) * c + ch) * s + j % s]) - m;
            sq += d * d;
        }
        const float v = block_reduce(BLOCK_SUM, sq, scratch) / (float)count;
        if (threadIdx.x == 0) {
            mean[ch] = m;
            var[ch] = v;
        }
    }
}

// out = old * momentum + cur * (1 - momentum), elementwise over `n`.
template <typename T>
__device__ void running_stat(const T* old, const float* cur, T* out, i64 n, float momentum) {
    KILN_GRID_STRIDE(i, n) { out[i] = from_f<T>(to_f(old[i]) * momentum + cur[i] * (1.f - momentum)); }
}

// Group normalisation of `rows` rows of `d` elements (row = n * groups + g; a row holds
// `d / s` channels of `s` elements): `(x - mean) / sqrt(var + eps) * scale[p] + bias[p]`,
// p = g (per_channel = 0) or the channel.
template <typename T>
__device__ void group_norm(const T* x, T* y, const float* scale, const float* bias, i64 rows, i64 d, i64 groups,
                           i64 s, int per_channel, float eps) {
    __shared__ float scratch[1024];
    const i64 per_group = d / s;
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * d;
        T* yr = y + row * d;
        float acc = 0.f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) acc += to_f(xr[j]);
        const float m = block_reduce(BLOCK_SUM, acc, scratch) / (float)d;
        float sq = 0.f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            const float v = to_f(xr[j]) - m;
            sq += v * v;
        }
        const float var = block_reduce(BLOCK_SUM, sq, scratch) / (float)d;
        const float inv = 1.f / sqrtf(var + eps);
        const i64 g = row % groups;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            const i64 p = per_channel ? g * per_group + j / s : g;
            yr[j] = from_f<T>((to_f(xr[j]) - m) * inv * scale[p] + bias[p]);
        }
    }
}

// LRN over `[N, C, S]`: x / (bias + alpha / size * sum of squares over the channel window)^beta.
template <typename T>
__device__ void lrn(const T* x, T* y, i64 total, i64 c, i64 s, i64 size, float alpha, float beta, float bias) {
    const i64 before = (size - 1) / 2, after = size / 2;
    KILN_GRID_STRIDE(i, total) {
        const i64 j = i % s, ch = (i / s) % c, n = i / (s * c);
        const i64 lo = ch - before < 0 ? 0 : ch - before;
        const i64 hi = ch + after + 1 > c ? c : ch + after + 1;
        float sq = 0.f;
        for (i64 k = lo; k < hi; ++k) {
            const float v = to_f(x[(n * c + k) * s + j]);
            sq += v * v;
        }
        y[i] = from_f<T>(to_f(x[i]) / powf(bias + alpha / (float)size * sq, beta));
    }
}

// MaxUnpool: y[remap(idx[i])] = x[i] (y already zero). `idx` indexes the inferred shape
// `inner`; it lands in `outer` (at least as large on every axis) at the same position.
struct UnpoolDesc {
    i64 rank;
    i64 inner[KILN_MAX_RANK];
    i64 outer[KILN_MAX_RANK];
};

template <typename T>
__device__ void max_unpool(const T* x, const i64* idx, T* y, i64 n, i64 inner_len, UnpoolDesc d) {
    KILN_GRID_STRIDE(i, n) {
        i64 at = idx[i];
        if (at < 0 || at >= inner_len) continue;
        i64 flat = 0, mul = 1;
        for (int k = (int)d.rank - 1; k >= 0; --k) {
            flat += (at % d.inner[k]) * mul;
            at /= d.inner[k];
            mul *= d.outer[k];
        }
        y[flat] = x[i];
    }
}

// Col2Im: `x` [N, C * prod(kernel), L] summed into `y` [N, C, image…] (up to 3 spatial
// axes, leading ones of size 1); one thread per output element, gathering its columns.
struct Col2ImDesc {
    i64 image[3];
    i64 blocks[3];
    i64 kernel[3];
    i64 stride[3];
    i64 dilation[3];
    i64 pad_begin[3];
};

template <typename T>
__device__ void col2im(const T* x, T* y, i64 planes, Col2ImDesc d) {
    const i64 img = d.image[0] * d.image[1] * d.image[2];
    const i64 ker = d.kernel[0] * d.kernel[1] * d.kernel[2];
    const i64 nblocks = d.blocks[0] * d.blocks[1] * d.blocks[2];
    KILN_GRID_STRIDE(i, planes * img) {
        const i64 pl = i / img;
        i64 r = i % img;
        i64 pos[3];
        pos[2] = r % d.image[2];
        r /= d.image[2];
        pos[1] = r % d.image[1];
        pos[0] = r / d.image[1];
        float acc = 0.f;
        for (i64 k = 0; k < ker; ++k) {
            i64 kk[3];
            kk[2] = k % d.kernel[2];
            kk[1] = (k / d.kernel[2]) % d.kernel[1];
            kk[0] = k / (d.kernel[2] * d.kernel[1]);
            i64 b = 0;
            bool ok = true;
            for (int a = 0; a < 3 && ok; ++a) {
                const i64 t = pos[a] + d.pad_begin[a] - kk[a] * d.dilation[a];
                if (t < 0 || t % d.stride[a] != 0 || t / d.stride[a] >= d.blocks[a]) ok = false;
                else b = b * d.blocks[a] + t / d.stride[a];
            }
            if (ok) acc += to_f(x[(pl * ker + k) * nblocks + b]);
        }
        y[i] = from_f<T>(acc);
    }
}

#define KILN_CONVPOOL(T, N)                                                                                  \
    extern "C" __global__ void kiln_channel_affine_##N(const T* x, T* y, const float* scale,                 \
                                                       const float* bias, const float* mean,                 \
                                                       const float* var, i64 total, i64 c, i64 s, int per,   \
                                                       float eps) {                                          \
        channel_affine<T>(x, y, scale, bias, mean, var, total, c, s, per, eps);                              \
    }                                                                                                        \
    extern "C" __global__ void kiln_channel_moments_##N(const T* x, float* mean, float* var, i64 n, i64 c,   \
                                                        i64 s) {                                             \
        channel_moments<T>(x, mean, var, n, c, s);                                                           \
    }                                                                                                        \
    extern "C" __global__ void kiln_running_stat_##N(const T* old, const float* cur, T* out, i64 n,          \
                                                     float momentum) {                                       \
        running_stat<T>(old, cur, out, n, momentum);                                                         \
    }                                                                                                        \
    extern "C" __global__ void kiln_group_norm_##N(const T* x, T* y, const float* scale, const float* bias,  \
                                                   i64 rows, i64 d, i64 groups, i64 s, int per_channel,      \
                                                   float eps) {                                              \
        group_norm<T>(x, y, scale, bias, rows, d, groups, s, per_channel, eps);                              \
    }                                                                                                        \
    extern "C" __global__ void kiln_lrn_##N(const T* x, T* y, i64 total, i64 c, i64 s, i64 size,             \
                                            float alpha, float beta, float bias) {                           \
        lrn<T>(x, y, total, c, s, size, alpha, beta, bias);                                                  \
    }                                                                                                        \
    extern "C" __global__ void kiln_col2im_##N(const T* x, T* y, i64 planes, Col2ImDesc d) {                 \
        col2im<T>(x, y, planes, d);                                                                          \
    }
KILN_CONVPOOL(float, f32)
KILN_CONVPOOL(f16, f16)
KILN_CONVPOOL(bf16, bf16)

#define KILN_UNPOOL(T, N)                                                                                    \
    extern "C" __global__ void kiln_max_unpool_##N(const T* x, const i64* idx, T* y, i64 n, i64 inner_len,  \
                                                   UnpoolDesc d) {                                           \
        max_unpool<T>(x, idx, y, n, inner_len, d);                                                           \
    }
KILN_UNPOOL(u8, b1)
KILN_UNPOOL(u16, b2)
KILN_UNPOOL(u32, b4)
KILN_UNPOOL(u64, b8)

// ConvInteger and QLinearConv: a direct convolution of 8-bit integers with zero points,
// accumulated exactly in int32, one thread per output element. `mode` 0 writes the
// accumulator (int32 y); 1 requantizes it: saturate(rint(acc · m) + y_zero) with
// m = f32(f32(x_scale · w_scale[c]) / y_scale), the product in double.
struct ConvIntDesc {
    i64 batch, c, m, group;
    i64 in[3];
    i64 out[3];
    i64 kernel[3];
    i64 stride[3];
    i64 dilation[3];
    i64 pad_begin[3];
};

template <typename TX, typename TW, typename TY>
__device__ void conv_int(const TX* x, const TW* w, const TX* xz, const TW* wz, i64 wz_len, const i32* bias,
                         TY* y, const float* xs, const float* ws, i64 ws_len, const float* ys, const TY* yz,
                         ConvIntDesc d, int mode, float lo, float hi) {
    const i64 out_size = d.out[0] * d.out[1] * d.out[2];
    const i64 in_size = d.in[0] * d.in[1] * d.in[2];
    const i64 ksize = d.kernel[0] * d.kernel[1] * d.kernel[2];
    const i64 cg = d.c / d.group, mg = d.m / d.group;
    const i32 x0 = xz ? (i32)xz[0] : 0;
    KILN_GRID_STRIDE(i, d.batch * d.m * out_size) {
        i64 r = i % out_size;
        const i64 nm = i / out_size;
        const i64 m = nm % d.m, n = nm / d.m;
        const i64 o2 = r % d.out[2];
        r /= d.out[2];
        const i64 o1 = r % d.out[1], o0 = r / d.out[1];
        const i64 g = m / mg;
        const i32 w0 = wz ? (i32)wz[wz_len == 1 ? 0 : m] : 0;
        i32 acc = bias ? bias[m] : 0;
        for (i64 ci = 0; ci < cg; ++ci) {
            const TX* xp = x + (n * d.c + g * cg + ci) * in_size;
            const TW* wp = w + (m * cg + ci) * ksize;
            for (i64 k0 = 0; k0 < d.kernel[0]; ++k0) {
                const i64 i0 = o0 * d.stride[0] - d.pad_begin[0] + k0 * d.dilation[0];
                if (i0 < 0 || i0 >= d.in[0]) continue;
                for (i64 k1 = 0; k1 < d.kernel[1]; ++k1) {
                    const i64 i1 = o1 * d.stride[1] - d.pad_begin[1] + k1 * d.dilation[1];
                    if (i1 < 0 || i1 >= d.in[1]) continue;
                    for (i64 k2 = 0; k2 < d.kernel[2]; ++k2) {
                        const i64 i2 = o2 * d.stride[2] - d.pad_begin[2] + k2 * d.dilation[2];
                        if (i2 < 0 || i2 >= d.in[2]) continue;
                        const i32 xv = (i32)xp[(i0 * d.in[1] + i1) * d.in[2] + i2] - x0;
                        const i32 wv = (i32)wp[(k0 * d.kernel[1] + k1) * d.kernel[2] + k2] - w0;
                        acc += xv * wv;
                    }
                }
            }
        }
        if (mode == 0) {
            y[i] = (TY)acc;
        } else {
            const float mul = __fdiv_rn(__fmul_rn(xs[0], ws[ws_len == 1 ? 0 : m]), ys[0]);
            double v = rint((double)acc * (double)mul) + (yz ? (double)yz[0] : 0.0);
            v = v < lo ? lo : (v > hi ? hi : v);
            y[i] = (TY)v;
        }
    }
}

#define KILN_CONV_INT(TX, NX, TW, NW, TY, NY)                                                                \
    extern "C" __global__ void kiln_conv_int_##NX##NW##_##NY(                                                \
        const TX* x, const TW* w, const TX* xz, const TW* wz, i64 wz_len, const i32* bias, TY* y,            \
        const float* xs, const float* ws, i64 ws_len, const float* ys, const TY* yz, ConvIntDesc d, int mode, \
        float lo, float hi) {                                                                                \
        conv_int<TX, TW, TY>(x, w, xz, wz, wz_len, bias, y, xs, ws, ws_len, ys, yz, d, mode, lo, hi);       \
    }
#define KILN_CONV_INT_XW(TY, NY)                                                                             \
    KILN_CONV_INT(u8, u8, u8, u8, TY, NY)                                                                    \
    KILN_CONV_INT(u8, u8, signed char, i8, TY, NY)                                                           \
    KILN_CONV_INT(signed char, i8, u8, u8, TY, NY)                                                           \
    KILN_CONV_INT(signed char, i8, signed char, i8, TY, NY)
KILN_CONV_INT_XW(i32, i32)
KILN_CONV_INT_XW(u8, u8)
KILN_CONV_INT_XW(signed char, i8)
