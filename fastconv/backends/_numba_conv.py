"""Jitted conv2d kernels of the numba backend: im2col/col2im + BLAS GEMM, and direct loops for thin convolutions.

Every kernel serves float32 and float64 (Numba specializes on the array dtype). Geometry
arrives as ``geom = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups)``. Parallel
kernels split their work into fixed blocks whose results never depend on which thread ran
them: each block writes only its own outputs or its own partial sums.
"""
from __future__ import annotations

import numpy as np
from numba import get_thread_id, prange

from ._numba_runtime import jit


@jit()
def _valid_cols(out_w, in_w, offset, stride):
    """[lo, hi): the output columns q whose input column q*stride + offset lies inside [0, in_w)."""
    lo = max(0, -(offset // stride))
    hi = min(out_w, max(0, (in_w - 1 - offset) // stride + 1))
    return lo, max(lo, hi)


# Hot loops run over range(len) of slices: Numba cannot drop its negative-index wraparound
# check for computed indices like q + offset, and that check alone stops vectorization.
@jit()
def _copy(dst, src):
    for q in range(dst.shape[0]):
        dst[q] = src[q]


@jit()
def _add(dst, src):
    for q in range(dst.shape[0]):
        dst[q] += src[q]


@jit()
def _axpy(dst, alpha, src):
    for q in range(dst.shape[0]):
        dst[q] += alpha * src[q]


@jit()
def _multiply_add(dst, a, b):
    for q in range(dst.shape[0]):
        dst[q] += a[q] * b[q]


@jit()
def _input_run(image_row, lo, hi, stride, offset):
    """The input cells read by output columns [lo, hi) (hi > lo) of one kernel offset: a view."""
    return image_row[lo * stride + offset:(hi - 1) * stride + offset + 1:stride]


@jit()
def _fill(dst, value):
    for q in range(dst.shape[0]):
        dst[q] = value


@jit()
def _im2col(x_n, kh, kw, geom, out_h, out_w, cols, col0):
    """cols[(c*kh + i)*kw + j, col0 + oh*out_w + ow] = padded x_n[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]."""
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    channels, height, width = x_n.shape
    zero = cols.dtype.type(0)
    # Output rows as wide as image rows, unit strides: the cells of one kernel offset are one
    # long shifted run of the flat image (far faster than many short row copies), after which
    # the cells that fell into the side padding are zeroed again.
    flat_runs = sh == 1 and sw == 1 and out_w == width
    for c in range(channels):
        plane = x_n[c]
        flat = plane.reshape(height * width)
        for i in range(kh):
            off_h = i * dh - ph
            r_lo, r_hi = _valid_cols(out_h, height, off_h, sh)
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j, col0:col0 + out_h * out_w]
                off_w = j * dw - pw
                lo, hi = _valid_cols(out_w, width, off_w, sw)
                if r_lo == r_hi or lo == hi:
                    _fill(row, zero)
                    continue
                _fill(row[:r_lo * out_w], zero)
                _fill(row[r_hi * out_w:], zero)
                if flat_runs:
                    first, stop = r_lo * out_w + lo, (r_hi - 1) * out_w + hi
                    shift = off_h * width + off_w
                    _copy(row[first:stop], flat[first + shift:stop + shift])
                    for oh in range(r_lo, r_hi):
                        _fill(row[oh * out_w:oh * out_w + lo], zero)
                        _fill(row[oh * out_w + hi:(oh + 1) * out_w], zero)
                    continue
                if sw != 1:
                    # Short strided runs: per-row slices would cost more than the copy itself, and
                    # unsigned flat indices spare the wraparound checks (measured 3x faster).
                    for oh in range(r_lo, r_hi):
                        base = np.uintp(oh * out_w)
                        start = np.uintp((oh * sh + off_h) * width + off_w)
                        for q in range(np.uintp(0), np.uintp(lo)):
                            row[base + q] = zero
                        for q in range(np.uintp(lo), np.uintp(hi)):
                            row[base + q] = flat[start + q * np.uintp(sw)]
                        for q in range(np.uintp(hi), np.uintp(out_w)):
                            row[base + q] = zero
                    continue
                for oh in range(r_lo, r_hi):
                    dst = row[oh * out_w:(oh + 1) * out_w]
                    _fill(dst[:lo], zero)
                    _copy(dst[lo:hi], plane[oh * sh + off_h, lo + off_w:hi + off_w])
                    _fill(dst[hi:], zero)


@jit()
def _col2im_add(cols, col0, kh, kw, geom, out_h, out_w, dx_n):
    """The adjoint of _im2col: add every column entry back onto the input cell it came from.

    Zeroes the entries of ``cols`` that stand for padding (they are discarded anyway).
    """
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    channels, height, width = dx_n.shape
    zero = cols.dtype.type(0)
    flat_runs = sh == 1 and sw == 1 and out_w == width  # as in _im2col
    for c in range(channels):
        plane = dx_n[c]
        flat = plane.reshape(height * width)
        for i in range(kh):
            off_h = i * dh - ph
            r_lo, r_hi = _valid_cols(out_h, height, off_h, sh)
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j, col0:col0 + out_h * out_w]
                off_w = j * dw - pw
                lo, hi = _valid_cols(out_w, width, off_w, sw)
                if r_lo == r_hi or lo == hi:
                    continue
                if flat_runs:
                    for oh in range(r_lo, r_hi):
                        _fill(row[oh * out_w:oh * out_w + lo], zero)
                        _fill(row[oh * out_w + hi:(oh + 1) * out_w], zero)
                    first, stop = r_lo * out_w + lo, (r_hi - 1) * out_w + hi
                    shift = off_h * width + off_w
                    _add(flat[first + shift:stop + shift], row[first:stop])
                    continue
                if sw != 1:  # as in _im2col
                    for oh in range(r_lo, r_hi):
                        base = np.uintp(oh * out_w)
                        start = np.uintp((oh * sh + off_h) * width + off_w)
                        for q in range(np.uintp(lo), np.uintp(hi)):
                            flat[start + q * np.uintp(sw)] += row[base + q]
                    continue
                for oh in range(r_lo, r_hi):
                    _add(plane[oh * sh + off_h, lo + off_w:hi + off_w], row[oh * out_w + lo:oh * out_w + hi])


@jit()
def _block(t, n_blocks, start, stop):
    """Samples [a, b) of block t when [start, stop) is cut into n_blocks near-equal blocks."""
    total = stop - start
    return start + t * total // n_blocks, start + (t + 1) * total // n_blocks


@jit()
def _grouped_gemm(w2, cols, groups, out):
    """out[group rows] = w2[group rows] @ cols[group rows] for each group."""
    f_group = w2.shape[0] // groups
    k_group = w2.shape[1]
    for g in range(groups):
        np.dot(w2[g * f_group:(g + 1) * f_group], cols[g * k_group:(g + 1) * k_group],
               out[g * f_group:(g + 1) * f_group])


@jit(parallel=True)
def conv_forward_gemm(x, w, b, has_bias, geom, pointwise, out, workspace):
    """out = conv(x, w) + b: one task per sample im2cols it into its thread's (C*KH*KW, OH*OW)
    slice of the flat ``workspace`` (get_num_threads() slices), then one GEMM per group writes out[n].

    A pointwise convolution (1x1, stride 1, no padding) multiplies x[n] itself.
    """
    n_batch, channels = x.shape[0], x.shape[1]
    n_filters, c_group, kh, kw = w.shape
    groups = geom[6]
    out_h, out_w = out.shape[2], out.shape[3]
    positions = out_h * out_w
    f_group = n_filters // groups
    k_group = c_group * kh * kw
    k_all = channels * kh * kw
    w2 = w.reshape((n_filters, k_group))
    for n in prange(n_batch):
        out_n = out[n].reshape((n_filters, positions))
        if pointwise:
            _grouped_gemm(w2, x[n].reshape((k_all, positions)), groups, out_n)
        else:
            tid = get_thread_id()
            cols = workspace[tid * k_all * positions:(tid + 1) * k_all * positions].reshape((k_all, positions))
            _im2col(x[n], kh, kw, geom, out_h, out_w, cols, 0)
            _grouped_gemm(w2, cols, groups, out_n)
        if has_bias:
            for f in range(n_filters):
                out_n[f] += b[f]


@jit()
def _add_row_sums(totals, rows, lanes):
    """totals[f] += sum(rows[f]), in 8 interleaved partial sums (``lanes``, scratch of 8):
    a single running sum would wait on each add's latency."""
    width = rows.shape[1]
    body = width - width % 8
    for f in range(rows.shape[0]):
        row = rows[f]
        lanes[:] = 0
        for q0 in range(0, body, 8):
            for u in range(8):
                lanes[u] += row[q0 + u]
        total = totals[f]
        for u in range(8):
            total += lanes[u]
        for q in range(body, width):
            total += row[q]
        totals[f] = total


@jit()
def _weight_grads(douts, cols, w2, groups, product, dw_t):
    """dw_t += douts @ cols.T, group by group."""
    f_group = w2.shape[0] // groups
    k_group = w2.shape[1]
    for g in range(groups):
        np.dot(douts[g * f_group:(g + 1) * f_group], cols[g * k_group:(g + 1) * k_group].T, product)
        dw_t[g * f_group:(g + 1) * f_group] += product


@jit()
def _input_grads(douts, w2, groups, dcols):
    """dcols = w2.T @ douts, group by group (dcols may be the cols the weight gradient was made from)."""
    f_group = w2.shape[0] // groups
    k_group = w2.shape[1]
    for g in range(groups):
        np.dot(w2[g * f_group:(g + 1) * f_group].T, douts[g * f_group:(g + 1) * f_group],
               dcols[g * k_group:(g + 1) * k_group])


@jit(parallel=True)
def conv_backward_gemm(x, w, dout, geom, pointwise, n_blocks, step, need_dx, dx, dw_parts, db_parts, cols_space,
                       dout_space):
    """Gradients by GEMM: dx written (when need_dx), block t's partial dw and db in dw_parts[t], db_parts[t].

    The batch is cut into n_blocks fixed blocks (more than threads, so idle threads steal
    work, yet the partial sums do not depend on scheduling). A block walks its samples
    ``step`` at a time, laid side by side as cols (C*KH*KW, S*P) and dout (F, S*P) in its
    thread's slices of the flat workspaces (get_num_threads() slices each; ``step`` keeps them
    small enough to stay in cache, yet the GEMMs' inner dimension S*P long). Per group:
    dw_t += dout_s @ cols_s.T and dcols = w.T @ dout_s (over cols_s once dw is done), then
    col2im into dx.
    """
    n_batch, channels = x.shape[0], x.shape[1]
    n_filters, c_group, kh, kw = w.shape
    groups = geom[6]
    out_h, out_w = dout.shape[2], dout.shape[3]
    positions = out_h * out_w
    f_group = n_filters // groups
    k_group = c_group * kh * kw
    k_all = channels * kh * kw
    w2 = w.reshape((n_filters, k_group))
    cap = step * positions
    for t in prange(n_blocks):
        dw_t = dw_parts[t]
        dw_t[...] = 0
        db_t = db_parts[t]
        db_t[...] = 0
        product = np.empty((f_group, k_group), w.dtype)
        lanes = np.empty(8, w.dtype)
        first, last = _block(t, n_blocks, 0, n_batch)
        tid = get_thread_id()
        for s0 in range(first, last, step):
            if pointwise and step == 1:  # x[n] is its own im2col matrix and dx[n] its col2im
                dout_s = dout[s0].reshape((n_filters, positions))
                _add_row_sums(db_t, dout_s, lanes)
                _weight_grads(dout_s, x[s0].reshape((k_all, positions)), w2, groups, product, dw_t)
                if need_dx:
                    _input_grads(dout_s, w2, groups, dx[s0].reshape((k_all, positions)))
                continue
            count = min(step, last - s0)
            width = count * positions
            cols = cols_space[tid * k_all * cap:tid * k_all * cap + k_all * width].reshape((k_all, width))
            start = tid * n_filters * cap
            douts = dout_space[start:start + n_filters * width].reshape((n_filters, width))
            for s in range(count):
                _im2col(x[s0 + s], kh, kw, geom, out_h, out_w, cols, s * positions)
                dout_s = dout[s0 + s].reshape((n_filters, positions))
                douts[:, s * positions:(s + 1) * positions] = dout_s
                _add_row_sums(db_t, dout_s, lanes)
            _weight_grads(douts, cols, w2, groups, product, dw_t)
            if not need_dx:
                continue
            _input_grads(douts, w2, groups, cols)
            for s in range(count):
                dx_n = dx[s0 + s]
                dx_n[...] = 0
                _col2im_add(cols, s * positions, kh, kw, geom, out_h, out_w, dx_n)


@jit(parallel=True)
def conv_forward_direct(x, w, b, has_bias, geom, out):
    """out = conv(x, w) + b by direct loops, one (sample, filter) plane per iteration.

    For thin convolutions (depthwise, few channels per group) where GEMM operands are tiny;
    the innermost loop runs along an output row, which vectorizes for stride 1.
    """
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, _, height, width = x.shape
    n_filters, c_group, kh, kw = w.shape
    f_group = n_filters // geom[6]
    out_h, out_w = out.shape[2], out.shape[3]
    for task in prange(n_batch * n_filters):
        n, f = task // n_filters, task % n_filters
        c0 = (f // f_group) * c_group
        plane = out[n, f]
        plane[...] = b[f] if has_bias else 0
        for c in range(c_group):
            src = x[n, c0 + c]
            for i in range(kh):
                for j in range(kw):
                    weight = w[f, c, i, j]
                    off_w = j * dw - pw
                    lo, hi = _valid_cols(out_w, width, off_w, sw)
                    r_lo, r_hi = _valid_cols(out_h, height, i * dh - ph, sh)
                    if lo == hi:
                        continue
                    for oh in range(r_lo, r_hi):
                        _axpy(plane[oh, lo:hi], weight, _input_run(src[oh * sh - ph + i * dh], lo, hi, sw, off_w))


@jit(parallel=True)
def conv_backward_input_direct(dout, w, geom, dx):
    """dx by direct loops, one (sample, channel) plane per iteration (each plane has one writer)."""
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, channels, height, width = dx.shape
    n_filters, c_group, kh, kw = w.shape
    f_group = n_filters // geom[6]
    out_h, out_w = dout.shape[2], dout.shape[3]
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        g, cc = c // c_group, c % c_group
        plane = dx[n, c]
        plane[...] = 0
        for f in range(g * f_group, (g + 1) * f_group):
            grad = dout[n, f]
            for i in range(kh):
                for j in range(kw):
                    weight = w[f, cc, i, j]
                    off_w = j * dw - pw
                    lo, hi = _valid_cols(out_w, width, off_w, sw)
                    r_lo, r_hi = _valid_cols(out_h, height, i * dh - ph, sh)
                    if lo == hi:
                        continue
                    for oh in range(r_lo, r_hi):
                        _axpy(_input_run(plane[oh * sh - ph + i * dh], lo, hi, sw, off_w), weight, grad[oh, lo:hi])


@jit(parallel=True)
def conv_backward_params_direct(x, dout, geom, dw_out, db_out):
    """dw (and db) by direct loops, one filter per iteration: sums run over the batch in order.

    Row products accumulate elementwise into a row of partial sums (which vectorizes without
    reassociation), summed once at the end.
    """
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, _, height, width = x.shape
    n_filters, c_group, kh, kw = dw_out.shape
    f_group = n_filters // geom[6]
    out_h, out_w = dout.shape[2], dout.shape[3]
    for f in prange(n_filters):
        c0 = (f // f_group) * c_group
        acc = np.zeros(out_w, dout.dtype)
        for c in range(c_group):
            for i in range(kh):
                for j in range(kw):
                    off_w = j * dw - pw
                    lo, hi = _valid_cols(out_w, width, off_w, sw)
                    r_lo, r_hi = _valid_cols(out_h, height, i * dh - ph, sh)
                    acc[:] = 0
                    if lo < hi:
                        for n in range(n_batch):
                            src, grad = x[n, c0 + c], dout[n, f]
                            for oh in range(r_lo, r_hi):
                                _multiply_add(acc[lo:hi], grad[oh, lo:hi],
                                              _input_run(src[oh * sh - ph + i * dh], lo, hi, sw, off_w))
                    dw_out[f, c, i, j] = acc.sum()
        acc[:] = 0
        for n in range(n_batch):
            for oh in range(out_h):
                _add(acc, dout[n, f, oh])
        db_out[f] = acc.sum()
