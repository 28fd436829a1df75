// Ops whose output size depends on the data. Each writes at most its upper bound of
// results and the count it wrote; the host reads the count back and takes that many.

// NonZero of a bool tensor (bytes, 0 = false) of `n` elements and `rank` dims: the
// coordinates of every true element in row-major order, as out[d * n + k] (row d, the
// k-th true element); *count = how many. One block: tiles of blockDim.x elements, each
// tile's flags scanned in shared memory so that the order is kept.
extern "C" __global__ void nonzero_b1(const u8* x, i64 n, int rank, const i64* dims, i64* out, i64* count) {
    __shared__ i64 scan[1024];
    __shared__ i64 base;
    if (threadIdx.x == 0) base = 0;
    __syncthreads();
    for (i64 start = 0; start < n; start += blockDim.x) {
        i64 i = start + threadIdx.x;
        i64 flag = (i < n && x[i] != 0) ? 1 : 0;
        scan[threadIdx.x] = flag;
        __syncthreads();
        // Hillis-Steele inclusive scan.
        for (unsigned off = 1; off < blockDim.x; off <<= 1) {
            i64 v = threadIdx.x >= off ? scan[threadIdx.x - off] : 0;
            __syncthreads();
            scan[threadIdx.x] += v;
            __syncthreads();
        }
        if (flag) {
            i64 k = base + scan[threadIdx.x] - 1;
            i64 rem = i;
            for (int d = rank - 1; d >= 0; --d) {
                out[d * n + k] = rem % dims[d];
                rem /= dims[d];
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) base += scan[blockDim.x - 1];
        __syncthreads();
    }
    if (threadIdx.x == 0) *count = base;
}

struct Box4 { float x0, x1, y0, y1; };

__device__ Box4 nms_box(const float* v, int center) {
    Box4 b;
    if (center) {
        float hw = v[2] / 2.0f, hh = v[3] / 2.0f;
        b.x0 = v[0] - hw; b.x1 = v[0] + hw; b.y0 = v[1] - hh; b.y1 = v[1] + hh;
    } else {
        b.x0 = fminf(v[1], v[3]); b.x1 = fmaxf(v[1], v[3]);
        b.y0 = fminf(v[0], v[2]); b.y1 = fmaxf(v[0], v[2]);
    }
    return b;
}

// Whether a and b overlap by more than `thr` (IoU), in f32 as the CPU reference does.
__device__ bool nms_suppresses(Box4 a, Box4 b, float thr) {
    float ix0 = fmaxf(a.x0, b.x0), ix1 = fminf(a.x1, b.x1);
    float iy0 = fmaxf(a.y0, b.y0), iy1 = fminf(a.y1, b.y1);
    if (ix1 <= ix0 || iy1 <= iy0) return false;
    float inter = __fmul_rn(ix1 - ix0, iy1 - iy0);
    float area_a = __fmul_rn(a.x1 - a.x0, a.y1 - a.y0);
    float area_b = __fmul_rn(b.x1 - b.x0, b.y1 - b.y0);
    float uni = area_a + area_b - inter;
    if (inter <= 0.f || area_a <= 0.f || area_b <= 0.f || uni <= 0.f) return false;
    return __fdiv_rn(inter, uni) > thr;
}

// NonMaxSuppression, one thread per (batch, class): repeatedly take the best remaining
// candidate (highest score, lowest index on ties) and keep it unless a kept box
// suppresses it. boxes [B, N, 4], scores [B, C, N]; `done` is B*C*N scratch bytes;
// selected [B*C, max_out] box indices, counts [B*C].
extern "C" __global__ void nms_f32(const float* boxes, const float* scores, i64 batches, i64 classes, i64 n,
                                   i64 max_out, float iou, int has_score_min, float score_min, int center,
                                   u8* done, i64* selected, i64* counts) {
    i64 bc = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (bc >= batches * classes) return;
    i64 b = bc / classes;
    const float* s = scores + bc * n;
    const float* bx = boxes + b * n * 4;
    u8* seen = done + bc * n;
    i64* sel = selected + bc * max_out;
    for (i64 i = 0; i < n; ++i) seen[i] = (has_score_min && !(s[i] > score_min)) ? 1 : 0;
    i64 kept = 0;
    while (kept < max_out) {
        i64 best = -1;
        for (i64 i = 0; i < n; ++i) {
            if (!seen[i] && (best < 0 || s[i] > s[best])) best = i;
        }
        if (best < 0) break;
        seen[best] = 1;
        Box4 cand = nms_box(bx + best * 4, center);
        bool keep = true;
        for (i64 k = 0; k < kept && keep; ++k) {
            if (nms_suppresses(cand, nms_box(bx + sel[k] * 4, center), iou)) keep = false;
        }
        if (keep) sel[kept++] = best;
    }
    counts[bc] = kept;
}
