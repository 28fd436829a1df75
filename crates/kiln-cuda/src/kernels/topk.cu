// TopK along the middle axis of [outer, R, inner]: the k largest (or smallest) values of
// each row in order, ties by lower index, NaN above every number (as the CPU reference).
// One thread per row; each pick scans the row for the best element after the previous
// pick in that total order (k scans, no scratch memory).

template <typename T> __device__ __forceinline__ T topk_key(T v) { return v; }
__device__ __forceinline__ float topk_key(f16 v) { return __half2float(v); }
__device__ __forceinline__ float topk_key(bf16 v) { return __bfloat162float(v); }

// -1, 0, 1 as a is below, equal to, above b; NaN above every number.
template <typename K> __device__ __forceinline__ int topk_cmp(K a, K b) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
    return a < b ? -1 : (a > b ? 1 : 0);
}

template <typename T>
__device__ void topk(int largest, const T* x, T* values, i64* indices, i64 outer, i64 r, i64 inner, i64 k) {
    KILN_GRID_STRIDE(row, outer * inner) {
        const i64 base = (row / inner) * r * inner + (row % inner);
        const i64 out_base = (row / inner) * k * inner + (row % inner);
        i64 prev = -1;
        for (i64 t = 0; t < k; ++t) {
            i64 best = -1;
            for (i64 j = 0; j < r; ++j) {
                const auto v = topk_key(x[base + j * inner]);
                if (prev >= 0) {
                    // j must come after prev in the order.
                    int c = topk_cmp(v, topk_key(x[base + prev * inner]));
                    if (!largest) c = -c;
                    if (c > 0 || (c == 0 && j <= prev)) continue;
                }
                if (best >= 0) {
                    int c = topk_cmp(v, topk_key(x[base + best * inner]));
                    if (!largest) c = -c;
                    if (c < 0 || (c == 0 && j > best)) continue;
                }
                best = j;
            }
            prev = best;
            values[out_base + t * inner] = x[base + best * inner];
            indices[out_base + t * inner] = best;
        }
    }
}

#define KILN_TOPK(T, N)                                                                                     \
    extern "C" __global__ void kiln_topk_##N(int largest, const T* x, T* values, i64* indices, i64 outer,  \
                                             i64 r, i64 inner, i64 k) {                                    \
        topk<T>(largest, x, values, indices, outer, r, inner, k);                                           \
    }
KILN_TOPK(float, f32)
KILN_TOPK(f16, f16)
KILN_TOPK(bf16, bf16)
KILN_TOPK(double, f64)
KILN_TOPK(signed char, i8)
KILN_TOPK(short, i16)
KILN_TOPK(int, i32)
KILN_TOPK(long long, i64)
KILN_TOPK(unsigned char, u8)
KILN_TOPK(unsigned short, u16)
KILN_TOPK(unsigned int, u32)
KILN_TOPK(unsigned long long, u64)
