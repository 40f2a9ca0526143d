"""Compiled Winograd F(2x2, 3x3) conv2d kernels (3x3, stride 1): tile transforms + 16 BLAS GEMMs per block.

A 4x4 input tile d gives a 2x2 output tile y = A^T [(G g G^T) * (B^T d B)] A (elementwise *),
so one output tile costs 16 multiply-adds per channel pair instead of 36; summed over channels,
each of the 16 transformed positions xi is one GEMM: M[xi] (F x tiles) = U[xi] (F x C) V[xi]
(C x tiles). The backward passes are the adjoints of the same bilinear form:
dV[xi] = U[xi]^T P[xi] with P = A dY A^T, dd = B dV B^T overlap-added into dx, and
dU[xi] = sum over tiles of P[xi] V[xi]^T, dw = G^T dU G.
Tiles are numbered over the whole batch (image, tile row, tile column); a block is a run of
consecutive tiles whose transforms stay near the core's cache between the GEMMs.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset

from ._cy_numeric cimport _gemm, _sum, floating


ctypedef struct Tiling:
    Py_ssize_t C, H, W, F, OH, OW
    Py_ssize_t TW, per_image  # tiles per tile row, per image
    Py_ssize_t ph, pw
    Py_ssize_t block  # the leading dimension of every transformed block: tiles it can hold
    Py_ssize_t in_stride, out_stride  # from one position xi to the next in v / dv and in m / p


cdef Tiling _tiling(Py_ssize_t* x_shape, Py_ssize_t F, Py_ssize_t* out_shape,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t block):
    cdef Tiling t
    t.C, t.H, t.W = x_shape[1], x_shape[2], x_shape[3]
    t.F = F
    t.OH, t.OW = out_shape[2], out_shape[3]
    t.TW = (t.OW + 1) // 2
    t.per_image = (t.OH + 1) // 2 * t.TW
    t.ph, t.pw = ph, pw
    t.block = block
    t.in_stride = _position_stride(t.C, block)
    t.out_stride = _position_stride(F, block)
    return t


cdef inline Py_ssize_t _position_stride(Py_ssize_t rows, Py_ssize_t block) noexcept nogil:
    # The 16 positions of a block sit this far apart: a skew of 128 bytes past rows * block
    # keeps the transforms' 16 streams (each tile touches all of them) off a single cache set.
    return rows * block + 128 // sizeof(double)


def scratch_sizes(Py_ssize_t channels, Py_ssize_t filters, Py_ssize_t block):
    """Elements per thread of the transformed inputs (v, dv) and outputs (m, p) of a block."""
    return 16 * _position_stride(channels, block), 16 * _position_stride(filters, block)


cdef inline void _tile_origin(const Tiling* t, Py_ssize_t tile, Py_ssize_t* n, Py_ssize_t* oy,
                              Py_ssize_t* ox) noexcept nogil:
    # The image of a tile and its top-left output cell.
    cdef Py_ssize_t r = tile % t.per_image
    n[0] = tile // t.per_image
    oy[0] = 2 * (r // t.TW)
    ox[0] = 2 * (r % t.TW)


# ------------------------------------------------------------------------------ transforms
cdef void _weight_transform(const floating* g, Py_ssize_t fc, floating* dst) noexcept nogil:
    # dst[xi * fc] = (G g G^T)[xi] for one 3x3 filter g.
    cdef floating h[4][3]
    cdef int i
    for i in range(3):  # h = G g, column by column
        h[0][i] = g[i]
        h[1][i] = (g[i] + g[3 + i] + g[6 + i]) * 0.5
        h[2][i] = (g[i] - g[3 + i] + g[6 + i]) * 0.5
        h[3][i] = g[6 + i]
    for i in range(4):  # h G^T, row by row
        dst[(4 * i) * fc] = h[i][0]
        dst[(4 * i + 1) * fc] = (h[i][0] + h[i][1] + h[i][2]) * 0.5
        dst[(4 * i + 2) * fc] = (h[i][0] - h[i][1] + h[i][2]) * 0.5
        dst[(4 * i + 3) * fc] = h[i][2]


def transform_weights(const floating[:, :, :, ::1] w, floating[:, :, ::1] u, int num_threads):
    """u[xi, f, c] <- (G w[f, c] G^T)[xi] for the 16 positions xi of a 4x4 tile."""
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1], f, c
    with nogil:
        for f in prange(F, num_threads=num_threads, schedule="static"):
            for c in range(C):
                _weight_transform(&w[f, c, 0, 0], F * C, &u[0, f, c])


cdef void _weight_grad(const floating* du, Py_ssize_t fc, floating* dw) noexcept nogil:
    # dw[f, c] = G^T du[., f, c] G for every (f, c); du holds the 16 positions fc apart.
    cdef Py_ssize_t k, i
    cdef floating h[4][3]
    cdef const floating* m
    for k in range(fc):
        m = du + k
        for i in range(4):  # h = du G, row by row
            h[i][0] = m[(4 * i) * fc] + (m[(4 * i + 1) * fc] + m[(4 * i + 2) * fc]) * 0.5
            h[i][1] = (m[(4 * i + 1) * fc] - m[(4 * i + 2) * fc]) * 0.5
            h[i][2] = (m[(4 * i + 1) * fc] + m[(4 * i + 2) * fc]) * 0.5 + m[(4 * i + 3) * fc]
        for i in range(3):  # G^T h, column by column
            dw[9 * k + i] = h[0][i] + (h[1][i] + h[2][i]) * 0.5
            dw[9 * k + 3 + i] = (h[1][i] - h[2][i]) * 0.5
            dw[9 * k + 6 + i] = (h[1][i] + h[2][i]) * 0.5 + h[3][i]


cdef enum:
    SEGMENT = 64  # most tiles of one tile row transformed together (their rows live on the stack)


cdef inline Py_ssize_t _segment(const Tiling* t, Py_ssize_t tile, Py_ssize_t end, Py_ssize_t* n,
                                Py_ssize_t* oy, Py_ssize_t* ox) noexcept nogil:
    # Tiles [tile, returned) lie in one tile row; n, oy, ox locate the first.
    _tile_origin(t, tile, n, oy, ox)
    return min(end, tile + t.TW - ox[0] // 2, tile + SEGMENT)


cdef inline void _split_row(const floating* row, Py_ssize_t width, Py_ssize_t start, Py_ssize_t pairs,
                            floating* even, floating* odd) noexcept nogil:
    # even[q], odd[q] = row[start + 2q], row[start + 2q + 1]: zero outside [0, width) or if row
    # is NULL. Splitting even and odd columns lets the tile transforms run at unit stride.
    cdef Py_ssize_t q, col
    if row == NULL:
        memset(even, 0, pairs * sizeof(floating))
        memset(odd, 0, pairs * sizeof(floating))
    elif start >= 0 and start + 2 * pairs <= width:
        row = row + start
        for q in range(pairs):
            even[q] = row[2 * q]
            odd[q] = row[2 * q + 1]
    else:
        for q in range(pairs):
            col = start + 2 * q
            even[q] = row[col] if 0 <= col < width else 0
            odd[q] = row[col + 1] if 0 <= col + 1 < width else 0


cdef inline void _merge_row(const floating* even, const floating* odd, Py_ssize_t pairs, floating* row,
                            Py_ssize_t width, Py_ssize_t start) noexcept nogil:
    # The adjoint of _split_row: row[start + 2q] += even[q], row[start + 2q + 1] += odd[q] inside [0, width).
    cdef Py_ssize_t q, col
    if start >= 0 and start + 2 * pairs <= width:
        row = row + start
        for q in range(pairs):
            row[2 * q] += even[q]
            row[2 * q + 1] += odd[q]
    else:
        for q in range(pairs):
            col = start + 2 * q
            if 0 <= col < width:
                row[col] += even[q]
            if 0 <= col + 1 < width:
                row[col + 1] += odd[q]


cdef void _transform_inputs(const Tiling* t, const floating* x, Py_ssize_t first, Py_ssize_t count,
                            floating* v) noexcept nogil:
    # v[xi * in_stride + c * block + j] = (B^T d B)[xi] of tile first + j, channel c (zero padding).
    cdef Py_ssize_t tile = first, stop, nt, j, c, n, oy, ox, y, i, q, xs = t.in_stride
    cdef floating e[4][SEGMENT + 1]  # the tile rows' even and odd columns, then B^T of them
    cdef floating o[4][SEGMENT + 1]
    cdef floating a0, a1, a2, a3
    cdef const floating* plane
    cdef floating* dst
    while tile < first + count:
        stop = _segment(t, tile, first + count, &n, &oy, &ox)
        nt = stop - tile
        for c in range(t.C):
            plane = x + (n * t.C + c) * t.H * t.W
            for i in range(4):
                y = oy - t.ph + i
                _split_row(plane + y * t.W if 0 <= y < t.H else NULL, t.W, ox - t.pw, nt + 1, e[i], o[i])
            for q in range(nt + 1):  # B^T d, down each column
                a0, a1, a2, a3 = e[0][q], e[1][q], e[2][q], e[3][q]
                e[0][q], e[1][q], e[2][q], e[3][q] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                a0, a1, a2, a3 = o[0][q], o[1][q], o[2][q], o[3][q]
                o[0][q], o[1][q], o[2][q], o[3][q] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
            for i in range(4):  # (B^T d) B along each row: tile j spans e[j], o[j], e[j+1], o[j+1]
                dst = v + 4 * i * xs + c * t.block + tile - first
                for j in range(nt):
                    dst[j] = e[i][j] - e[i][j + 1]
                    dst[xs + j] = o[i][j] + e[i][j + 1]
                    dst[2 * xs + j] = e[i][j + 1] - o[i][j]
                    dst[3 * xs + j] = o[i][j] - o[i][j + 1]
        tile = stop


cdef void _transform_outputs(const Tiling* t, const floating* m, const floating* bias, bint relu, Py_ssize_t first,
                             Py_ssize_t count, floating* out) noexcept nogil:
    # out tile = A^T m A (+ bias, then ReLU if asked), cropped to the output; m laid out like v,
    # with F rows and out_stride.
    cdef Py_ssize_t tile = first, stop, nt, full, rows, j, f, n, oy, ox, i, k, xs = t.out_stride
    cdef floating y[4][SEGMENT]  # the tiles' outputs (0, 0), (0, 1), (1, 0), (1, 1)
    cdef floating s00, s01, s02, s03, s10, s11, s12, s13, shift = 0
    cdef const floating* src
    cdef floating* dst
    while tile < first + count:
        stop = _segment(t, tile, first + count, &n, &oy, &ox)
        nt = stop - tile
        full = min(nt, (t.OW - ox) // 2)  # tiles with both columns inside the output
        rows = min(2, t.OH - oy)
        for f in range(t.F):
            src = m + f * t.block + tile - first
            if bias != NULL:
                shift = bias[f]
            for j in range(nt):  # A^T m down each column, then along the two rows
                s00 = src[j] + src[4 * xs + j] + src[8 * xs + j]
                s01 = src[xs + j] + src[5 * xs + j] + src[9 * xs + j]
                s02 = src[2 * xs + j] + src[6 * xs + j] + src[10 * xs + j]
                s03 = src[3 * xs + j] + src[7 * xs + j] + src[11 * xs + j]
                s10 = src[4 * xs + j] - src[8 * xs + j] - src[12 * xs + j]
                s11 = src[5 * xs + j] - src[9 * xs + j] - src[13 * xs + j]
                s12 = src[6 * xs + j] - src[10 * xs + j] - src[14 * xs + j]
                s13 = src[7 * xs + j] - src[11 * xs + j] - src[15 * xs + j]
                y[0][j] = s00 + s01 + s02 + shift
                y[1][j] = s01 - s02 - s03 + shift
                y[2][j] = s10 + s11 + s12 + shift
                y[3][j] = s11 - s12 - s13 + shift
            if relu:
                for k in range(4):
                    for j in range(nt):
                        y[k][j] = 0 if y[k][j] <= 0 else y[k][j]
            dst = out + (n * t.F + f) * t.OH * t.OW + oy * t.OW + ox
            for i in range(rows):
                for j in range(full):
                    dst[2 * j] = y[2 * i][j]
                    dst[2 * j + 1] = y[2 * i + 1][j]
                if full < nt:  # the last tile's second column lies beyond the output
                    dst[2 * full] = y[2 * i][full]
                dst = dst + t.OW
        tile = stop


cdef void _transform_grads(const Tiling* t, const floating* dout, Py_ssize_t first, Py_ssize_t count,
                           floating* p) noexcept nogil:
    # p = A dy A^T of each 2x2 output-gradient tile (zero beyond the output), laid out like m.
    cdef Py_ssize_t tile = first, stop, nt, j, f, n, oy, ox, xs = t.out_stride
    cdef floating g[4][SEGMENT]  # dy rows 0 and 1 of the tiles, even and odd columns
    cdef floating r00, r01, r10, r11, r20, r21, r30, r31
    cdef const floating* plane
    cdef floating* dst
    while tile < first + count:
        stop = _segment(t, tile, first + count, &n, &oy, &ox)
        nt = stop - tile
        for f in range(t.F):
            plane = dout + (n * t.F + f) * t.OH * t.OW
            _split_row(plane + oy * t.OW, t.OW, ox, nt, g[0], g[1])
            _split_row(plane + (oy + 1) * t.OW if oy + 1 < t.OH else NULL, t.OW, ox, nt, g[2], g[3])
            dst = p + f * t.block + tile - first
            for j in range(nt):  # A dy down each column, then A^T along each row
                r00, r01 = g[0][j], g[1][j]
                r10, r11 = g[0][j] + g[2][j], g[1][j] + g[3][j]
                r20, r21 = g[0][j] - g[2][j], g[1][j] - g[3][j]
                r30, r31 = -g[2][j], -g[3][j]
                dst[j], dst[xs + j], dst[2 * xs + j], dst[3 * xs + j] = r00, r00 + r01, r00 - r01, -r01
                dst[4 * xs + j], dst[5 * xs + j], dst[6 * xs + j], dst[7 * xs + j] = r10, r10 + r11, r10 - r11, -r11
                dst[8 * xs + j], dst[9 * xs + j], dst[10 * xs + j], dst[11 * xs + j] = r20, r20 + r21, r20 - r21, -r21
                dst[12 * xs + j], dst[13 * xs + j], dst[14 * xs + j], dst[15 * xs + j] = r30, r30 + r31, r30 - r31, -r31
        tile = stop


cdef void _add_input_grads(const Tiling* t, const floating* dv, Py_ssize_t first, Py_ssize_t count,
                           floating* dx) noexcept nogil:
    # dx tile += B dv B^T (the adjoint of _transform_inputs); cells in the padding are dropped.
    cdef Py_ssize_t tile = first, stop, nt, j, c, n, oy, ox, y, i, k, xs = t.in_stride
    cdef floating d[16][SEGMENT]  # each tile's 4x4 gradient, cell (i, k) in row 4 i + k
    cdef floating even[SEGMENT + 1]
    cdef floating odd[SEGMENT + 1]
    cdef floating e[4][4]
    cdef const floating* src
    cdef floating* plane
    while tile < first + count:
        stop = _segment(t, tile, first + count, &n, &oy, &ox)
        nt = stop - tile
        for c in range(t.C):
            src = dv + c * t.block + tile - first
            for j in range(nt):
                for i in range(4):  # dv B^T along each row
                    e[i][0] = src[4 * i * xs + j]
                    e[i][1] = src[(4 * i + 1) * xs + j] - src[(4 * i + 2) * xs + j] + src[(4 * i + 3) * xs + j]
                    e[i][2] = src[(4 * i + 1) * xs + j] + src[(4 * i + 2) * xs + j] - src[4 * i * xs + j]
                    e[i][3] = -src[(4 * i + 3) * xs + j]
                for k in range(4):  # B (dv B^T) down each column
                    d[k][j] = e[0][k]
                    d[4 + k][j] = e[1][k] - e[2][k] + e[3][k]
                    d[8 + k][j] = e[1][k] + e[2][k] - e[0][k]
                    d[12 + k][j] = -e[3][k]
            plane = dx + (n * t.C + c) * t.H * t.W
            for i in range(4):
                y = oy - t.ph + i
                if y < 0 or y >= t.H:
                    continue
                # Columns 2j and 2j + 1 of the row get tile j's first two and tile j - 1's last two.
                even[0], odd[0] = d[4 * i][0], d[4 * i + 1][0]
                for j in range(1, nt):
                    even[j] = d[4 * i][j] + d[4 * i + 2][j - 1]
                    odd[j] = d[4 * i + 1][j] + d[4 * i + 3][j - 1]
                even[nt], odd[nt] = d[4 * i + 2][nt - 1], d[4 * i + 3][nt - 1]
                _merge_row(even, odd, nt + 1, plane + y * t.W, t.W, ox - t.pw)
        tile = stop


# ------------------------------------------------------------------------------ the passes
cdef void _forward_block(const Tiling* t, const floating* x, const floating* u, const floating* bias,
                         bint relu, floating* out, Py_ssize_t first, Py_ssize_t count, floating* v,
                         floating* m) noexcept nogil:
    cdef int xi
    _transform_inputs(t, x, first, count, v)
    for xi in range(16):
        _gemm(False, False, <int> t.F, <int> count, <int> t.C, 1, u + xi * t.F * t.C, <int> t.C,
              v + xi * t.in_stride, <int> t.block, 0, m + xi * t.out_stride, <int> t.block)
    _transform_outputs(t, m, bias, relu, first, count, out)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u, const floating[::1] bias,
                   floating[:, :, :, ::1] out, floating[:, ::1] v, floating[:, ::1] m,
                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t block, bint relu, int num_threads):
    """out <- conv(x, w) + bias (bias empty = none), then ReLU if asked, from u = transform_weights(w); v, m:
    (threads, n) scratch, n from scratch_sizes(C, F, block). Threads take blocks of
    ``block`` consecutive tiles."""
    cdef Tiling t = _tiling(x.shape, u.shape[1], out.shape, ph, pw, block)
    cdef Py_ssize_t tiles = x.shape[0] * t.per_image, blk
    cdef Py_ssize_t v_stride = v.shape[1], m_stride = m.shape[1]
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for blk in prange((tiles + block - 1) // block, schedule="dynamic"):
            _forward_block(&t, &x[0, 0, 0, 0], &u[0, 0, 0], bias_ptr, relu, &out[0, 0, 0, 0], blk * block,
                           min(block, tiles - blk * block), &v[0, 0] + tid * v_stride,
                           &m[0, 0] + tid * m_stride)


cdef void _backward_chunk(const Tiling* t, const floating* dout, const floating* x, const floating* u,
                          floating* dx, Py_ssize_t first_image, Py_ssize_t last_image, floating* dw_part,
                          floating* db_part, floating* v, floating* p, floating* dv,
                          floating* du) noexcept nogil:
    # One thread, images [first_image, last_image), tiles in order: dx of those images, and
    # their share of dw (and db) written to the chunk's own partial.
    cdef Py_ssize_t first = first_image * t.per_image, tiles = (last_image - first_image) * t.per_image
    cdef Py_ssize_t blocks = (tiles + t.block - 1) // t.block
    cdef Py_ssize_t size = (tiles + blocks - 1) // blocks  # even blocks: no short GEMM at the end
    cdef Py_ssize_t start, count, n, f, plane = t.OH * t.OW
    cdef int xi
    if dx != NULL:
        memset(dx + first_image * t.C * t.H * t.W, 0,
               (last_image - first_image) * t.C * t.H * t.W * sizeof(floating))
    start = 0
    while start < tiles:
        count = min(size, tiles - start)
        _transform_inputs(t, x, first + start, count, v)
        _transform_grads(t, dout, first + start, count, p)
        for xi in range(16):
            _gemm(False, True, <int> t.F, <int> t.C, <int> count, 1, p + xi * t.out_stride, <int> t.block,
                  v + xi * t.in_stride, <int> t.block, 0 if start == 0 else 1, du + xi * t.F * t.C, <int> t.C)
            if dx != NULL:
                _gemm(True, False, <int> t.C, <int> count, <int> t.F, 1, u + xi * t.F * t.C, <int> t.C,
                      p + xi * t.out_stride, <int> t.block, 0, dv + xi * t.in_stride, <int> t.block)
        if dx != NULL:
            _add_input_grads(t, dv, first + start, count, dx)
        start = start + count
    _weight_grad(du, t.F * t.C, dw_part)
    if db_part != NULL:
        for f in range(t.F):
            db_part[f] = 0
            for n in range(first_image, last_image):
                db_part[f] += _sum(dout + (n * t.F + f) * plane, plane)


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, ::1] u, floating[:, :, :, ::1] dx, floating[:, ::1] dw_parts,
                    floating[:, ::1] db_parts, floating[:, ::1] v, floating[:, ::1] p, floating[:, ::1] dv,
                    floating[:, ::1] du, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t block, int num_threads):
    """dx <- full gradient (none when dx has no images); the batch is cut into len(dw_parts) fixed
    chunks of consecutive images and dw_parts[c] <- chunk c's share of dw (F * C * 9; likewise db_parts, which may
    have zero columns = no bias), whichever thread ran it; the caller sums the parts in chunk
    order. v, dv, p: (threads, n) scratch as scratch_sizes gives; du: (threads, 16 * F * C)."""
    cdef Tiling t = _tiling(x.shape, u.shape[1], dout.shape, ph, pw, block)
    cdef Py_ssize_t chunk, n_batch = x.shape[0], n_chunks = dw_parts.shape[0]
    cdef Py_ssize_t v_stride = v.shape[1], p_stride = p.shape[1], du_stride = du.shape[1]
    cdef Py_ssize_t dw_stride = dw_parts.shape[1], db_stride = db_parts.shape[1]
    cdef bint has_bias = db_parts.shape[1] > 0
    cdef floating* db_base = &db_parts[0, 0] if has_bias else NULL
    cdef floating* dx_base = &dx[0, 0, 0, 0] if dx.shape[0] > 0 else NULL
    cdef int tid = 0  # thread-private inside the parallel block
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        for chunk in prange(n_chunks, schedule="dynamic"):
            _backward_chunk(&t, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &u[0, 0, 0], dx_base,
                            chunk * n_batch // n_chunks, (chunk + 1) * n_batch // n_chunks,
                            &dw_parts[0, 0] + chunk * dw_stride, db_base + chunk * db_stride if has_bias else NULL,
                            &v[0, 0] + tid * v_stride, &p[0, 0] + tid * p_stride, &dv[0, 0] + tid * dv.shape[1],
                            &du[0, 0] + tid * du_stride)
