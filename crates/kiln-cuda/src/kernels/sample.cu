// Spatial sampling: GridSample (N-D up to 3 spatial dims), AffineGrid, RoiAlign.
// Coordinates in double (as the host reference), values accumulated in float.

__device__ double gs_reflect(double x, double lo, double hi) {
    const double range = hi - lo;
    if (range <= 0.0) return lo;
    if (x < lo) {
        const double d = lo - x, n = trunc(d / range), r = d - n * range;
        return ((long long)n % 2 == 0) ? lo + r : hi - r;
    }
    if (x > hi) {
        const double d = x - hi, n = trunc(d / range), r = d - n * range;
        return ((long long)n % 2 == 0) ? hi - r : lo + r;
    }
    return x;
}

// The input index an integer position reads, or -1 for a zero.
__device__ i64 gs_pixel(i64 i, i64 len, int padding, double lo, double hi) {
    const i64 last = len - 1;
    if (padding == 0) return (i >= 0 && i <= last) ? i : -1;
    if (padding == 1) return i < 0 ? 0 : (i > last ? (last > 0 ? last : 0) : i);
    i64 r = (i64)gs_reflect((double)i, lo, hi);
    return r < 0 ? 0 : (r > last ? (last > 0 ? last : 0) : r);
}

// Taps along one dim: up to 4 (index or -1, weight); returns how many.
__device__ int gs_taps(float v, i64 len, int mode, int padding, bool align, i64* idx, double* wt) {
    const double lo = align ? 0.0 : -0.5, hi = align ? (double)len - 1.0 : (double)len - 0.5;
    const float lf = (float)len;
    // Rounded step by step (no fused multiply-add), as the host computes it.
    const float xf = align ? __fmul_rn(__fdiv_rn(__fadd_rn(v, 1.f), 2.f), __fsub_rn(lf, 1.f))
                           : __fdiv_rn(__fsub_rn(__fmul_rn(__fadd_rn(v, 1.f), lf), 1.f), 2.f);
    double x = (double)xf;
    if (mode == 0) x = rint(x);
    if (x < lo || x > hi) {
        if (padding == 1) x = fmin(fmax(x, 0.0), fmax((double)len - 1.0, 0.0));
        else if (padding == 2) x = gs_reflect(x, lo, hi);
    }
    if (mode == 0) {
        idx[0] = gs_pixel((i64)x, len, padding, lo, hi);
        wt[0] = 1.0;
        return 1;
    }
    const double x0 = floor(x), t = x - x0;
    if (mode == 1) {
        idx[0] = gs_pixel((i64)x0, len, padding, lo, hi);
        idx[1] = gs_pixel((i64)x0 + 1, len, padding, lo, hi);
        wt[0] = 1.0 - t;
        wt[1] = t;
        return 2;
    }
    const double a = -0.75;
    const double t1 = t + 1.0, t2 = 1.0 - t, t3 = 2.0 - t;
    wt[0] = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a;
    wt[1] = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
    wt[2] = ((a + 2.0) * t2 - (a + 3.0)) * t2 * t2 + 1.0;
    wt[3] = ((a * t3 - 5.0 * a) * t3 + 8.0 * a) * t3 - 4.0 * a;
    for (int k = 0; k < 4; ++k) idx[k] = gs_pixel((i64)x0 - 1 + k, len, padding, lo, hi);
    return 4;
}

