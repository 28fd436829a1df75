// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss on x [N, C, D] (D the product
// of the trailing dims), target [N, D] (i32 or i64), optional weight [C]. Computed in
// float, rounded once on store.
//
// - log_softmax_axis1: one thread per (n, d) column: y = x - log Σ_c exp(x) over C.
// - nll: loss[n, d] = -logp[n, target, d] · w[target], 0 where target == ignore_index.
//   Reduction none: one thread per element. Sum / mean: one block; each thread sums a
//   strided share of the losses and of the weights applied, the block adds them up in
//   a fixed order (deterministic), mean divides by the weights' sum. A target outside
//   [0, C) that is not ignored reads nothing, counts 0 and sets *bad (when given).

template <typename T>
__device__ void log_softmax_axis1(const T* x, T* y, i64 n, i64 c, i64 d) {
    const i64 cols = n * d;
    KILN_GRID_STRIDE(i, cols) {
        const i64 b = i / d, s = i % d;
        const T* xc = x + b * c * d + s;
        float m = -KILN_INF;
        for (i64 k = 0; k < c; ++k) m = fmaxf(m, to_f(xc[k * d]));
        float sum = 0.f;
        for (i64 k = 0; k < c; ++k) sum += expf(to_f(xc[k * d]) - m);
        const float lse = logf(sum) + m;
        for (i64 k = 0; k < c; ++k) y[b * c * d + k * d + s] = from_f<T>(to_f(xc[k * d]) - lse);
    }
}

// The loss of element i and the weight it carries (0 when ignored or bad).
template <typename T>
__device__ __forceinline__ void nll_term(const T* logp, const void* target, int t64, const T* w, i64 i, i64 c, i64 d,
                                         i64 ignore, int has_ignore, u32* bad, float& loss, float& weight) {
    const i64 t = t64 ? ((const i64*)target)[i] : (i64)((const i32*)target)[i];
    loss = 0.f;
    weight = 0.f;
    if (has_ignore && t == ignore) return;
    if (t < 0 || t >= c) {
        if (bad) *bad = 1;
        return;
    }
    const i64 b = i / d, s = i % d;
    weight = w ? to_f(w[t]) : 1.f;
    loss = -to_f(logp[(b * c + t) * d + s]) * weight;
}

// reduction: 0 none, 1 sum, 2 mean (keep in step with lower/loss.rs).
template <typename T>
__device__ void nll(const T* logp, const void* target, int t64, const T* w, T* out, i64 rows, i64 c, i64 d,
                    i64 ignore, int has_ignore, int reduction, u32* bad) {
    if (reduction == 0) {
        KILN_GRID_STRIDE(i, rows) {
            float l, wt;
            nll_term<T>(logp, target, t64, w, i, c, d, ignore, has_ignore, bad, l, wt);
            out[i] = from_f<T>(l);
        }
        return;
    }
    __shared__ float scratch[KILN_ROW_THREADS];
    float ls = 0.f, ws = 0.f;
    for (i64 i = threadIdx.x; i < rows; i += blockDim.x) {
        float l, wt;
        nll_term<T>(logp, target, t64, w, i, c, d, ignore, has_ignore, bad, l, wt);
        ls += l;
        ws += wt;
    }
    const float lt = block_reduce(BLOCK_SUM, ls, scratch);
    const float wtot = block_reduce(BLOCK_SUM, ws, scratch);
    if (threadIdx.x == 0) out[0] = from_f<T>(reduction == 2 ? lt / wtot : lt);
}

#define KILN_LOSS(T, N)                                                                                         \
    extern "C" __global__ void kiln_log_softmax_axis1_##N(const T* x, T* y, i64 n, i64 c, i64 d) {               \
        log_softmax_axis1<T>(x, y, n, c, d);                                                                    \
    }                                                                                                           \
    extern "C" __global__ void kiln_nll_##N(const T* logp, const void* target, int t64, const T* w, T* out,     \
                                            i64 rows, i64 c, i64 d, i64 ignore, int has_ignore, int reduction,  \
                                            u32* bad) {                                                         \
        nll<T>(logp, target, t64, w, out, rows, c, d, ignore, has_ignore, reduction, bad);                      \
    }
KILN_LOSS(float, f32)
KILN_LOSS(f16, f16)
KILN_LOSS(bf16, bf16)
