// Data movement kernels. They move elements by storage (T is the unsigned integer of the
// element's size: b1, b2, b4, b8), so one kernel serves every dtype of that size.
//
// - copy: the generic strided copy. It walks the row-major positions of `dims` and
//   copies src[src_off + Σ k_d * src[d]] to dst[dst_off + Σ k_d * dst[d]]. Transpose
//   (permuted source strides), Slice with steps (source offset and strides times steps,
//   negative too), Expand (stride 0), Concat and Split (a part at an offset of the
//   whole) are all this one kernel.
// - gather: Gather along an axis, data seen as [outer, axis_dim, inner].
// - pad: constant, reflect, edge and wrap padding (negative pads crop).

struct CopyDesc {
    i64 dims[KILN_MAX_RANK];
    i64 src[KILN_MAX_RANK];
    i64 dst[KILN_MAX_RANK];
};

struct PadDesc {
    i64 out_dims[KILN_MAX_RANK];
    i64 in_dims[KILN_MAX_RANK];
    // Padding before each axis (negative: cropped).
    i64 begin[KILN_MAX_RANK];
};

// Keep in step with `PadCode` in kernels/mod.rs.
enum PadCode { P_CONSTANT = 0, P_REFLECT, P_EDGE, P_WRAP };

template <typename T>
__device__ void copy_kernel(const T* src, T* dst, i64 n, int rank, CopyDesc d, i64 src_off, i64 dst_off) {
    KILN_GRID_STRIDE(i, n) {
        i64 rem = i, is = src_off, id = dst_off;
        for (int k = rank - 1; k >= 0; --k) {
            i64 c = rem % d.dims[k];
            rem /= d.dims[k];
            is += c * d.src[k];
            id += c * d.dst[k];
        }
        dst[id] = src[is];
    }
}

// out[o, m, i] = data[o, idx[m] (negative: from the end), i]. An index out of range
// writes zeros and sets *bad (when given) to 1.
template <typename T, typename I>
__device__ void gather_kernel(const T* data, const I* idx, T* out, i64 outer, i64 axis_dim, i64 n_idx, i64 inner,
                              u32* bad) {
    const i64 n = outer * n_idx * inner;
    KILN_GRID_STRIDE(i, n) {
        const i64 in = i % inner;
        const i64 m = (i / inner) % n_idx;
        const i64 o = i / (inner * n_idx);
        i64 k = (i64)idx[m];
        if (k < 0) k += axis_dim;
        if (k < 0 || k >= axis_dim) {
            out[i] = 0;
            if (bad) *bad = 1;
        } else {
            out[i] = data[(o * axis_dim + k) * inner + in];
        }
    }
}

// The input coordinate that output coordinate `p` (already shifted by the padding)
// reads along an axis of `d` elements, or -1 for the constant.
__device__ __forceinline__ i64 pad_source(int mode, i64 p, i64 d) {
    if (p >= 0 && p < d) return p;
    switch (mode) {
        case P_EDGE: return p < 0 ? 0 : d - 1;
        case P_WRAP: {
            i64 m = p % d;
            return m < 0 ? m + d : m;
        }
        case P_REFLECT: {
            if (d == 1) return 0;
            const i64 period = 2 * (d - 1);
            i64 m = p % period;
            if (m < 0) m += period;
            return m < d ? m : period - m;
        }
    }
    return -1;
}

template <typename T>
__device__ void pad_kernel(int mode, const T* x, T* y, i64 n, int rank, PadDesc d, u64 value_bits) {
    const T value = (T)value_bits;
    KILN_GRID_STRIDE(i, n) {
        i64 rem = i, src = 0, stride = 1;
        bool constant = false;
        for (int k = rank - 1; k >= 0; --k) {
            const i64 c = rem % d.out_dims[k];
            rem /= d.out_dims[k];
            const i64 p = pad_source(mode, c - d.begin[k], d.in_dims[k]);
            if (p < 0) constant = true;
            src += p * stride;
            stride *= d.in_dims[k];
        }
        y[i] = constant ? value : x[src];
    }
}

#define KILN_MOVEMENT(T, N)                                                                                  \
    extern "C" __global__ void kiln_copy_##N(const T* src, T* dst, i64 n, int rank, CopyDesc d, i64 src_off, \
                                             i64 dst_off) {                                                  \
        copy_kernel<T>(src, dst, n, rank, d, src_off, dst_off);                                              \
    }                                                                                                        \
    extern "C" __global__ void kiln_gather_##N##_i32(const T* data, const i32* idx, T* out, i64 outer,       \
                                                     i64 axis_dim, i64 n_idx, i64 inner, u32* bad) {         \
        gather_kernel<T, i32>(data, idx, out, outer, axis_dim, n_idx, inner, bad);                           \
    }                                                                                                        \
    extern "C" __global__ void kiln_gather_##N##_i64(const T* data, const i64* idx, T* out, i64 outer,       \
                                                     i64 axis_dim, i64 n_idx, i64 inner, u32* bad) {         \
        gather_kernel<T, i64>(data, idx, out, outer, axis_dim, n_idx, inner, bad);                           \
    }                                                                                                        \
    extern "C" __global__ void kiln_pad_##N(int mode, const T* x, T* y, i64 n, int rank, PadDesc d, u64 value) { \
        pad_kernel<T>(mode, x, y, n, rank, d, value);                                                        \
    }
KILN_MOVEMENT(u8, b1)
KILN_MOVEMENT(u16, b2)
KILN_MOVEMENT(u32, b4)
KILN_MOVEMENT(u64, b8)
