// RNN, GRU and LSTM over a whole sequence: one block per (direction, batch row), threads
// over hidden units, the time loop inside the kernel (state in an f32 workspace), in
// float throughout.
//   p: 0 X, 1 W, 2 R, 3 B?, 4 sequence_lens?, 5 initial_h?, 6 initial_c?, 7 P?, 8 Y?,
//      9 Y_h?, 10 Y_c?, 11 work (f32, 5·hidden per block)
//   n: 0 kind (0 RNN, 1 GRU, 2 LSTM), 1 seq, 2 batch, 3 input, 4 hidden, 5 directions,
//      6 reverse only, 7 batch first, 8 linear_before_reset, 9 input_forget, 10 clip?,
//      11 sequence_lens dtype (1 i32, 2 i64), 12.. activation codes (3 per direction)
//   f: 0 clip, 1.. alphas (6), 7.. betas (6)

__device__ float rnn_act(int code, float alpha, float beta, float x) {
    switch (code) {
        case 0: return fmaxf(x, 0.f);
        case 1: return tanhf(x);
        case 2: return 1.f / (1.f + expf(-x));
        case 3: return alpha * x + beta;
        case 4: return x >= 0.f ? x : alpha * x;
        case 5: return x > alpha ? x : 0.f;
        case 6: return alpha * tanhf(beta * x);
        case 7: return fminf(fmaxf(alpha * x + beta, 0.f), 1.f);
        case 8: return x >= 0.f ? x : alpha * (expf(x) - 1.f);
        case 9: return x / (1.f + fabsf(x));
        default: return logf(1.f + expf(x));
    }
}

