// Index kernels: GatherElements, GatherND, ScatterElements (and Scatter), ScatterND,
// TensorScatter, OneHot. Indices are i32 or i64 (`idx64` says which, read by
// `load_index`); a negative index counts from the end. An index still out of range
// after that is never used to address memory: a gather writes zero there, a scatter
// skips the update, and either sets *bad (when given) to 1.
//
// Scatters are deterministic and apply updates in index order, as the host does (later
// duplicates win for `none`, reductions combine in order): ScatterElements runs one
// thread per line along the axis, ScatterND one thread per element of the update
// block walking every index tuple in order. Both run after a copy of data into out.

struct Dims {
    i64 d[KILN_MAX_RANK];
};

__device__ __forceinline__ i64 load_index(const void* p, int idx64, i64 i) {
    return idx64 ? ((const i64*)p)[i] : (i64)((const i32*)p)[i];
}

// `k` normalised into [0, dim); false (and *bad set) when it is out of range.
__device__ __forceinline__ bool fix_index(i64& k, i64 dim, u32* bad) {
    if (k < 0) k += dim;
    if (k < 0 || k >= dim) {
        if (bad) *bad = 1;
        return false;
    }
    return true;
}

// Keep in step with `Reduction` codes in lower/index.rs.
enum ScatterRed { R_NONE = 0, R_ADD, R_MUL, R_MAX, R_MIN };

template <typename T> __device__ __forceinline__ T red_apply(int r, T a, T v) {
    switch (r) {
        case R_ADD: return a + v;
        case R_MUL: return a * v;
        case R_MAX: return v > a ? v : a;
        case R_MIN: return v < a ? v : a;
        default: return v;
    }
}
template <> __device__ __forceinline__ f16 red_apply<f16>(int r, f16 a, f16 v) {
    return r == R_NONE ? v : from_f<f16>(red_apply<float>(r, to_f(a), to_f(v)));
}
template <> __device__ __forceinline__ bf16 red_apply<bf16>(int r, bf16 a, bf16 v) {
    return r == R_NONE ? v : from_f<bf16>(red_apply<float>(r, to_f(a), to_f(v)));
}

// out (indices' shape idims) = data at the output's coordinates, with the axis
// coordinate replaced by the index. dstrides: data's element strides.
template <typename T>
__device__ void gather_elements(const T* data, const void* idx, int idx64, T* out, i64 n, int rank, Dims idims,
                                Dims dstrides, int axis, i64 axis_dim, u32* bad) {
    KILN_GRID_STRIDE(i, n) {
        i64 rem = i, src = 0;
        bool ok = true;
        for (int k = rank - 1; k >= 0; --k) {
            i64 c = rem % idims.d[k];
            rem /= idims.d[k];
            if (k == axis) {
                c = load_index(idx, idx64, i);
                ok = fix_index(c, axis_dim, bad);
            }
            src += c * dstrides.d[k];
        }
        out[i] = ok ? data[src] : T();
    }
}

// out[t, j] = data[batch(t) · batch_stride + Σ_q idx[t, q] · strides[q] + j] for the
// n_tuples index tuples of length kk; dims/strides: data's dims and strides after the
// batch dims.
template <typename T>
__device__ void gather_nd(const T* data, const void* idx, int idx64, T* out, i64 n_tuples, int kk, Dims dims,
                          Dims strides, i64 per_batch, i64 batch_stride, i64 inner, u32* bad) {
    const i64 n = n_tuples * inner;
    KILN_GRID_STRIDE(i, n) {
        const i64 t = i / inner, j = i % inner;
        i64 src = (t / per_batch) * batch_stride;
        bool ok = true;
        for (int q = 0; q < kk; ++q) {
            i64 c = load_index(idx, idx64, t * kk + q);
            ok = ok && fix_index(c, dims.d[q], bad);
            src += c * strides.d[q];
        }
        out[i] = ok ? data[src + j] : T();
    }
}

// One thread per line along the axis of the indices (shape idims, `lines` of them, each
// `len` long): out[coords with the axis at idx] = red(out[..], upd[same position]),
// in order along the line.
template <typename T>
__device__ void scatter_elements(T* out, const void* idx, int idx64, const T* upd, i64 lines, int rank, Dims idims,
                                 Dims ostrides, int axis, i64 axis_dim, int red, u32* bad) {
    KILN_GRID_STRIDE(line, lines) {
        i64 rem = line, ibase = 0, obase = 0, istride = 1, istride_axis = 1;
        for (int k = rank - 1; k >= 0; --k) {
            if (k == axis) {
                istride_axis = istride;
            } else {
                const i64 c = rem % idims.d[k];
                rem /= idims.d[k];
                ibase += c * istride;
                obase += c * ostrides.d[k];
            }
            istride *= idims.d[k];
        }
        const i64 len = idims.d[axis];
        for (i64 m = 0; m < len; ++m) {
            const i64 ip = ibase + m * istride_axis;
            i64 c = load_index(idx, idx64, ip);
            if (!fix_index(c, axis_dim, bad)) continue;
            T* o = out + obase + c * ostrides.d[axis];
            *o = red_apply<T>(red, *o, upd[ip]);
        }
    }
}

