// Normalisation over trailing axes: each row of D contiguous elements on its own, one
// block per row, statistics in float. LayerNormalization is two-pass (the mean, then the
// mean of squared deviations, so no cancellation); RMSNormalization one pass.
// Scale and bias broadcast to the row as a suffix: element j of a row uses
// scale[j % scale_len] (scale_len = D for a full-size scale, 1 for a scalar).

template <typename T>
__device__ void layer_norm(const T* x, const T* scale, const T* bias, T* y, float* mean_out, float* rstd_out, i64 rows,
                           i64 d, i64 scale_len, i64 bias_len, float eps) {
    __shared__ float scratch[1024];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * d;
        T* yr = y + row * d;
        float s = 0.f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) s += to_f(xr[j]);
        const float mean = block_reduce(BLOCK_SUM, s, scratch) / (float)d;
        float q = 0.f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            const float c = to_f(xr[j]) - mean;
            q += c * c;
        }
        const float var = block_reduce(BLOCK_SUM, q, scratch) / (float)d;
        const float rstd = 1.f / sqrtf(var + eps);
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            float v = (to_f(xr[j]) - mean) * rstd * to_f(scale[j % scale_len]);
            if (bias) v += to_f(bias[j % bias_len]);
            yr[j] = from_f<T>(v);
        }
        if (threadIdx.x == 0) {
            if (mean_out) mean_out[row] = mean;
            if (rstd_out) rstd_out[row] = rstd;
        }
    }
}

template <typename T>
__device__ void rms_norm(const T* x, const T* scale, T* y, i64 rows, i64 d, i64 scale_len, float eps) {
    __shared__ float scratch[1024];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * d;
        T* yr = y + row * d;
        float q = 0.f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            const float v = to_f(xr[j]);
            q += v * v;
        }
        const float inv = 1.f / sqrtf(block_reduce(BLOCK_SUM, q, scratch) / (float)d + eps);
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) yr[j] = from_f<T>(to_f(xr[j]) * inv * to_f(scale[j % scale_len]));
    }
}

#define KILN_NORM(T, N)                                                                                      \
    extern "C" __global__ void kiln_layer_norm_##N(const T* x, const T* scale, const T* bias, T* y,          \
                                                   float* mean_out, float* rstd_out, i64 rows, i64 d,        \
                                                   i64 scale_len, i64 bias_len, float eps) {                 \
        layer_norm<T>(x, scale, bias, y, mean_out, rstd_out, rows, d, scale_len, bias_len, eps);            \
    }                                                                                                        \
    extern "C" __global__ void kiln_rms_norm_##N(const T* x, const T* scale, T* y, i64 rows, i64 d,          \
                                                 i64 scale_len, float eps) {                                 \
        rms_norm<T>(x, scale, y, rows, d, scale_len, eps);                                                   \
    }
KILN_NORM(float, f32)
KILN_NORM(f16, f16)
KILN_NORM(bf16, bf16)