template <typename T> __device__ void recurrent(const FamArgs& a) {
    const T* X = (const T*)a.p[0];
    const T* W = (const T*)a.p[1];
    const T* R = (const T*)a.p[2];
    const T* B = (const T*)a.p[3];
    const void* lens = (const void*)a.p[4];
    const T* H0 = (const T*)a.p[5];
    const T* C0 = (const T*)a.p[6];
    const T* P = (const T*)a.p[7];
    T* Y = (T*)a.p[8];
    T* YH = (T*)a.p[9];
    T* YC = (T*)a.p[10];
    float* work = (float*)a.p[11];
    const int kind = (int)a.n[0];
    const i64 seq = a.n[1], batch = a.n[2], in = a.n[3], H = a.n[4], dirs = a.n[5];
    const bool reverse_only = a.n[6] != 0, bf = a.n[7] != 0, lbr = a.n[8] != 0, input_forget = a.n[9] != 0;
    const bool has_clip = a.n[10] != 0;
    const float clipv = a.f[0];
    const i64 gates = kind == 0 ? 1 : (kind == 1 ? 3 : 4), gh = gates * H;
    const int acts = kind == 0 ? 1 : (kind == 1 ? 2 : 3);
    for (i64 blk = blockIdx.x; blk < dirs * batch; blk += gridDim.x) {
        const i64 d = blk / batch, b = blk % batch;
        const bool reverse = reverse_only || d == 1;
        i64 len = seq;
        if (lens) len = a.n[11] == 1 ? (i64)((const i32*)lens)[b] : ((const i64*)lens)[b];
        if (len < 0) len = 0;
        if (len > seq) len = seq;
        float* h = work + blk * 5 * H;
        float* c = h + H;
        float* hn = h + 2 * H;
        float* cn = h + 3 * H;
        float* rh = h + 4 * H;
        const T* w = W + d * gh * in;
        const T* r = R + d * gh * H;
        const T* bw = B ? B + d * 2 * gh : (const T*)0;
        const T* br = B ? bw + gh : (const T*)0;
        const T* p = P ? P + d * 3 * H : (const T*)0;
        int code[3];
        float al[3], be[3];
        for (int k = 0; k < acts; ++k) {
            code[k] = (int)a.n[12 + d * acts + k];
            al[k] = a.f[1 + d * acts + k];
            be[k] = a.f[7 + d * acts + k];
        }
        // State index of (d, b, j) in Y_h, initial_h… layouts.
        const i64 so = bf ? (b * dirs + d) * H : (d * batch + b) * H;
        for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
            h[j] = H0 ? to_f(H0[so + j]) : 0.f;
            c[j] = C0 ? to_f(C0[so + j]) : 0.f;
            if (Y)
                for (i64 t = len; t < seq; ++t) {
                    const i64 yo = bf ? ((b * seq + t) * dirs + d) * H : ((t * dirs + d) * batch + b) * H;
                    Y[yo + j] = from_f<T>(0.f);
                }
        }
        __syncthreads();
        for (i64 step = 0; step < len; ++step) {
            const i64 t = reverse ? len - 1 - step : step;
            const T* x = X + (bf ? (b * seq + t) * in : (t * batch + b) * in);
#define GATE(g, j) gate_in(x, w, bw, in, H, g, j)
#define REC(g, j) gate_rec(h, r, br, H, g, j)
            auto gate_in = [](const T* x, const T* w, const T* bw, i64 in, i64 H, i64 g, i64 j) {
                const T* wr = w + (g * H + j) * in;
                float acc = bw ? to_f(bw[g * H + j]) : 0.f;
                for (i64 i = 0; i < in; ++i) acc += to_f(x[i]) * to_f(wr[i]);
                return acc;
            };
            auto gate_rec = [](const float* h, const T* r, const T* br, i64 H, i64 g, i64 j) {
                const T* rr = r + (g * H + j) * H;
                float acc = br ? to_f(br[g * H + j]) : 0.f;
                for (i64 k = 0; k < H; ++k) acc += h[k] * to_f(rr[k]);
                return acc;
            };
            auto act = [&](int k, float v) {
                if (has_clip) v = fminf(fmaxf(v, -clipv), clipv);
                return rnn_act(code[k], al[k], be[k], v);
            };
            if (kind == 0) {
                for (i64 j = threadIdx.x; j < H; j += blockDim.x) hn[j] = act(0, GATE(0, j) + REC(0, j));
            } else if (kind == 1) {
                for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
                    const float rg = act(0, GATE(1, j) + REC(1, j));
                    cn[j] = rg;
                    rh[j] = rg * h[j];
                }
                __syncthreads();
                for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
                    const float z = act(0, GATE(0, j) + REC(0, j));
                    float cand;
                    if (lbr) {
                        cand = GATE(2, j) + cn[j] * REC(2, j);
                    } else {
                        const T* rr = r + (2 * H + j) * H;
                        float acc = br ? to_f(br[2 * H + j]) : 0.f;
                        for (i64 k = 0; k < H; ++k) acc += rh[k] * to_f(rr[k]);
                        cand = GATE(2, j) + acc;
                    }
                    cand = act(1, cand);
                    hn[j] = (1.f - z) * cand + z * h[j];
                }
            } else {
                for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
                    const float cp = c[j];
                    const float pi = p ? to_f(p[j]) : 0.f, po = p ? to_f(p[H + j]) : 0.f, pf = p ? to_f(p[2 * H + j]) : 0.f;
                    const float ig = act(0, GATE(0, j) + REC(0, j) + pi * cp);
                    const float fg = input_forget ? 1.f - ig : act(0, GATE(2, j) + REC(2, j) + pf * cp);
                    const float cand = act(1, GATE(3, j) + REC(3, j));
                    const float ct = fg * cp + ig * cand;
                    const float og = act(0, GATE(1, j) + REC(1, j) + po * ct);
                    cn[j] = ct;
                    hn[j] = og * rnn_act(code[2], al[2], be[2], ct);
                }
            }
#undef GATE
#undef REC
            __syncthreads();
            for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
                h[j] = hn[j];
                if (kind == 2) c[j] = cn[j];
                if (Y) {
                    const i64 yo = bf ? ((b * seq + t) * dirs + d) * H : ((t * dirs + d) * batch + b) * H;
                    Y[yo + j] = from_f<T>(hn[j]);
                }
            }
            __syncthreads();
        }
        for (i64 j = threadIdx.x; j < H; j += blockDim.x) {
            if (YH) YH[so + j] = from_f<T>(len == 0 ? 0.f : h[j]);
            if (YC) YC[so + j] = from_f<T>(len == 0 ? 0.f : c[j]);
        }
        __syncthreads();
    }
}

extern "C" __global__ void kiln_recurrent_f32(FamArgs a) { recurrent<float>(a); }
extern "C" __global__ void kiln_recurrent_f16(FamArgs a) { recurrent<f16>(a); }
extern "C" __global__ void kiln_recurrent_bf16(FamArgs a) { recurrent<bf16>(a); }
