// Attention (ONNX opsets 23/24) and LinearAttention (opset 27).
//
// kiln_attention_T: one block per query row (batch, head, i). Scores in f32 in a
// workspace row, softmax in f32, then Y = P·V.
//   p: 0 Q, 1 K (all keys, past included), 2 V, 3 attn_mask?, 4 nonpad_kv_seqlen? (i64),
//      5 Y, 6 qk output?, 7 scores (f32 [rows, total])
//   n: 0 batch, 1 q heads, 2 kv heads, 3 q len, 4 total keys, 5 dk, 6 dv,
//      7..9 Q strides (b, h, l), 10..12 K, 13..15 V, 16..18 Y, 19..21 mask (b, h, i),
//      22 mask width, 23 mask kind (0 none, 1 bool, 2 T), 24 causal offset (-1: none),
//      25 qk output mode (-1: none, 0 matmul, 1 softcap, 2 masked, 3 softmax)
//   f: 0 scale, 1 softcap (0: none)
template <typename T> __device__ void attention(const FamArgs& a) {
    __shared__ float scratch[KILN_ROW_THREADS];
    const T* q = (const T*)a.p[0];
    const T* k = (const T*)a.p[1];
    const T* v = (const T*)a.p[2];
    const void* mask = (const void*)a.p[3];
    const i64* nonpad = (const i64*)a.p[4];
    T* y = (T*)a.p[5];
    T* qk = (T*)a.p[6];
    float* scores = (float*)a.p[7];
    const i64 batch = a.n[0], qh = a.n[1], kvh = a.n[2], lq = a.n[3], total = a.n[4], dk = a.n[5], dv = a.n[6];
    const i64 width = a.n[22], mask_kind = a.n[23], causal = a.n[24], mode = a.n[25];
    const float scale = a.f[0], softcap = a.f[1];
    const i64 rows = batch * qh * lq, reps = qh / kvh;
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const i64 i = row % lq, h = (row / lq) % qh, b = row / (lq * qh), kh = h / reps;
        const T* qr = q + b * a.n[7] + h * a.n[8] + i * a.n[9];
        const T* kb = k + b * a.n[10] + kh * a.n[11];
        const T* vb = v + b * a.n[13] + kh * a.n[14];
        T* yr = y + b * a.n[16] + h * a.n[17] + i * a.n[18];
        float* s = scores + row * total;
        T* qkr = qk ? qk + row * total : (T*)0;
        const i64 mo = b * a.n[19] + h * a.n[20] + i * a.n[21];
        const i64 valid = nonpad ? (nonpad[b] > 0 ? nonpad[b] : 0) : total;
        float mx = KILN_NEG_INF;
        for (i64 j = threadIdx.x; j < total; j += blockDim.x) {
            const T* kr = kb + j * a.n[12];
            float acc = 0.f;
            for (i64 d = 0; d < dk; ++d) acc += to_f(qr[d]) * to_f(kr[d]);
            float x = acc * scale;
            if (mode == 0) qkr[j] = from_f<T>(x);
            if (softcap > 0.f) x = softcap * tanhf(x / softcap);
            if (mode == 1) qkr[j] = from_f<T>(x);
            if (mask_kind != 0) {
                if (j < width) {
                    if (mask_kind == 1) x += ((const u8*)mask)[mo + j] ? 0.f : KILN_NEG_INF;
                    else x += to_f(((const T*)mask)[mo + j]);
                } else {
                    x += KILN_NEG_INF;
                }
            }
            if (causal >= 0 && j > i + causal) x = KILN_NEG_INF;
            if (j >= valid) x += KILN_NEG_INF;
            if (mode == 2) qkr[j] = from_f<T>(x);
            s[j] = x;
            mx = block_combine(BLOCK_MAX, mx, x);
        }
        mx = block_reduce(BLOCK_MAX, mx, scratch);
        const bool empty = mx == KILN_NEG_INF;  // every score -inf: zeros, not NaN
        float sum = 0.f;
        for (i64 j = threadIdx.x; j < total; j += blockDim.x) {
            const float e = empty ? 0.f : expf(s[j] - mx);
            s[j] = e;
            sum += e;
        }
        sum = block_reduce(BLOCK_SUM, sum, scratch);
        const float inv = empty ? 0.f : 1.f / sum;
        for (i64 j = threadIdx.x; j < total; j += blockDim.x) {
            const float p = s[j] * inv;
            s[j] = p;
            if (mode == 3) qkr[j] = from_f<T>(p);
        }
        __syncthreads();
        for (i64 m = threadIdx.x; m < dv; m += blockDim.x) {
            float acc = 0.f;
            for (i64 j = 0; j < total; ++j) acc += s[j] * to_f(vb[j * a.n[15] + m]);
            yr[m] = from_f<T>(acc);
        }
        __syncthreads();
    }
}

