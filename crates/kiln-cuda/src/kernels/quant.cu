// Quantisation kernels. Element types are runtime codes (keep in step with `QCode` in
// lower/quant.rs), so one kernel serves every pair of types:
//   0 f32, 1 f16, 2 bf16, 3 i8, 4 u8, 5 i16, 6 u16, 7 i32, 8 f8e4m3fn, 9 f8e5m2.
//
// - quantize: y = saturate(round_half_even(x / scale) + zero) (FP8: encode(x / scale +
//   zero), saturating or not), the division in double and rounded to the precision
//   type (`prec`: a code, or -1 for double), as the host does.
// - dequantize: y = (x - zero) · scale, x - zero exact in float.
// - dynamic_quantize_params / dynamic_quantize: DynamicQuantizeLinear (f32 → u8):
//   one block finds the range (with 0 in it) and writes scale and zero point, then a
//   grid-stride pass quantizes with them.
// - matmul_integer: exact wrapping i32 products of zero-point-shifted i8/u8 operands,
//   one thread per output; qlinear requantizes them.
//
// Scale and zero point are found per element by `param_index`: per tensor (mode 0), per
// axis (1: (i / inner) % dim) or blocked (2: one per `block` along the axis).

__device__ __forceinline__ float fp8_decode(u8 bits, int e5m2) {
    const float sign = (bits & 0x80) ? -1.f : 1.f;
    const int m_bits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
    const int exp = (bits & 0x7f) >> m_bits, man = bits & ((1 << m_bits) - 1);
    const int max_exp = (1 << (7 - m_bits)) - 1;
    if (!e5m2 && exp == max_exp && man == (1 << m_bits) - 1) return __int_as_float(0x7fc00000);
    if (e5m2 && exp == max_exp) return man == 0 ? sign * KILN_INF : __int_as_float(0x7fc00000);
    const float v = exp == 0 ? ldexpf((float)man, 1 - bias - m_bits)
                             : ldexpf((float)(man + (1 << m_bits)), exp - bias - m_bits);
    return sign * v;
}

// Round to nearest even; out of range: the largest finite value when saturating, else
// NaN (e4m3fn) or infinity (e5m2). As kiln-cpu's Fp8::encode.
__device__ u8 fp8_encode(double x, int e5m2, int saturate) {
    const u8 sign = signbit(x) ? 0x80 : 0;
    if (isnan(x)) return 0x7f | sign;
    const double maxv = e5m2 ? 57344.0 : 448.0;
    const u8 max_bits = e5m2 ? 0x7b : 0x7e;
    const u8 overflow = saturate ? max_bits : (e5m2 ? 0x7c : 0x7f);
    const double a = fabs(x);
    if (isinf(a)) return overflow | sign;
    if (a == 0.0) return sign;
    const int m_bits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
    const int emin = 1 - bias;
    int e = ilogb(a);
    if (e < emin) e = emin;
    const double quantum = ldexp(1.0, e - m_bits);
    const double q = rint(a / quantum) * quantum;
    if (q > maxv) return overflow | sign;
    if (q == 0.0) return sign;
    const int e2 = ilogb(q);
    u8 bits;
    if (e2 < emin) {
        bits = (u8)(q / ldexp(1.0, emin - m_bits));
    } else {
        const int man = (int)(q / ldexp(1.0, e2 - m_bits)) - (1 << m_bits);
        bits = (u8)(((e2 + bias) << m_bits) | man);
    }
    return bits | sign;
}

__device__ __forceinline__ double load_q(const void* p, int code, i64 i) {
    switch (code) {
        case 0: return ((const float*)p)[i];
        case 1: return __half2float(((const f16*)p)[i]);
        case 2: return __bfloat162float(((const bf16*)p)[i]);
        case 3: return ((const signed char*)p)[i];
        case 4: return ((const u8*)p)[i];
        case 5: return ((const short*)p)[i];
        case 6: return ((const u16*)p)[i];
        case 7: return ((const i32*)p)[i];
        case 8: return fp8_decode(((const u8*)p)[i], 0);
        case 9: return fp8_decode(((const u8*)p)[i], 1);
    }
    return 0.0;
}