// kiln_grid_sample_T:
//   p: 0 X (T [n, c, D…]), 1 grid ([n, P…, r], float of any dtype), 2 Y (T [n, c, P…])
//   n: 0 n, 1 c, 2 r (1..3), 3..5 input spatial dims, 6 points, 7 mode (0 nearest,
//      1 linear, 2 cubic), 8 padding (0 zeros, 1 border, 2 reflection), 9 align_corners,
//      10 grid dtype code
template <typename T> __device__ void grid_sample(const FamArgs& a) {
    const T* x = (const T*)a.p[0];
    const void* grid = (const void*)a.p[1];
    T* y = (T*)a.p[2];
    const i64 n = a.n[0], c = a.n[1], r = a.n[2], points = a.n[6];
    const int mode = (int)a.n[7], padding = (int)a.n[8], gcode = (int)a.n[10];
    const bool align = a.n[9] != 0;
    i64 spatial = 1;
    for (int d = 0; d < r; ++d) spatial *= a.n[3 + d];
    KILN_GRID_STRIDE(o, n * c * points) {
        const i64 p = o % points, ch = (o / points) % c, b = o / (points * c);
        i64 idx[3][4];
        double wt[3][4];
        int cnt[3] = {1, 1, 1};
        for (int d = 0; d < r; ++d) {
            const float v = load_any(grid, gcode, (b * points + p) * r + (r - 1 - d));
            cnt[d] = gs_taps(v, a.n[3 + d], mode, padding, align, idx[d], wt[d]);
        }
        const T* img = x + (b * c + ch) * spatial;
        float acc = 0.f;
        const int c1 = r > 1 ? cnt[1] : 1, c2 = r > 2 ? cnt[2] : 1;
        for (int i0 = 0; i0 < cnt[0]; ++i0)
            for (int i1 = 0; i1 < c1; ++i1)
                for (int i2 = 0; i2 < c2; ++i2) {
                    i64 off = idx[0][i0];
                    double w = wt[0][i0];
                    if (r > 1) {
                        off = idx[1][i1] < 0 || off < 0 ? -1 : off * a.n[4] + idx[1][i1];
                        w *= wt[1][i1];
                    }
                    if (r > 2) {
                        off = idx[2][i2] < 0 || off < 0 ? -1 : off * a.n[5] + idx[2][i2];
                        w *= wt[2][i2];
                    }
                    if (off >= 0) acc += (float)w * to_f(img[off]);
                }
        y[o] = from_f<T>(acc);
    }
}

// kiln_affine_grid_T:
//   p: 0 theta (T [n, r, r+1]), 1 Y (T [n, L…, r])
//   n: 0 n, 1 r, 2..4 lens, 5 align_corners
template <typename T> __device__ void affine_grid(const FamArgs& a) {
    const T* th = (const T*)a.p[0];
    T* y = (T*)a.p[1];
    const i64 n = a.n[0], r = a.n[1];
    const bool align = a.n[5] != 0;
    i64 points = 1;
    for (int d = 0; d < r; ++d) points *= a.n[2 + d];
    KILN_GRID_STRIDE(o, n * points * r) {
        const i64 row = o % r, p = (o / r) % points, b = o / (r * points);
        i64 idx[3] = {0, 0, 0};
        i64 rem = p;
        for (int d = (int)r - 1; d >= 0; --d) {
            idx[d] = rem % a.n[2 + d];
            rem /= a.n[2 + d];
        }
        const T* t = th + (b * r + row) * (r + 1);
        float v = to_f(t[r]);
        for (int k = 0; k < r; ++k) {
            const i64 len = a.n[2 + r - 1 - k], i = idx[r - 1 - k];
            double base;
            if (align) base = len <= 1 ? -1.0 : -1.0 + 2.0 * (double)i / (double)(len - 1);
            else base = (2.0 * (double)i + 1.0) / (double)len - 1.0;
            v += to_f(t[k]) * (float)base;
        }
        y[o] = from_f<T>(v);
    }
}

