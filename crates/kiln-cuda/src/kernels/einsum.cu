// Einsum as one generic contraction: every output element sums, over all values of the
// contracted labels, the product of the inputs' elements. A repeated label in an input
// (a diagonal) is one label with the strides of its dims added; a broadcast dim has
// stride 0. Accumulated in float (double for f64, i64 for integers).
//   p: 0..3 inputs, 4 Y
//   n: 0 inputs, 1 labels (output ones first), 2 output labels, 3..18 label sizes,
//      19 + 16·k + l: input k's element stride for label l

__device__ __forceinline__ float ein_ld(float v) { return v; }
__device__ __forceinline__ float ein_ld(f16 v) { return __half2float(v); }
__device__ __forceinline__ float ein_ld(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ double ein_ld(double v) { return v; }
__device__ __forceinline__ i64 ein_ld(i32 v) { return (i64)v; }
__device__ __forceinline__ i64 ein_ld(i64 v) { return v; }
template <typename T, typename A> __device__ __forceinline__ T ein_st(A v) { return (T)v; }
template <> __device__ __forceinline__ f16 ein_st<f16, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ bf16 ein_st<bf16, float>(float v) { return __float2bfloat16_rn(v); }

template <typename T, typename A> __device__ void einsum(const FamArgs& a) {
    const int nin = (int)a.n[0], nl = (int)a.n[1], no = (int)a.n[2];
    const i64* dims = a.n + 3;
    T* y = (T*)a.p[4];
    i64 n_out = 1, n_red = 1;
    for (int l = 0; l < no; ++l) n_out *= dims[l];
    for (int l = no; l < nl; ++l) n_red *= dims[l];
    KILN_GRID_STRIDE(o, n_out) {
        i64 base[4] = {0, 0, 0, 0};
        i64 rem = o;
        for (int l = no - 1; l >= 0; --l) {
            const i64 i = rem % dims[l];
            rem /= dims[l];
            for (int k = 0; k < nin; ++k) base[k] += i * a.n[19 + 16 * k + l];
        }
        A acc = (A)0;
        for (i64 r = 0; r < n_red; ++r) {
            i64 off[4] = {base[0], base[1], base[2], base[3]};
            i64 rr = r;
            for (int l = nl - 1; l >= no; --l) {
                const i64 i = rr % dims[l];
                rr /= dims[l];
                for (int k = 0; k < nin; ++k) off[k] += i * a.n[19 + 16 * k + l];
            }
            A prod = (A)1;
            for (int k = 0; k < nin; ++k) prod *= (A)ein_ld(((const T*)a.p[k])[off[k]]);
            acc += prod;
        }
        y[o] = ein_st<T, A>(acc);
    }
}

extern "C" __global__ void kiln_einsum_f32(FamArgs a) { einsum<float, float>(a); }
extern "C" __global__ void kiln_einsum_f16(FamArgs a) { einsum<f16, float>(a); }
extern "C" __global__ void kiln_einsum_bf16(FamArgs a) { einsum<bf16, float>(a); }
extern "C" __global__ void kiln_einsum_f64(FamArgs a) { einsum<double, double>(a); }
extern "C" __global__ void kiln_einsum_i32(FamArgs a) { einsum<i32, i64>(a); }
extern "C" __global__ void kiln_einsum_i64(FamArgs a) { einsum<i64, i64>(a); }