// The integer range of an integer code.
__device__ __forceinline__ void int_range(int code, double& lo, double& hi) {
    switch (code) {
        case 3: lo = -128; hi = 127; break;
        case 4: lo = 0; hi = 255; break;
        case 5: lo = -32768; hi = 32767; break;
        case 6: lo = 0; hi = 65535; break;
        default: lo = -2147483648.0; hi = 2147483647.0; break;
    }
}

// v stored into an element of `code`: floats rounded once, integers rounded half to
// even and saturated (NaN: 0), FP8 encoded.
__device__ __forceinline__ void store_q(void* p, int code, i64 i, double v, int saturate) {
    switch (code) {
        case 0: ((float*)p)[i] = (float)v; return;
        case 1: ((f16*)p)[i] = __float2half_rn((float)v); return;
        case 2: ((bf16*)p)[i] = __float2bfloat16_rn((float)v); return;
        case 8: ((u8*)p)[i] = fp8_encode(v, 0, saturate); return;
        case 9: ((u8*)p)[i] = fp8_encode(v, 1, saturate); return;
    }
    double lo, hi;
    int_range(code, lo, hi);
    double r = rint(v);
    r = isnan(r) ? 0.0 : fmin(fmax(r, lo), hi);
    switch (code) {
        case 3: ((signed char*)p)[i] = (signed char)r; return;
        case 4: ((u8*)p)[i] = (u8)r; return;
        case 5: ((short*)p)[i] = (short)r; return;
        case 6: ((u16*)p)[i] = (u16)r; return;
        default: ((i32*)p)[i] = (i32)r; return;
    }
}

// v rounded to the precision type (`prec` a float code; -1: double).
__device__ __forceinline__ double round_prec(int prec, double v) {
    switch (prec) {
        case 0: return (double)(float)v;
        case 1: return (double)__half2float(__float2half_rn((float)v));
        case 2: return (double)__bfloat162float(__float2bfloat16_rn((float)v));
    }
    return v;
}

// Passed as 8 i64 (the launcher's `Dims`).
struct QLayout {
    i64 mode, dim, inner, block, blocks, pad0, pad1, pad2;
};

__device__ __forceinline__ i64 param_index(const QLayout& l, i64 i) {
    if (l.mode == 0) return 0;
    const i64 d = (i / l.inner) % l.dim;
    if (l.mode == 1) return d;
    const i64 outer = i / (l.dim * l.inner), r = i % l.inner;
    return (outer * l.blocks + d / l.block) * l.inner + r;
}

extern "C" __global__ void kiln_quantize(const void* x, int x_code, const void* scale, int s_code, const void* zero,
                                         void* y, int y_code, i64 n, QLayout l, int prec, int saturate) {
    KILN_GRID_STRIDE(i, n) {
        const i64 p = param_index(l, i);
        const double s = round_prec(prec, load_q(scale, s_code, p));
        const double v = round_prec(prec, round_prec(prec, load_q(x, x_code, i)) / s);
        const double z = zero ? load_q(zero, y_code, p) : 0.0;
        if (y_code == 8 || y_code == 9) {
            store_q(y, y_code, i, v + z, saturate);
        } else {
            store_q(y, y_code, i, rint(v) + z, saturate);
        }
    }
}

extern "C" __global__ void kiln_dequantize(const void* x, int x_code, const void* scale, int s_code,
                                           const void* zero, void* y, int y_code, i64 n, QLayout l) {
    KILN_GRID_STRIDE(i, n) {
        const i64 p = param_index(l, i);
        const double z = zero ? load_q(zero, x_code, p) : 0.0;
        const double d = (double)(float)(load_q(x, x_code, i) - z);
        store_q(y, y_code, i, d * load_q(scale, s_code, p), 1);
    }
}