// kiln_roi_align_T (ONNX Runtime's sampling, and its max-mode quirk):
//   p: 0 X (T [n, c, h, w]), 1 rois ([nr, 4], float of any dtype), 2 batch_indices
//      (i32 or i64), 3 Y (T [nr, c, oh, ow])
//   n: 0 n, 1 c, 2 h, 3 w, 4 nr, 5 oh, 6 ow, 7 sampling_ratio, 8 max mode, 9 half_pixel,
//      10 rois dtype code, 11 index dtype (1 i32, 2 i64)
//   f: 0 spatial_scale
template <typename T> __device__ void roi_align(const FamArgs& a) {
    const T* x = (const T*)a.p[0];
    const void* rois = (const void*)a.p[1];
    const void* bidx = (const void*)a.p[2];
    T* y = (T*)a.p[3];
    const i64 n = a.n[0], c = a.n[1], h = a.n[2], w = a.n[3], nr = a.n[4], oh = a.n[5], ow = a.n[6], sr = a.n[7];
    const bool max_mode = a.n[8] != 0, half_pixel = a.n[9] != 0;
    const int rcode = (int)a.n[10];
    const double scale = (double)a.f[0];
    KILN_GRID_STRIDE(o, nr * c * oh * ow) {
        const i64 pw = o % ow, ph = (o / ow) % oh, ch = (o / (ow * oh)) % c, i = o / (ow * oh * c);
        const i64 b = a.n[11] == 1 ? (i64)((const i32*)bidx)[i] : ((const i64*)bidx)[i];
        if (b < 0 || b >= n) {
            y[o] = from_f<T>(0.f);
            continue;
        }
        const double off = half_pixel ? 0.5 : 0.0;
        const double x0 = (double)load_any(rois, rcode, i * 4) * scale - off;
        const double y0 = (double)load_any(rois, rcode, i * 4 + 1) * scale - off;
        const double x1 = (double)load_any(rois, rcode, i * 4 + 2) * scale - off;
        const double y1 = (double)load_any(rois, rcode, i * 4 + 3) * scale - off;
        double rw = x1 - x0, rh = y1 - y0;
        if (!half_pixel) {
            rw = fmax(rw, 1.0);
            rh = fmax(rh, 1.0);
        }
        const double bh = rh / (double)oh, bw = rw / (double)ow;
        const i64 gh = sr > 0 ? sr : (i64)fmax(ceil(rh / (double)oh), 0.0);
        const i64 gw = sr > 0 ? sr : (i64)fmax(ceil(rw / (double)ow), 0.0);
        const i64 count = gh * gw > 0 ? gh * gw : 1;
        const T* img = x + (b * c + ch) * h * w;
        float acc = 0.f;
        float mx = KILN_NEG_INF;
        bool any = false;
        for (i64 iy = 0; iy < gh; ++iy) {
            double yy = y0 + (double)ph * bh + ((double)iy + 0.5) * bh / (double)gh;
            for (i64 ix = 0; ix < gw; ++ix) {
                double xx = x0 + (double)pw * bw + ((double)ix + 0.5) * bw / (double)gw;
                i64 off4[4] = {0, 0, 0, 0};
                double w4[4] = {0.0, 0.0, 0.0, 0.0};
                if (!(yy < -1.0 || yy > (double)h || xx < -1.0 || xx > (double)w || h == 0 || w == 0)) {
                    double sy = fmax(yy, 0.0), sx = fmax(xx, 0.0);
                    i64 yl = (i64)sy, xl = (i64)sx, yh, xh;
                    if (yl >= h - 1) {
                        yl = yh = h - 1;
                        sy = (double)yl;
                    } else {
                        yh = yl + 1;
                    }
                    if (xl >= w - 1) {
                        xl = xh = w - 1;
                        sx = (double)xl;
                    } else {
                        xh = xl + 1;
                    }
                    const double ly = sy - (double)yl, lx = sx - (double)xl, hy = 1.0 - ly, hx = 1.0 - lx;
                    off4[0] = yl * w + xl;
                    off4[1] = yl * w + xh;
                    off4[2] = yh * w + xl;
                    off4[3] = yh * w + xh;
                    w4[0] = hy * hx;
                    w4[1] = hy * lx;
                    w4[2] = ly * hx;
                    w4[3] = ly * lx;
                }
                float smax = KILN_NEG_INF;
                for (int k = 0; k < 4; ++k) {
                    const float v = (float)w4[k] * to_f(img[off4[k]]);
                    acc += v;
                    smax = fmaxf(smax, v);
                }
                mx = any ? fmaxf(mx, smax) : smax;
                any = true;
            }
        }
        y[o] = from_f<T>(max_mode ? (any ? mx : 0.f) : acc / (float)count);
    }
}

#define KILN_SAMPLE(T, N)                                                                   \
    extern "C" __global__ void kiln_grid_sample_##N(FamArgs a) { grid_sample<T>(a); }     \
    extern "C" __global__ void kiln_affine_grid_##N(FamArgs a) { affine_grid<T>(a); }     \
    extern "C" __global__ void kiln_roi_align_##N(FamArgs a) { roi_align<T>(a); }
