"""Compiled conv2d kernels: im2col on tiles of output rows + BLAS GEMM, OpenMP over the batch."""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

from ._cy_numeric cimport _gemm, _sum, _valid_range, floating

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
    /* dst[i] = src[2 i], in a form gcc vectorizes: restrict spares the runtime overlap
       check, and a size_t index the -fwrapv that Python builds with (an int index 2 i
       may wrap there, which stops the vectorizer). */
    #define FASTCONV_GATHER2(name, real)                                                 \
        static inline void name(real* restrict dst, const real* restrict src, int n) {   \
            for (size_t i = 0; i < (size_t) n; i++) dst[i] = src[2 * i];                 \
        }
    FASTCONV_GATHER2(fastconv_gather2_float, float)
    FASTCONV_GATHER2(fastconv_gather2_double, double)
    """
    const int FASTCONV_HAVE_OPENMP
    const int FASTCONV_IS_NATIVE
    const int FASTCONV_DEBUG_BUILD
    void fastconv_gather2_float(float* dst, const float* src, int n) nogil
    void fastconv_gather2_double(double* dst, const double* src, int n) nogil


ctypedef struct Geometry:
    int C, H, W, F, Cg, Fg, KH, KW, OH, OW
    int sh, sw, ph, pw, dh, dw
    int groups, tile_rows, n_tiles
    int samples  # > 1: a work item is that many whole images side by side (tile_rows = OH)
    bint identity  # 1x1 kernel, stride 1, no padding: the image already is its im2col matrix
    bint relu  # forward: ReLU on the output as it is written


def compiled_with():
    """Build-time facts about this extension."""
    return {"openmp": bool(FASTCONV_HAVE_OPENMP), "native": bool(FASTCONV_IS_NATIVE),
            "boundscheck": bool(FASTCONV_DEBUG_BUILD)}


cdef Geometry _geometry(Py_ssize_t* x_shape, Py_ssize_t* w_shape, Py_ssize_t* out_shape,
                        tuple params, bint pointwise, int tile_rows, int samples):
    cdef Geometry g
    g.relu = False
    g.C, g.H, g.W = x_shape[1], x_shape[2], x_shape[3]
    g.F, g.Cg, g.KH, g.KW = w_shape[0], w_shape[1], w_shape[2], w_shape[3]
    g.OH, g.OW = out_shape[2], out_shape[3]
    g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups = params
    g.Fg = g.F // g.groups
    g.samples = samples
    g.tile_rows = g.OH if samples > 1 else tile_rows
    g.n_tiles = (g.OH + g.tile_rows - 1) // g.tile_rows
    g.identity = pointwise
    return g


cdef inline void _valid_columns(const Geometry* g, int kw, int* off, int* lo, int* hi) noexcept nogil:
    # Output columns ow whose input column ow*sw + off lies inside [0, W): the range [lo, hi).
    off[0] = kw * g.dw - g.pw
    _valid_range(off[0], g.W, g.OW, g.sw, lo, hi)


ctypedef struct Run:
    # One kernel offset's cells in the "runs" layout (unit strides, output rows as wide as
    # input rows): column cells [first, stop) of a tile map to plane cells shifted by `shift`;
    # rows [r_lo, r_hi) are inside the image, columns [lo, hi) of each such row too.
    int r_lo, r_hi, lo, hi
    Py_ssize_t first, stop, shift


cdef inline bint _run(const Geometry* g, int kh, int kw, int oh0, int oh1, Run* run) noexcept nogil:
    """Fill ``run`` for kernel offset (kh, kw) on output rows [oh0, oh1); false if it is empty."""
    cdef int off, shift_h = kh * g.dh - g.ph
    run.r_lo = max(oh0, -shift_h)
    run.r_hi = min(oh1, g.H - shift_h)
    _valid_columns(g, kw, &off, &run.lo, &run.hi)
    if run.r_hi <= run.r_lo or run.hi <= run.lo:
        return False
    run.first = (run.r_lo - oh0) * g.OW + run.lo
    run.stop = (run.r_hi - 1 - oh0) * g.OW + run.hi
    run.shift = (run.r_lo + shift_h) * g.W + run.lo + off - run.first
    return True


cdef inline void _zero_row_edges(const Geometry* g, const Run* run, int oh0, floating* cells) noexcept nogil:
    # The cells of the in-image rows that fall into the side padding (they wrapped around).
    # A few cells per row: plain stores, not a memset call each (measured: the calls took a
    # third of a 7x7 conv's forward).
    cdef int oh, j
    cdef floating* row
    if run.lo > 0 or run.hi < g.OW:
        for oh in range(run.r_lo, run.r_hi):
            row = cells + (oh - oh0) * g.OW
            for j in range(run.lo):
                row[j] = 0
            for j in range(run.hi, g.OW):
                row[j] = 0


cdef void _im2col_channel_runs(const Geometry* g, const floating* plane, int oh0, int oh1,
                               floating* col, Py_ssize_t row_stride) noexcept nogil:
    # _im2col_channel in the runs layout: each kernel offset's cells are copied as one shifted
    # run of the flat plane (far faster than a copy per row of a small image), then the cells
    # that wrapped around a row edge (padding) are zeroed.
    cdef int kh, kw
    cdef Run run
    cdef floating* dst
    for kh in range(g.KH):
        for kw in range(g.KW):
            dst = col + (kh * g.KW + kw) * row_stride
            if not _run(g, kh, kw, oh0, oh1, &run):
                memset(dst, 0, (oh1 - oh0) * g.OW * sizeof(floating))
                continue
            memset(dst, 0, (run.r_lo - oh0) * g.OW * sizeof(floating))
            memset(dst + (run.r_hi - oh0) * g.OW, 0, (oh1 - run.r_hi) * g.OW * sizeof(floating))
            memcpy(dst + run.first, plane + run.first + run.shift, (run.stop - run.first) * sizeof(floating))
            _zero_row_edges(g, &run, oh0, dst)


cdef inline void _gather2(floating* dst, const floating* src, int n) noexcept nogil:
    if floating is float:
        fastconv_gather2_float(dst, src, n)
    else:
        fastconv_gather2_double(dst, src, n)


cdef void _im2col_channel(const Geometry* g, const floating* plane, int oh0, int oh1,
                          floating* col, Py_ssize_t row_stride) noexcept nogil:
    # col[(kh, kw) * row_stride + (oh - oh0) * OW + ow]
    #     = padded plane[oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
    cdef int kh, kw, oh, ow, ih, off, lo, hi
    cdef const floating* src
    cdef floating* dst
    if g.sh == 1 and g.sw == 1 and g.OW == g.W:
        _im2col_channel_runs(g, plane, oh0, oh1, col, row_stride)
        return
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
                    elif g.sw == 2:
                        _gather2(dst + lo, src + 2 * lo, hi - lo)
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


cdef void _col2im_channel_runs(const Geometry* g, floating* col, int oh0, int oh1,
                               floating* plane, Py_ssize_t row_stride) noexcept nogil:
    # _col2im_channel in the runs layout: the cells that stand for padding are zeroed in col
    # (scratch, dead after this), then each kernel offset is added as one shifted run; the
    # zeroed cells land on wrapped-around cells and add nothing.
    cdef int kh, kw
    cdef Py_ssize_t i
    cdef Run run
    cdef floating* src
    cdef floating* dst
    for kh in range(g.KH):
        for kw in range(g.KW):
            if not _run(g, kh, kw, oh0, oh1, &run):
                continue
            src = col + (kh * g.KW + kw) * row_stride
            _zero_row_edges(g, &run, oh0, src)
            dst = plane + run.shift
            for i in range(run.first, run.stop):
                dst[i] += src[i]


cdef void _col2im_channel(const Geometry* g, floating* col, int oh0, int oh1,
                          floating* plane, Py_ssize_t row_stride) noexcept nogil:
    # The adjoint of _im2col_channel: scatter-add col back into plane (padding cells dropped).
    # col is scratch: the unit-stride path may zero its padding cells.
    cdef int kh, kw, oh, ow, ih, off, lo, hi
    cdef const floating* src
    cdef floating* dst
    if g.sh == 1 and g.sw == 1 and g.OW == g.W:
        _col2im_channel_runs(g, col, oh0, oh1, plane, row_stride)
        return
    for kh in range(g.KH):
        for kw in range(g.KW):
            _valid_columns(g, kw, &off, &lo, &hi)
            src = col + (kh * g.KW + kw) * row_stride
            for oh in range(oh0, oh1):
                ih = oh * g.sh - g.ph + kh * g.dh
                if ih >= 0 and ih < g.H:
                    dst = plane + ih * g.W + off
                    if g.sw == 1:  # constant strides the compiler can vectorize
                        for ow in range(lo, hi):
                            dst[ow] += src[ow]
                    elif g.sw == 2:
                        for ow in range(lo, hi):
                            dst[2 * ow] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * g.sw] += src[ow]
                src += g.OW


cdef void _col2im(const Geometry* g, floating* col, int oh0, int oh1,
                  floating* image) noexcept nogil:
    cdef int c, rows = g.KH * g.KW * (oh1 - oh0) * g.OW
    for c in range(g.Cg):
        _col2im_channel(g, col + c * rows, oh0, oh1, image + c * g.H * g.W, (oh1 - oh0) * g.OW)


cdef void _im2col_samples(const Geometry* g, const floating* x, Py_ssize_t n0, int m, int grp,
                          floating* col) noexcept nogil:
    # Group grp's columns of images n0 .. n0+m-1 side by side: col[(c, kh, kw), i*P + position]
    cdef int i, c, positions = g.OH * g.OW, cols = m * positions
    for i in range(m):
        for c in range(g.Cg):
            _im2col_channel(g, x + ((n0 + i) * g.C + grp * g.Cg + c) * g.H * g.W, 0, g.OH,
                            col + c * g.KH * g.KW * cols + i * positions, cols)


cdef inline void _add_relu(floating* dst, const floating* src, floating shift, Py_ssize_t count) noexcept nogil:
    # dst = relu(src + shift); `<= 0 -> 0` keeps NaN and makes -0.0 0, as PyTorch's ReLU.
    cdef Py_ssize_t j
    cdef floating v
    for j in range(count):
        v = src[j] + shift
        dst[j] = 0 if v <= 0 else v


cdef void _forward_samples(const Geometry* g, const floating* x, const floating* w, const floating* bias,
                           bint has_bias, floating* out, Py_ssize_t n0, int m, floating* col,
                           floating* product) noexcept nogil:
    # One GEMM over m whole images per group (small images: one image alone is too short a GEMM).
    cdef int positions = g.OH * g.OW, cols = m * positions, k = g.Cg * g.KH * g.KW
    cdef int grp, i, f, j
    cdef floating shift
    cdef floating* dst
    cdef const floating* src
    for grp in range(g.groups):
        _im2col_samples(g, x, n0, m, grp, col)
        _gemm(False, False, g.Fg, cols, k, 1, w + grp * g.Fg * k, k, col, cols, 0, product, cols)
        for i in range(m):
            for f in range(g.Fg):
                dst = out + ((n0 + i) * g.F + grp * g.Fg + f) * positions
                src = product + f * cols + i * positions
                shift = bias[grp * g.Fg + f] if has_bias else 0
                if g.relu:
                    _add_relu(dst, src, shift, positions)
                elif has_bias:
                    for j in range(positions):
                        dst[j] = src[j] + shift
                else:
                    memcpy(dst, src, positions * sizeof(floating))


cdef void _forward_item(const Geometry* g, const floating* x, const floating* w, const floating* bias,
                        bint has_bias, floating* out, Py_ssize_t item, Py_ssize_t n_batch,
                        floating* col, floating* product) noexcept nogil:
    if g.samples > 1:
        _forward_samples(g, x, w, bias, has_bias, out, item * g.samples,
                         <int> min(g.samples, n_batch - item * g.samples), col, product)
        return
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
        if g.relu:  # while the tile is still in cache
            for f in range(g.Fg):
                _add_relu(dst + f * out_plane, dst + f * out_plane, 0, cols)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] bias, floating[:, :, :, ::1] out, floating[:, ::1] col,
                   floating[:, ::1] product, tuple params, bint pointwise, int tile_rows, int samples, bint relu,
                   int num_threads):
    """out <- conv(x, w) + bias (bias empty = none), then ReLU if asked; col, product: (threads, tile) scratch;
    params: ConvParams.geometry, pointwise: ConvParams.is_pointwise. Work items are (sample, tile
    of output rows), or with samples > 1 groups of that many whole images (product then holds
    their GEMM result)."""
    cdef Geometry g = _geometry(x.shape, w.shape, out.shape, params, pointwise, tile_rows, samples)
    g.relu = relu
    cdef Py_ssize_t n_batch = x.shape[0], item, col_stride = col.shape[1], product_stride = product.shape[1]
    cdef Py_ssize_t n_items = (n_batch + samples - 1) // samples if samples > 1 else n_batch * g.n_tiles
    cdef bint has_bias = bias.shape[0] > 0
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for item in prange(n_items, schedule="dynamic"):
            _forward_item(&g, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias_ptr, has_bias, &out[0, 0, 0, 0],
                          item, n_batch, &col[0, 0] + tid * col_stride,
                          &product[0, 0] + tid * product_stride)


cdef void _backward_sample(const Geometry* g, const floating* dout, const floating* x,
                           const floating* w, floating* dx, Py_ssize_t n, floating* dw_part,
                           floating* db_part, floating* col, floating* dcol) noexcept nogil:
    cdef int out_plane = g.OH * g.OW, in_plane = g.H * g.W, k = g.Cg * g.KH * g.KW
    cdef int t, grp, oh0, oh1, cols, f
    cdef const floating* image
    cdef const floating* grad
    cdef const floating* patches
    cdef floating* dimage
    if dx != NULL and not g.identity:  # the identity path overwrites every cell of dx[n] with beta = 0
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
            if dx == NULL:
                continue
            if g.identity:
                _gemm(True, False, k, cols, g.Fg, 1, w + grp * g.Fg * k, k, grad, out_plane,
                      0, dimage + oh0 * g.W, in_plane)
            else:
                _gemm(True, False, k, cols, g.Fg, 1, w + grp * g.Fg * k, k, grad, out_plane,
                      0, dcol, cols)
                _col2im(g, dcol, oh0, oh1, dimage)
    if db_part != NULL:
        for f in range(g.F):
            db_part[f] += _sum(dout + (n * g.F + f) * out_plane, out_plane)


cdef void _backward_samples(const Geometry* g, const floating* dout, const floating* x,
                            const floating* w, floating* dx, Py_ssize_t n0, int m, floating* dw_part,
                            floating* db_part, floating* col, floating* dcol, floating* grads) noexcept nogil:
    # _backward_sample over m whole images at once: their columns and output gradients side
    # by side, so each GEMM sums over (or spans) m images' positions.
    cdef int positions = g.OH * g.OW, in_plane = g.H * g.W, cols = m * positions
    cdef int k = g.Cg * g.KH * g.KW
    cdef int grp, i, c, f
    if dx != NULL:
        memset(dx + n0 * g.C * in_plane, 0, m * g.C * in_plane * sizeof(floating))
    for grp in range(g.groups):
        _im2col_samples(g, x, n0, m, grp, col)
        for i in range(m):
            for f in range(g.Fg):
                memcpy(grads + f * cols + i * positions,
                       dout + ((n0 + i) * g.F + grp * g.Fg + f) * positions, positions * sizeof(floating))
        _gemm(False, True, g.Fg, k, cols, 1, grads, cols, col, cols, 1, dw_part + grp * g.Fg * k, k)
        if dx == NULL:
            continue
        _gemm(True, False, k, cols, g.Fg, 1, w + grp * g.Fg * k, k, grads, cols, 0, dcol, cols)
        for i in range(m):
            for c in range(g.Cg):
                _col2im_channel(g, dcol + c * g.KH * g.KW * cols + i * positions, 0, g.OH,
                                dx + ((n0 + i) * g.C + grp * g.Cg + c) * in_plane, cols)
    if db_part != NULL:
        for i in range(m):
            for f in range(g.F):
                db_part[f] += _sum(dout + ((n0 + i) * g.F + f) * positions, positions)


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, floating[:, :, :, ::1] dx,
                    floating[:, ::1] dw_parts, floating[:, ::1] db_parts,
                    floating[:, ::1] col, floating[:, ::1] dcol, floating[:, ::1] grads,
                    tuple params, bint pointwise, int tile_rows, int samples, int num_threads):
    """dx <- full gradient (none when dx has no images); the batch is cut into len(dw_parts) fixed
    chunks of consecutive samples and dw_parts[c] += chunk c's share of dw (likewise db_parts, which may have zero
    columns = no bias). One thread runs a whole chunk in sample order, so each part is the same
    whichever thread ran it; the caller sums the parts in chunk order. With samples > 1 a chunk
    goes that many whole images at a time (grads then holds their output gradients)."""
    cdef Geometry g = _geometry(x.shape, w.shape, dout.shape, params, pointwise, tile_rows, samples)
    cdef Py_ssize_t chunk, n, first, last, n_batch = x.shape[0], n_chunks = dw_parts.shape[0]
    cdef Py_ssize_t grads_stride = grads.shape[1]
    cdef Py_ssize_t col_stride = col.shape[1], dw_stride = dw_parts.shape[1], db_stride = db_parts.shape[1]
    cdef bint has_bias = db_parts.shape[1] > 0
    cdef floating* db_base = &db_parts[0, 0] if has_bias else NULL
    cdef floating* dx_base = &dx[0, 0, 0, 0] if dx.shape[0] > 0 else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for chunk in prange(n_chunks, schedule="dynamic"):
            first = chunk * n_batch // n_chunks
            last = (chunk + 1) * n_batch // n_chunks
            if samples > 1:
                n = first
                while n < last:
                    _backward_samples(&g, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], dx_base,
                                      n, <int> min(samples, last - n), &dw_parts[0, 0] + chunk * dw_stride,
                                      db_base + chunk * db_stride if has_bias else NULL,
                                      &col[0, 0] + tid * col_stride, &dcol[0, 0] + tid * col_stride,
                                      &grads[0, 0] + tid * grads_stride)
                    n = n + samples
            else:
                for n in range(first, last):
                    _backward_sample(&g, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], dx_base,
                                     n, &dw_parts[0, 0] + chunk * dw_stride,
                                     db_base + chunk * db_stride if has_bias else NULL,
                                     &col[0, 0] + tid * col_stride, &dcol[0, 0] + tid * col_stride)