// One thread per element j of the update block: for every tuple t in order,
// out[Σ_q idx[t, q] · strides[q] + j] = red(.., upd[t · inner + j]).
template <typename T>
__device__ void scatter_nd(T* out, const void* idx, int idx64, const T* upd, i64 n_tuples, int kk, Dims dims,
                           Dims strides, i64 inner, int red, u32* bad) {
    KILN_GRID_STRIDE(j, inner) {
        for (i64 t = 0; t < n_tuples; ++t) {
            i64 dst = 0;
            bool ok = true;
            for (int q = 0; q < kk; ++q) {
                i64 c = load_index(idx, idx64, t * kk + q);
                ok = ok && fix_index(c, dims.d[q], bad);
                dst += c * strides.d[q];
            }
            if (!ok) continue;
            T* o = out + dst + j;
            *o = red_apply<T>(red, *o, upd[t * inner + j]);
        }
    }
}

// TensorScatter: the update [.., seq, inner] (outer = batch · per_batch rows of seq)
// written at rows write_index[batch] + s of the cache [.., max_len, inner] (modulo
// max_len when circular). No write indices: 0.
template <typename T>
__device__ void tensor_scatter(T* out, const T* upd, const void* widx, int idx64, i64 outer, i64 per_batch, i64 seq,
                               i64 max_len, i64 inner, int circular, u32* bad) {
    const i64 n = outer * seq * inner;
    KILN_GRID_STRIDE(i, n) {
        const i64 r = i % inner, s = (i / inner) % seq, p = i / (inner * seq);
        const i64 w = widx ? load_index(widx, idx64, p / per_batch) : 0;
        i64 row = w + s;
        if (circular) {
            row %= max_len;
            if (row < 0) row += max_len;
        }
        if (row < 0 || row >= max_len) {
            if (bad) *bad = 1;
            continue;
        }
        out[(p * max_len + row) * inner + r] = upd[i];
    }
}

// OneHot: out [outer, depth, inner] = on where idx[outer, inner] (negative: + depth)
// equals the depth coordinate, else off (values: [off, on]).
template <typename T>
__device__ void one_hot(const void* idx, int idx_code, const T* values, T* out, i64 outer, i64 depth, i64 inner) {
    const i64 n = outer * depth * inner;
    KILN_GRID_STRIDE(i, n) {
        const i64 r = i % inner, d = (i / inner) % depth, o = i / (inner * depth);
        const i64 at = o * inner + r;
        i64 k;
        switch (idx_code) {
            case 0: k = (i64)((const float*)idx)[at]; break;
            case 1: k = ((const i32*)idx)[at]; break;
            default: k = ((const i64*)idx)[at]; break;
        }
        if (k < 0) k += depth;
        out[i] = values[k == d ? 1 : 0];
    }
}

#define KILN_INDEX(T, N)                                                                                         \
    extern "C" __global__ void kiln_gather_elements_##N(const T* data, const void* idx, int idx64, T* out, i64 n, \
                                                        int rank, Dims idims, Dims dstrides, int axis,            \
                                                        i64 axis_dim, u32* bad) {                                 \
        gather_elements<T>(data, idx, idx64, out, n, rank, idims, dstrides, axis, axis_dim, bad);                \
    }                                                                                                            \
    extern "C" __global__ void kiln_gather_nd_##N(const T* data, const void* idx, int idx64, T* out, i64 n_tuples, \
                                                  int kk, Dims dims, Dims strides, i64 per_batch,                 \
                                                  i64 batch_stride, i64 inner, u32* bad) {                        \
        gather_nd<T>(data, idx, idx64, out, n_tuples, kk, dims, strides, per_batch, batch_stride, inner, bad);   \
    }                                                                                                            \
    extern "C" __global__ void kiln_scatter_elements_##N(T* out, const void* idx, int idx64, const T* upd,        \
                                                         i64 lines, int rank, Dims idims, Dims ostrides,          \
                                                         int axis, i64 axis_dim, int red, u32* bad) {             \
        scatter_elements<T>(out, idx, idx64, upd, lines, rank, idims, ostrides, axis, axis_dim, red, bad);       \
    }                                                                                                            \
    extern "C" __global__ void kiln_scatter_nd_##N(T* out, const void* idx, int idx64, const T* upd,              \
                                                   i64 n_tuples, int kk, Dims dims, Dims strides, i64 inner,      \
                                                   int red, u32* bad) {                                           \
        scatter_nd<T>(out, idx, idx64, upd, n_tuples, kk, dims, strides, inner, red, bad);                       \
    }                                                                                                            \
    extern "C" __global__ void kiln_tensor_scatter_##N(T* out, const T* upd, const void* widx, int idx64,         \
                                                       i64 outer, i64 per_batch, i64 seq, i64 max_len, i64 inner, \
                                                       int circular, u32* bad) {                                  \
        tensor_scatter<T>(out, upd, widx, idx64, outer, per_batch, seq, max_len, inner, circular, bad);          \
    }                                                                                                            \
    extern "C" __global__ void kiln_one_hot_##N(const void* idx, int idx_code, const T* values, T* out,          \
                                                i64 outer, i64 depth, i64 inner) {                                \
        one_hot<T>(idx, idx_code, values, out, outer, depth, inner);                                             \
    }
// Storage types (any dtype of that size, reduction none) and the numeric types the
// reductions combine in.
KILN_INDEX(u8, b1)
KILN_INDEX(u16, b2)
KILN_INDEX(u32, b4)
KILN_INDEX(u64, b8)
KILN_INDEX(float, f32)
KILN_INDEX(f16, f16)
KILN_INDEX(bf16, bf16)
KILN_INDEX(i32, i32)
KILN_INDEX(i64, i64)
