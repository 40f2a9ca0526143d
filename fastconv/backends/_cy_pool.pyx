"""Compiled max/avg pooling kernels: direct loops, OpenMP over the (sample, channel) planes."""
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.string cimport memset

from ._cy_numeric cimport _valid_range, floating

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Selects by bit masks: gcc compiles `take ? a : b` on floats to a branch, and on real
       data the comparison deciding `take` is unpredictable (measured: 2x slower pooling). */
    static inline int fastconv_pick_int(int take, int a, int b) {
        int mask = -take;
        return (a & mask) | (b & ~mask);
    }
    #define FASTCONV_PICK(name, real, bits)                          \
        static inline real name(int take, real a, real b) {          \
            bits ia, ib, mask = (bits)0 - (bits)take;                \
            memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);  \
            ia = (ia & mask) | (ib & ~mask);                         \
            memcpy(&a, &ia, sizeof a);                               \
            return a;                                                \
        }
    FASTCONV_PICK(fastconv_pick_float, float, uint32_t)
    FASTCONV_PICK(fastconv_pick_double, double, uint64_t)
    """
    int fastconv_pick_int(int take, int a, int b) nogil
    float fastconv_pick_float(int take, float a, float b) nogil
    double fastconv_pick_double(int take, double a, double b) nogil


ctypedef struct Window:
    int H, W, OH, OW, kh, kw, sh, sw, ph, pw


cdef Window _window(Py_ssize_t* x_shape, Py_ssize_t* out_shape, tuple params):
    cdef Window g
    g.H, g.W = x_shape[1], x_shape[2]
    g.OH, g.OW = out_shape[1], out_shape[2]
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw = params
    return g


cdef inline void _valid_columns(const Window* g, int j, int* off, int* lo, int* hi) noexcept nogil:
    # Output columns ow whose kernel column j lands inside the row: input column ow*sw + off.
    off[0] = j - g.pw
    _valid_range(off[0], g.W, g.OW, g.sw, lo, hi)


cdef inline void _clip(int o, int stride, int pad, int k, int size, int* lo, int* hi) noexcept nogil:
    """The in-bounds cells [lo, hi) of window ``o`` along one axis (padding is never stored)."""
    cdef int start = o * stride - pad
    lo[0] = max(start, 0)
    hi[0] = min(start + k, size)


cdef inline bint _takes_over(floating value, floating best) noexcept nogil:
    # PyTorch's rule: a strictly larger value or any NaN replaces the current winner, so ties
    # keep the first maximum in row-major order and a NaN propagates.
    return (value > best) | (value != value)  # bitwise: no short-circuit branch


cdef inline floating _pick(bint take, floating a, floating b) noexcept nogil:
    if floating is float:
        return fastconv_pick_float(take, a, b)
    else:
        return fastconv_pick_double(take, a, b)


cdef inline void _max_plane_strided(const Window* g, const floating* x, floating* out, int* argmax,
                                    int stride) noexcept nogil:
    # One output row at a time, visiting window cells in row-major order (r, then kernel
    # column j) for all output columns at once: each column's sequence of visits is its own
    # window's scan, and the loop over output columns has no dependence.
    cdef int oh, ow, r, j, r0, r1, off, lo, hi, index
    cdef bint take
    cdef floating value
    cdef floating* best
    cdef int* best_index
    cdef const floating* row
    for oh in range(g.OH):
        _clip(oh, g.sh, g.ph, g.kh, g.H, &r0, &r1)
        best = out + oh * g.OW
        best_index = argmax + oh * g.OW
        for ow in range(g.OW):
            best[ow] = -INFINITY  # padding is -inf: it never wins, so only in-bounds cells compete
            best_index[ow] = r0 * g.W + max(ow * g.sw - g.pw, 0)
        for r in range(r0, r1):
            row = x + r * g.W
            for j in range(g.kw):
                _valid_columns(g, j, &off, &lo, &hi)
                for ow in range(lo, hi):
                    value = row[ow * stride + off]
                    index = r * g.W + ow * stride + off
                    take = _takes_over(value, best[ow])
                    best_index[ow] = fastconv_pick_int(take, index, best_index[ow])
                    best[ow] = _pick(take, value, best[ow])


cdef void _max_plane(const Window* g, const floating* x, floating* out, int* argmax) noexcept nogil:
    # The common strides as constants, so the compiler can vectorize their loops.
    if g.sw == 1:
        _max_plane_strided(g, x, out, argmax, 1)
    elif g.sw == 2:
        _max_plane_strided(g, x, out, argmax, 2)
    else:
        _max_plane_strided(g, x, out, argmax, g.sw)


cdef void _max_plane_2x2(const Window* g, const floating* x, floating* out, int* argmax) noexcept nogil:
    # 2x2 windows, stride 2, no padding: every window is in bounds. Each row pair is decided
    # first and then the two winners, which shortens the chain of dependent selects; the
    # result is the sequential scan's (the rule keeps the first maximum, or the last NaN,
    # whichever way the cells are grouped).
    cdef int oh, ow, top, left, right
    cdef floating upper, lower
    cdef bint take
    for oh in range(g.OH):
        for ow in range(g.OW):
            top = 2 * oh * g.W + 2 * ow
            take = _takes_over(x[top + 1], x[top])
            upper = _pick(take, x[top + 1], x[top])
            left = top + take
            take = _takes_over(x[top + g.W + 1], x[top + g.W])
            lower = _pick(take, x[top + g.W + 1], x[top + g.W])
            right = top + g.W + take
            take = _takes_over(lower, upper)
            out[oh * g.OW + ow] = _pick(take, lower, upper)
            argmax[oh * g.OW + ow] = fastconv_pick_int(take, right, left)


def max_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, int[:, :, ::1] argmax,
                       tuple params, int num_threads):
    """Per plane of x (planes, H, W): out <- window maxima, argmax <- flat index (row * W + col)
    of each window's winner. params: (kh, kw, sh, sw, ph, pw)."""
    cdef Window g = _window(x.shape, out.shape, params)
    cdef bint fast = g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.ph == 0 and g.pw == 0
    cdef Py_ssize_t plane
    for plane in prange(x.shape[0], nogil=True, schedule="guided", num_threads=num_threads):
        if fast:
            _max_plane_2x2(&g, &x[plane, 0, 0], &out[plane, 0, 0], &argmax[plane, 0, 0])
        else:
            _max_plane(&g, &x[plane, 0, 0], &out[plane, 0, 0], &argmax[plane, 0, 0])