KILN_SAMPLE(float, f32)
KILN_SAMPLE(f16, f16)
KILN_SAMPLE(bf16, bf16)

// Resize / Upsample: one pass per resized axis (separable), each output position's taps
// computed on the fly in double, as the host reference.
//   p: 0 src ([outer, n_in, inner]), 1 dst ([outer, n_out, inner])
//   n: 0 outer, 1 n_in, 2 n_out, 3 inner, 4 mode (0 nearest, 1 linear, 2 cubic),
//      5 coordinate mode (CoordMode order), 6 nearest mode (NearestMode order),
//      7 exclude_outside, 8 antialias, 9 src dtype code, 10 dst dtype code,
//      11 extrapolation bits (nearest), 12 scale (f64 bits), 13 roi start, 14 roi end
//   f: 0 cubic_coeff_a, 1 extrapolation value
__device__ double rs_coord(int coord, double y, double scale, i64 in_len, i64 out_len, double start, double end, bool* extrap) {
    const double in_f = (double)in_len, out_f = scale * in_f;
    *extrap = false;
    switch (coord) {
        case 0: return (y + 0.5) / scale - 0.5;
        case 1: {
            const double adj = (double)out_len / out_f, off = __dmul_rn(in_f / 2.0, 1.0 - adj);
            return off + (y + 0.5) / scale - 0.5;
        }
        case 2: return out_f == 1.0 ? -0.5 : (y + 0.5) / scale - 0.5;
        case 3: return out_f == 1.0 ? 0.0 : y * (in_f - 1.0) / (out_f - 1.0);
        case 4: return y / scale;
        case 5: return (y + 0.5) / scale;
        default: {
            double x = out_f == 1.0 ? (end - start) * (in_f - 1.0) / 2.0 : y * (end - start) * (in_f - 1.0) / (out_f - 1.0);
            x = __dadd_rn(x, __dmul_rn(start, in_f - 1.0));
            *extrap = x < 0.0 || x > in_f - 1.0;
            return x;
        }
    }
}

__device__ i64 rs_nearest(int mode, double x, double scale) {
    const double fl = floor(x);
    if (x == fl) return (i64)fl;
    const double ratio = x - fl;
    bool up;
    switch (mode) {
        case 0: up = ratio > 0.5; break;
        case 1: up = ratio >= 0.5; break;
        case 2: up = false; break;
        case 3: up = true; break;
        default: return scale < 1.0 ? (i64)ceil(x) : (i64)trunc(x);
    }
    return (i64)fl + (up ? 1 : 0);
}