// kiln_linear_attention_T: one block per (batch, kv head); each thread owns columns m of
// the [dk, dv] state (f32 in the workspace), so the recurrence needs no synchronisation.
//   p: 0 query, 1 key, 2 value (T, [b, t, heads·d]), 3 past_state?, 4 decay?, 5 beta?,
//      6 output (T), 7 present_state, 8 state (f32 [b, hk, dk, dv])
//   n: 0 batch, 1 steps, 2 q heads, 3 kv heads, 4 dk, 5 dv, 6 past dtype code,
//      7 decay dtype, 8 decay row, 9 decay per head, 10 decay width,
//      11 beta dtype, 12 beta row, 13 beta per head, 14 present dtype
//   f: 0 scale
template <typename T> __device__ void linear_attention(const FamArgs& a) {
    const T* q = (const T*)a.p[0];
    const T* k = (const T*)a.p[1];
    const T* v = (const T*)a.p[2];
    const void* past = (const void*)a.p[3];
    const void* decay = (const void*)a.p[4];
    const void* beta = (const void*)a.p[5];
    T* y = (T*)a.p[6];
    void* present = (void*)a.p[7];
    float* state = (float*)a.p[8];
    const i64 batch = a.n[0], steps = a.n[1], hq = a.n[2], hk = a.n[3], dk = a.n[4], dv = a.n[5];
    const int past_code = (int)a.n[6], decay_code = (int)a.n[7], beta_code = (int)a.n[11], present_code = (int)a.n[14];
    const i64 drow = a.n[8], dper = a.n[9], dwidth = a.n[10], brow = a.n[12], bper = a.n[13];
    const float scale = a.f[0];
    const i64 group = hq / hk;
    for (i64 bh = blockIdx.x; bh < batch * hk; bh += gridDim.x) {
        const i64 b = bh / hk, h = bh % hk;
        float* s = state + bh * dk * dv;
        for (i64 m = threadIdx.x; m < dv; m += blockDim.x) {
            for (i64 d = 0; d < dk; ++d) s[d * dv + m] = past ? load_any(past, past_code, bh * dk * dv + d * dv + m) : 0.f;
            for (i64 t = 0; t < steps; ++t) {
                const T* kr = k + (b * steps + t) * hk * dk + h * dk;
                float vm = to_f(v[(b * steps + t) * hk * dv + h * dv + m]);
                if (decay) {
                    const i64 o = (b * steps + t) * drow + h * dper;
                    for (i64 d = 0; d < dk; ++d) s[d * dv + m] *= expf(load_any(decay, decay_code, o + (dwidth == 1 ? 0 : d)));
                }
                if (beta) {
                    const float be = load_any(beta, beta_code, (b * steps + t) * brow + h * bper);
                    float r = 0.f;
                    for (i64 d = 0; d < dk; ++d) r += s[d * dv + m] * to_f(kr[d]);
                    vm = be * (vm - r);
                }
                for (i64 d = 0; d < dk; ++d) s[d * dv + m] += to_f(kr[d]) * vm;
                for (i64 g = 0; g < group; ++g) {
                    const i64 head = h * group + g;
                    const T* qr = q + (b * steps + t) * hq * dk + head * dk;
                    float acc = 0.f;
                    for (i64 d = 0; d < dk; ++d) acc += to_f(qr[d]) * s[d * dv + m];
                    y[(b * steps + t) * hq * dv + head * dv + m] = from_f<T>(scale * acc);
                }
            }
            for (i64 d = 0; d < dk; ++d) store_any(present, present_code, bh * dk * dv + d * dv + m, s[d * dv + m]);
        }
    }
}

#define KILN_ATTENTION(T, N)                                                                                    \
    extern "C" __global__ void kiln_attention_##N(FamArgs a) { attention<T>(a); }                             \
    extern "C" __global__ void kiln_linear_attention_##N(FamArgs a) { linear_attention<T>(a); }
KILN_ATTENTION(float, f32)
KILN_ATTENTION(f16, f16)
KILN_ATTENTION(bf16, bf16)
