"""Compiled conv2d kernels: im2col on tiles of output rows + BLAS GEMM, OpenMP over the batch."""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

from ._cy_blas cimport _gemm, floating

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FASTCONV_HAVE_OPENMP 1
    #else
    #define FASTCONV_HAVE_OPENMP 0
    #endif
    #ifdef FASTCONV_NATIVE
    #define FASTCONV_IS_NATIVE 1
    #else
    #define FASTCONV_IS_NATIVE 0
    #endif
    #ifndef FASTCONV_DEBUG_BUILD
    #define FASTCONV_DEBUG_BUILD 0
    #endif
    """
    const int FASTCONV_HAVE_OPENMP
    const int FASTCONV_IS_NATIVE
    const int FASTCONV_DEBUG_BUILD


ctypedef struct Geometry:
    int C, H, W, F, Cg, Fg, KH, KW, OH, OW
    int sh, sw, ph, pw, dh, dw
    int groups, tile_rows, n_tiles
    bint identity  # 1x1 kernel, stride 1, no padding: the image already is its im2col matrix


def compiled_with():
    """Build-time facts about this extension."""
    return {"openmp": bool(FASTCONV_HAVE_OPENMP), "native": bool(FASTCONV_IS_NATIVE),
            "boundscheck": bool(FASTCONV_DEBUG_BUILD)}


cdef Geometry _geometry(Py_ssize_t* x_shape, Py_ssize_t* w_shape, Py_ssize_t* out_shape,
                        tuple params, int tile_rows):
    cdef Geometry g
    g.C, g.H, g.W = x_shape[1], x_shape[2], x_shape[3]
    g.F, g.Cg, g.KH, g.KW = w_shape[0], w_shape[1], w_shape[2], w_shape[3]
    g.OH, g.OW = out_shape[2], out_shape[3]
    g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups = params
    g.Fg = g.F // g.groups
    g.tile_rows = tile_rows
    g.n_tiles = (g.OH + tile_rows - 1) // tile_rows
    g.identity = (g.KH == 1 and g.KW == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0)
    return g


cdef inline void _valid_columns(const Geometry* g, int kw, int* off, int* lo, int* hi) noexcept nogil:
    # Output columns ow whose input column ow*sw + off lies inside [0, W): the range [lo, hi).
    off[0] = kw * g.dw - g.pw
    lo[0] = 0 if off[0] >= 0 else min(g.OW, (-off[0] + g.sw - 1) // g.sw)
    hi[0] = 0 if g.W - 1 - off[0] < 0 else min(g.OW, (g.W - 1 - off[0]) // g.sw + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void _im2col_channel(const Geometry* g, const floating* plane, int oh0, int oh1,
                          floating* col, Py_ssize_t row_stride) noexcept nogil:
    # col[(kh, kw) * row_stride + (oh - oh0) * OW + ow]
    #     = padded plane[oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
    cdef int kh, kw, oh, ow, ih, off, lo, hi
    cdef const floating* src
    cdef floating* dst
    for kh in range(g.KH):
        for kw in range(g.KW):
            _valid_columns(g, kw, &off, &lo, &hi)
            dst = col + (kh * g.KW + kw) * row_stride
            for oh in range(oh0, oh1):
                ih = oh * g.sh - g.ph + kh * g.dh
                if ih < 0 or ih >= g.H:
                    memset(dst, 0, g.OW * sizeof(floating))
                else:
                    src = plane + ih * g.W + off
                    memset(dst, 0, lo * sizeof(floating))
                    if g.sw == 1:
                        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
                    else:
                        for ow in range(lo, hi):
                            dst[ow] = src[ow * g.sw]
                    memset(dst + hi, 0, (g.OW - hi) * sizeof(floating))
                dst += g.OW


cdef void _im2col(const Geometry* g, const floating* image, int oh0, int oh1,
                  floating* col) noexcept nogil:
    # The columns of a group's Cg channels, one channel's KH*KW rows after another.
    cdef int c, rows = g.KH * g.KW * (oh1 - oh0) * g.OW
    for c in range(g.Cg):
        _im2col_channel(g, image + c * g.H * g.W, oh0, oh1, col + c * rows, (oh1 - oh0) * g.OW)


cdef void _col2im_channel(const Geometry* g, const floating* col, int oh0, int oh1,
                          floating* plane, Py_ssize_t row_stride) noexcept nogil:
    # The adjoint of _im2col_channel: scatter-add col back into plane (padding cells dropped).
    cdef int kh, kw, oh, ow, ih, off, lo, hi
    cdef const floating* src
    cdef floating* dst
    for kh in range(g.KH):
        for kw in range(g.KW):
            _valid_columns(g, kw, &off, &lo, &hi)
            src = col + (kh * g.KW + kw) * row_stride
            for oh in range(oh0, oh1):
                ih = oh * g.sh - g.ph + kh * g.dh
                if ih >= 0 and ih < g.H:
                    dst = plane + ih * g.W + off
                    if g.sw == 1:  # a unit stride the compiler can vectorize
                        for ow in range(lo, hi):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * g.sw] += src[ow]
                src += g.OW


cdef void _col2im(const Geometry* g, const floating* col, int oh0, int oh1,
                  floating* image) noexcept nogil:
    cdef int c, rows = g.KH * g.KW * (oh1 - oh0) * g.OW
    for c in range(g.Cg):
        _col2im_channel(g, col + c * rows, oh0, oh1, image + c * g.H * g.W, (oh1 - oh0) * g.OW)


cdef void _forward_item(const Geometry* g, const floating* x, const floating* w, const floating* bias,
                        bint has_bias, floating* out, Py_ssize_t item, floating* col) noexcept nogil:
    cdef Py_ssize_t n = item // g.n_tiles
    cdef int oh0 = <int> (item % g.n_tiles) * g.tile_rows
    cdef int oh1 = min(oh0 + g.tile_rows, g.OH)
    cdef int cols = (oh1 - oh0) * g.OW, out_plane = g.OH * g.OW, k = g.Cg * g.KH * g.KW
    cdef int grp, f, j
    cdef const floating* image
    cdef const floating* patches
    cdef floating* dst
    cdef floating beta = 1 if has_bias else 0
    for grp in range(g.groups):
        image = x + (n * g.C + grp * g.Cg) * g.H * g.W
        dst = out + (n * g.F + grp * g.Fg) * out_plane + oh0 * g.OW
        if g.identity:
            patches = image + oh0 * g.W
        else:
            _im2col(g, image, oh0, oh1, col)
            patches = col
        if has_bias:
            for f in range(g.Fg):
                for j in range(cols):
                    dst[f * out_plane + j] = bias[grp * g.Fg + f]
        _gemm(False, False, g.Fg, cols, k, 1, w + grp * g.Fg * k, k,
              patches, g.H * g.W if g.identity else cols, beta, dst, out_plane)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] bias, floating[:, :, :, ::1] out, floating[:, ::1] col,
                   tuple params, int tile_rows, int num_threads):
    """out <- conv(x, w) + bias (bias empty = none); col: (threads, tile) scratch, params:
    (sh, sw, ph, pw, dh, dw, groups). Work items are (sample, tile of output rows)."""
    cdef Geometry g = _geometry(x.shape, w.shape, out.shape,
                                params, tile_rows)
    cdef Py_ssize_t item, n_items = x.shape[0] * g.n_tiles, col_stride = col.shape[1]
    cdef bint has_bias = bias.shape[0] > 0
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for item in prange(n_items, schedule="dynamic"):
            _forward_item(&g, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias_ptr, has_bias,
                          &out[0, 0, 0, 0], item, &col[0, 0] + tid * col_stride)


cdef void _backward_sample(const Geometry* g, const floating* dout, const floating* x,
                           const floating* w, floating* dx, Py_ssize_t n, floating* dw_part,
                           floating* db_part, floating* col, floating* dcol) noexcept nogil:
    cdef int out_plane = g.OH * g.OW, in_plane = g.H * g.W, k = g.Cg * g.KH * g.KW
    cdef int t, grp, oh0, oh1, cols, f, j
    cdef const floating* image
    cdef const floating* grad
    cdef const floating* patches
    cdef floating* dimage
    cdef floating total
    if not g.identity:  # the identity path overwrites every cell of dx[n] with beta = 0
        memset(dx + n * g.C * in_plane, 0, g.C * in_plane * sizeof(floating))
    for t in range(g.n_tiles):
        oh0 = t * g.tile_rows
        oh1 = min(oh0 + g.tile_rows, g.OH)
        cols = (oh1 - oh0) * g.OW
        for grp in range(g.groups):
            image = x + (n * g.C + grp * g.Cg) * in_plane
            dimage = dx + (n * g.C + grp * g.Cg) * in_plane
            grad = dout + (n * g.F + grp * g.Fg) * out_plane + oh0 * g.OW
            if g.identity:
                patches = image + oh0 * g.W
            else:
                _im2col(g, image, oh0, oh1, col)
                patches = col
            # dw_g += dout_g @ patches^T
            _gemm(False, True, g.Fg, k, cols, 1, grad, out_plane,
                  patches, in_plane if g.identity else cols, 1, dw_part + grp * g.Fg * k, k)
            # dpatches = w_g^T @ dout_g, then back onto the image
            if g.identity:
                _gemm(True, False, k, cols, g.Fg, 1, w + grp * g.Fg * k, k, grad, out_plane,
                      0, dimage + oh0 * g.W, in_plane)
            else:
                _gemm(True, False, k, cols, g.Fg, 1, w + grp * g.Fg * k, k, grad, out_plane,
                      0, dcol, cols)
                _col2im(g, dcol, oh0, oh1, dimage)
    if db_part != NULL:
        for f in range(g.F):
            grad = dout + (n * g.F + f) * out_plane
            total = 0
            for j in range(out_plane):
                total = total + grad[j]
            db_part[f] += total


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, floating[:, :, :, ::1] dx,
                    floating[:, ::1] dw_parts, floating[:, ::1] db_parts,
                    floating[:, ::1] col, floating[:, ::1] dcol,
                    tuple params, int tile_rows, int num_threads):
    """dx <- full gradient; the batch is cut into len(dw_parts) fixed chunks of consecutive
    samples and dw_parts[c] += chunk c's share of dw (likewise db_parts, which may have zero
    columns = no bias). One thread runs a whole chunk in sample order, so each part is the same
    whichever thread ran it; the caller sums the parts in chunk order."""
    cdef Geometry g = _geometry(x.shape, w.shape, dout.shape, params, tile_rows)
    cdef Py_ssize_t chunk, n, n_batch = x.shape[0], n_chunks = dw_parts.shape[0]
    cdef Py_ssize_t col_stride = col.shape[1], dw_stride = dw_parts.shape[1], db_stride = db_parts.shape[1]
    cdef bint has_bias = db_parts.shape[1] > 0
    cdef floating* db_base = &db_parts[0, 0] if has_bias else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for chunk in prange(n_chunks, schedule="dynamic"):
            for n in range(chunk * n_batch // n_chunks, (chunk + 1) * n_batch // n_chunks):
                _backward_sample(&g, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0],
                                 n, &dw_parts[0, 0] + chunk * dw_stride,
                                 db_base + chunk * db_stride if has_bias else NULL,
                                 &col[0, 0] + tid * col_stride, &dcol[0, 0] + tid * col_stride)


def im2col_wide(const floating[:, :, :, ::1] x, floating[:, ::1] cols, tuple kernel_shape,
                tuple params, int num_threads):
    """cols[:, n*P:(n+1)*P] <- the im2col matrix of x[n] (cols: (C*KH*KW, N*P), P = OH*OW),
    in parallel over (sample, channel) planes. kernel_shape: (KH, KW, OH, OW)."""
    cdef Geometry g = _plane_geometry(x.shape, kernel_shape, params)
    cdef Py_ssize_t task, n_tasks = x.shape[0] * g.C, rows = g.KH * g.KW, positions = g.OH * g.OW
    cdef Py_ssize_t row_stride = cols.shape[1]
    for task in prange(n_tasks, nogil=True, schedule="guided", num_threads=num_threads):
        _im2col_channel(&g, &x[task // g.C, task % g.C, 0, 0], 0, g.OH,
                        &cols[(task % g.C) * rows, (task // g.C) * positions], row_stride)


def col2im_wide(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, tuple kernel_shape,
                tuple params, int num_threads):
    """dx[n] <- the col2im scatter-add of cols[:, n*P:(n+1)*P], in parallel over planes."""
    cdef Geometry g = _plane_geometry(dx.shape, kernel_shape, params)
    cdef Py_ssize_t task, n_tasks = dx.shape[0] * g.C, rows = g.KH * g.KW, positions = g.OH * g.OW
    cdef Py_ssize_t row_stride = cols.shape[1]
    for task in prange(n_tasks, nogil=True, schedule="guided", num_threads=num_threads):
        memset(&dx[task // g.C, task % g.C, 0, 0], 0, g.H * g.W * sizeof(floating))
        _col2im_channel(&g, &cols[(task % g.C) * rows, (task // g.C) * positions], 0, g.OH,
                        &dx[task // g.C, task % g.C, 0, 0], row_stride)


def swap_leading_axes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int num_threads):
    """dst[b, a, :] <- src[a, b, :] for (A, B, L) src and (B, A, L) dst, in parallel over rows."""
    cdef Py_ssize_t task, a, b, b_size = src.shape[1], length = src.shape[2]
    for task in prange(src.shape[0] * b_size, nogil=True, schedule="static", num_threads=num_threads):
        a = task // b_size
        b = task % b_size
        memcpy(&dst[b, a, 0], &src[a, b, 0], length * sizeof(floating))


cdef Geometry _plane_geometry(Py_ssize_t* x_shape, tuple kernel_shape, tuple params):
    # The geometry one channel plane needs (no filters, no groups: each plane stands alone).
    cdef Geometry g
    g.C, g.H, g.W = x_shape[1], x_shape[2], x_shape[3]
    g.KH, g.KW, g.OH, g.OW = kernel_shape
    g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups = params
    g.F = g.Cg = g.Fg = g.tile_rows = g.n_tiles = 0
    g.identity = False
    return g