__device__ double rs_cubic(double a, double x) {
    x = fabs(x);
    if (x <= 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

// Coefficient k of the window (count from rs_count) at fractional part `ratio`.
__device__ double rs_coeff(int mode, bool aa, double a, double ratio, double scale, i64 k) {
    if (!aa) {
        if (mode == 1) return k == 0 ? 1.0 - ratio : ratio;
        switch (k) {
            case 0: return rs_cubic(a, ratio + 1.0);
            case 1: return rs_cubic(a, ratio);
            case 2: return rs_cubic(a, 1.0 - ratio);
            default: return rs_cubic(a, 2.0 - ratio);
        }
    }
    const double s = fmin(scale, 1.0);
    if (mode == 1) {
        const i64 start = (i64)floor(-1.0 / s) + 1;
        return fmin(fmax(1.0 - fabs(((double)(start + k) - ratio) * s), 0.0), 1.0);
    }
    const i64 start = (i64)floor(-2.0 / s) + 1;
    return rs_cubic(a, s * ((double)(start + k) - ratio));
}

__device__ i64 rs_count(int mode, bool aa, double scale) {
    if (!aa) return mode == 1 ? 2 : 4;
    const double s = fmin(scale, 1.0);
    const i64 start = (i64)floor((mode == 1 ? -1.0 : -2.0) / s) + 1;
    return 2 - 2 * start;
}

extern "C" __global__ void kiln_resize_interp(FamArgs a) {
    const void* src = (const void*)a.p[0];
    void* dst = (void*)a.p[1];
    const i64 outer = a.n[0], n_in = a.n[1], n_out = a.n[2], inner = a.n[3];
    const int mode = (int)a.n[4], coord = (int)a.n[5];
    const bool exclude = a.n[7] != 0, aa = a.n[8] != 0;
    const int sc = (int)a.n[9], dc = (int)a.n[10];
    const double scale = __longlong_as_double(a.n[12]), start = __longlong_as_double(a.n[13]),
                 end = __longlong_as_double(a.n[14]);
    const double ca = (double)a.f[0];
    const i64 last = n_in > 0 ? n_in - 1 : 0;
    KILN_GRID_STRIDE(o, outer * n_out * inner) {
        const i64 in_ = o % inner, j = (o / inner) % n_out, ou = o / (inner * n_out);
        bool extrap;
        const double x = rs_coord(coord, (double)j, scale, n_in, n_out, start, end, &extrap);
        if (extrap) {
            store_any(dst, dc, o, a.f[1]);
            continue;
        }
        const double fl = floor(x);
        const double ratio = x == fl ? 1.0 : x - fl;
        const i64 n = rs_count(mode, aa, scale);
        const i64 first = (i64)fl - n / 2 + (x != fl ? 1 : 0);
        double sum1 = 1.0;
        if (aa) {
            sum1 = 0.0;
            for (i64 k = 0; k < n; ++k) sum1 += rs_coeff(mode, aa, ca, ratio, scale, k);
            if (sum1 == 0.0) sum1 = 1.0;
        }
        double sum2 = 1.0;
        if (exclude) {
            sum2 = 0.0;
            for (i64 k = 0; k < n; ++k) {
                const i64 i = first + k;
                if (i >= 0 && i <= last) sum2 += rs_coeff(mode, aa, ca, ratio, scale, k) / sum1;
            }
            if (sum2 == 0.0) sum2 = 1.0;
        }
        float acc = 0.f;
        const i64 base = ou * n_in * inner + in_;
        for (i64 k = 0; k < n; ++k) {
            i64 i = first + k;
            double w = rs_coeff(mode, aa, ca, ratio, scale, k) / sum1;
            if (exclude) w = (i < 0 || i > last) ? 0.0 : w / sum2;
            const float wf = (float)w;
            if (wf == 0.f) continue;
            i = i < 0 ? 0 : (i > last ? last : i);
            acc += wf * load_any(src, sc, base + i * inner);
        }
        store_any(dst, dc, o, acc);
    }
}

template <typename T> __device__ void resize_nearest(const FamArgs& a) {
    const T* src = (const T*)a.p[0];
    T* dst = (T*)a.p[1];
    const i64 outer = a.n[0], n_in = a.n[1], n_out = a.n[2], inner = a.n[3];
    const int coord = (int)a.n[5], nmode = (int)a.n[6];
    const T fill = (T)(u64)a.n[11];
    const double scale = __longlong_as_double(a.n[12]), start = __longlong_as_double(a.n[13]),
                 end = __longlong_as_double(a.n[14]);
    const i64 last = n_in > 0 ? n_in - 1 : 0;
    KILN_GRID_STRIDE(o, outer * n_out * inner) {
        const i64 in_ = o % inner, j = (o / inner) % n_out, ou = o / (inner * n_out);
        bool extrap;
        const double x = rs_coord(coord, (double)j, scale, n_in, n_out, start, end, &extrap);
        if (extrap) {
            dst[o] = fill;
            continue;
        }
        i64 i = rs_nearest(nmode, x, scale);
        i = i < 0 ? 0 : (i > last ? last : i);
        dst[o] = src[ou * n_in * inner + i * inner + in_];
    }
}

extern "C" __global__ void kiln_resize_nearest_b1(FamArgs a) { resize_nearest<u8>(a); }
extern "C" __global__ void kiln_resize_nearest_b2(FamArgs a) { resize_nearest<u16>(a); }
extern "C" __global__ void kiln_resize_nearest_b4(FamArgs a) { resize_nearest<u32>(a); }
extern "C" __global__ void kiln_resize_nearest_b8(FamArgs a) { resize_nearest<u64>(a); }