def max_pool2d_backward(const floating[:, :, ::1] dout, const int[:, :, ::1] argmax,
                        floating[:, :, ::1] dx, int num_threads):
    """dx <- zeros plus each window's gradient added at its argmax."""
    cdef Py_ssize_t plane, j, cells = dout.shape[1] * dout.shape[2], in_plane = dx.shape[1] * dx.shape[2]
    cdef floating* dst
    cdef const floating* grad
    cdef const int* index
    for plane in prange(dx.shape[0], nogil=True, schedule="guided", num_threads=num_threads):
        dst = &dx[plane, 0, 0]
        grad = &dout[plane, 0, 0]
        index = &argmax[plane, 0, 0]
        memset(dst, 0, in_plane * sizeof(floating))
        for j in range(cells):
            dst[index[j]] += grad[j]


cdef void _avg_plane(const Window* g, const floating* x, floating* out) noexcept nogil:
    cdef int oh, ow, r, c, r0, r1, c0, c1
    cdef floating total, area = g.kh * g.kw  # count_include_pad: padded zeros count too
    for oh in range(g.OH):
        _clip(oh, g.sh, g.ph, g.kh, g.H, &r0, &r1)
        for ow in range(g.OW):
            _clip(ow, g.sw, g.pw, g.kw, g.W, &c0, &c1)
            total = 0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    total = total + x[r * g.W + c]
            out[oh * g.OW + ow] = total / area


cdef void _avg_plane_backward(const Window* g, const floating* dout, floating* dx) noexcept nogil:
    cdef int oh, ow, r, c, r0, r1, c0, c1
    cdef floating share, area = g.kh * g.kw
    memset(dx, 0, g.H * g.W * sizeof(floating))
    for oh in range(g.OH):
        _clip(oh, g.sh, g.ph, g.kh, g.H, &r0, &r1)
        for ow in range(g.OW):
            _clip(ow, g.sw, g.pw, g.kw, g.W, &c0, &c1)
            share = dout[oh * g.OW + ow] / area
            for r in range(r0, r1):
                for c in range(c0, c1):
                    dx[r * g.W + c] += share


def avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, tuple params,
                       int num_threads):
    """Per plane of x: out <- window means, padded cells counted in the divisor."""
    cdef Window g = _window(x.shape, out.shape, params)
    cdef Py_ssize_t plane
    for plane in prange(x.shape[0], nogil=True, schedule="guided", num_threads=num_threads):
        _avg_plane(&g, &x[plane, 0, 0], &out[plane, 0, 0])


def avg_pool2d_backward(const floating[:, :, ::1] dout, floating[:, :, ::1] dx, tuple params,
                        int num_threads):
    """dx <- each window's gradient spread evenly over its in-bounds cells."""
    cdef Window g = _window(dx.shape, dout.shape, params)
    cdef Py_ssize_t plane
    for plane in prange(dx.shape[0], nogil=True, schedule="guided", num_threads=num_threads):
        _avg_plane_backward(&g, &dout[plane, 0, 0], &dx[plane, 0, 0])
