// Shared by every Kiln kernel source (prepended to each .cu file by kernels/mod.rs):
// the element types, float loads and stores for them (half and bfloat16 are computed
// in float and rounded once, on store), grid-stride loops and a block reduction.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define KILN_MAX_RANK 8

typedef __half f16;
typedef __nv_bfloat16 bf16;
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef int i32;

// Every element as float (integers converted, bool as 0/1).
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(f16 v) { return __half2float(v); }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(i32 v) { return (float)v; }
__device__ __forceinline__ float to_f(i64 v) { return (float)v; }
__device__ __forceinline__ float to_f(u8 v) { return v ? 1.f : 0.f; }

// A float rounded once into T.
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ f16 from_f<f16>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

#define KILN_INF __int_as_float(0x7f800000)

#define KILN_GRID_STRIDE(i, n) \
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Blocks of row kernels (one block per row) have this many threads.
#define KILN_ROW_THREADS 256

// Sum, max, min or product of `v` over the block (blockDim.x a power of two, at most
// 1024); every thread gets the result. `scratch` holds blockDim.x floats.
// max/min: NaN wins, as on the host.
enum BlockOp { BLOCK_SUM = 0, BLOCK_MAX, BLOCK_MIN, BLOCK_PROD };

__device__ __forceinline__ float block_combine(int op, float a, float b) {
    switch (op) {
        case BLOCK_MAX: return (a > b || a != a) ? a : b;
        case BLOCK_MIN: return (a < b || a != a) ? a : b;
        case BLOCK_PROD: return a * b;
        default: return a + b;
    }
}

__device__ float block_reduce(int op, float v, float* scratch) {
    const unsigned t = threadIdx.x;
    __syncthreads();  // scratch may still be read from a previous call
    scratch[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] = block_combine(op, scratch[t], scratch[t + s]);
        __syncthreads();
    }
    return scratch[0];
}

template <typename T> struct IsFloat { static const bool value = false; };
template <> struct IsFloat<float> { static const bool value = true; };
template <> struct IsFloat<f16> { static const bool value = true; };
template <> struct IsFloat<bf16> { static const bool value = true; };
