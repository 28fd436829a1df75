
// The single argument of the family kernels (attention, recurrent, sample, einsum):
// buffer addresses, integer and float parameters, laid out as each kernel's comment
// says (launch/family.rs fills it and checks every buffer first).
struct FamArgs {
    u64 p[16];
    i64 n[96];
    float f[16];
};

// Loads and stores of a float dtype chosen at run time (0: f32, 1: f16, 2: bf16, 3: f64).
__device__ __forceinline__ float load_any(const void* p, int code, i64 i) {
    switch (code) {
        case 1: return __half2float(((const f16*)p)[i]);
        case 2: return __bfloat162float(((const bf16*)p)[i]);
        case 3: return (float)((const double*)p)[i];
        default: return ((const float*)p)[i];
    }
}

__device__ __forceinline__ void store_any(void* p, int code, i64 i, float v) {
    switch (code) {
        case 1: ((f16*)p)[i] = __float2half_rn(v); break;
        case 2: ((bf16*)p)[i] = __float2bfloat16_rn(v); break;
        case 3: ((double*)p)[i] = (double)v; break;
        default: ((float*)p)[i] = v;
    }
}

#define KILN_NEG_INF __int_as_float(0xff800000)