// One block: scale = (max - min) / 255 over the range with 0 in it (1/255 when empty),
// zero = round(clamp(-min / scale, 0, 255)).
extern "C" __global__ void kiln_dynamic_quantize_params(const float* x, i64 n, float* scale, u8* zero) {
    __shared__ float scratch[KILN_ROW_THREADS];
    float mx = 0.f, mn = 0.f;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        mx = fmaxf(mx, x[i]);
        mn = fminf(mn, x[i]);
    }
    mx = block_reduce(BLOCK_MAX, mx, scratch);
    mn = block_reduce(BLOCK_MIN, mn, scratch);
    if (threadIdx.x == 0) {
        const float s = (mx == mn ? 1.f : mx - mn) / 255.f;
        *scale = s;
        *zero = (u8)rintf(fminf(fmaxf(0.f - mn / s, 0.f), 255.f));
    }
}

extern "C" __global__ void kiln_dynamic_quantize(const float* x, i64 n, const float* scale, const u8* zero, u8* y) {
    const float s = *scale;
    const float z = (float)*zero;
    KILN_GRID_STRIDE(i, n) { y[i] = (u8)fminf(fmaxf(rintf(x[i] / s) + z, 0.f), 255.f); }
}

// acc[b, m, n] = Σ_k (a[b?, m, k] - az[m or 0]) · (b[b?, k, n] - bz[n or 0]) (wrapping
// i32); a_bs / b_bs: batch strides (0: broadcast). With y_scale given (QLinearMatMul):
// y = saturate(round(acc · (a_scale · b_scale[n or 0] / y_scale) + y_zero)), the
// multiplier in the scales' type (`s_code`), the rest in double, as the host does.
// Passed as 8 i64 (the launcher's `Dims`).
struct MatInt {
    i64 batch, m, n, k, a_bs, b_bs, az_len, bz_len;
};

__device__ __forceinline__ i32 qint(const void* p, int code, i64 i) {
    return code == 3 ? (i32)((const signed char*)p)[i] : (i32)((const u8*)p)[i];
}

extern "C" __global__ void kiln_matmul_integer(const void* a, int a_code, const void* b, int b_code, const void* az,
                                               const void* bz, MatInt d, i64 bs_len, const void* a_scale, const void* b_scale,
                                               const void* y_scale, int s_code, const void* y_zero, void* y,
                                               int y_code) {
    const i64 total = d.batch * d.m * d.n;
    KILN_GRID_STRIDE(i, total) {
        const i64 col = i % d.n, row = (i / d.n) % d.m, bt = i / (d.m * d.n);
        const i32 za = az ? qint(az, a_code, d.az_len == 1 ? 0 : row) : 0;
        const i32 zb = bz ? qint(bz, b_code, d.bz_len == 1 ? 0 : col) : 0;
        const i64 ao = bt * d.a_bs + row * d.k, bo = bt * d.b_bs + col;
        u32 acc = 0;
        for (i64 kk = 0; kk < d.k; ++kk) {
            const i32 av = qint(a, a_code, ao + kk) - za;
            const i32 bv = qint(b, b_code, bo + kk * d.n) - zb;
            acc += (u32)av * (u32)bv;
        }
        if (!y_scale) {
            ((i32*)y)[i] = (i32)acc;
            continue;
        }
        const double sa = load_q(a_scale, s_code, 0), sb = load_q(b_scale, s_code, bs_len == 1 ? 0 : col);
        const double mul = round_prec(s_code, round_prec(s_code, sa * sb) / load_q(y_scale, s_code, 0));
        const double yz = y_zero ? load_q(y_zero, y_code, 0) : 0.0;
        store_q(y, y_code, i, (double)(i32)acc * mul + yz, 1);
    }
}
