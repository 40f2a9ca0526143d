"""Jitted conv2d kernels of the numba backend: im2col/col2im + BLAS GEMM, and direct loops for thin convolutions.

Every kernel serves float32 and float64 (Numba specializes on the array dtype). Geometry
arrives as ``geom = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups)``. Parallel
kernels split their work into fixed blocks whose results never depend on which thread ran
them: each block writes only its own outputs or its own partial sums.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._numba_runtime import jit


@jit()
def _valid_cols(out_w, in_w, offset, stride):
    """[lo, hi): the output columns q whose input column q*stride + offset lies inside [0, in_w)."""
    lo = max(0, -(offset // stride))
    hi = min(out_w, max(0, (in_w - 1 - offset) // stride + 1))
    return lo, max(lo, hi)


@jit()
def _im2col(x_n, kh, kw, geom, out_h, out_w, cols, col0):
    """cols[(c*kh + i)*kw + j, col0 + oh*out_w + ow] = padded x_n[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]."""
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    channels, height, width = x_n.shape
    zero = cols.dtype.type(0)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                off_w = j * dw - pw
                lo, hi = _valid_cols(out_w, width, off_w, sw)
                for oh in range(out_h):
                    base = col0 + oh * out_w
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= height:
                        row[base:base + out_w] = zero
                        continue
                    src = x_n[c, ih]
                    row[base:base + lo] = zero
                    for q in range(lo, hi):
                        row[base + q] = src[q * sw + off_w]
                    row[base + hi:base + out_w] = zero


@jit()
def _col2im_add(cols, col0, kh, kw, geom, out_h, out_w, dx_n):
    """The adjoint of _im2col: add every column entry back onto the input cell it came from."""
    sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    channels, height, width = dx_n.shape
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                off_w = j * dw - pw
                lo, hi = _valid_cols(out_w, width, off_w, sw)
                for oh in range(out_h):
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= height:
                        continue
                    dst = dx_n[c, ih]
                    base = col0 + oh * out_w
                    for q in range(lo, hi):
                        dst[q * sw + off_w] += row[base + q]


@jit()
def _block(t, n_blocks, start, stop):
    """Samples [a, b) of block t when [start, stop) is cut into n_blocks near-equal blocks."""
    total = stop - start
    return start + t * total // n_blocks, start + (t + 1) * total // n_blocks


@jit(parallel=True)
def conv_forward_gemm(x, w, b, has_bias, geom, out, workspace, n_blocks):
    """out = conv(x, w) + b, one im2col matrix per sample, one GEMM per sample and group.

    ``workspace`` is flat with room for n_blocks matrices of (C*KH*KW, OH*OW).
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
    for t in prange(n_blocks):
        cols = workspace[t * k_all * positions:(t + 1) * k_all * positions].reshape((k_all, positions))
        first, last = _block(t, n_blocks, 0, n_batch)
        for n in range(first, last):
            _im2col(x[n], kh, kw, geom, out_h, out_w, cols, 0)
            out_n = out[n].reshape((n_filters, positions))
            for g in range(groups):
                np.dot(w2[g * f_group:(g + 1) * f_group], cols[g * k_group:(g + 1) * k_group],
                       out_n[g * f_group:(g + 1) * f_group])
            if has_bias:
                for f in range(n_filters):
                    out_n[f] += b[f]


@jit(parallel=True)
def conv_backward_gemm_chunk(x, w, dout, geom, start, stop, n_blocks, dx, dw_parts, db_parts,
                             cols_space, dout_space, block_cols):
    """Gradients of samples [start, stop): dx written, dw and db ADDED to block t's partials.

    Block t lays its samples side by side: cols (C*KH*KW, S*P) and dout (F, S*P), so each
    group needs two GEMMs with a long inner dimension: dw_t += dout_t @ cols_t.T and
    dcols = w.T @ dout_t (written over cols_t once dw is done), then col2im into dx.
    ``block_cols`` is the column capacity of one block's matrices in the flat workspaces.
    """
    channels = x.shape[1]
    n_filters, c_group, kh, kw = w.shape
    groups = geom[6]
    out_h, out_w = dout.shape[2], dout.shape[3]
    positions = out_h * out_w
    f_group = n_filters // groups
    k_group = c_group * kh * kw
    k_all = channels * kh * kw
    w2 = w.reshape((n_filters, k_group))
    for t in prange(n_blocks):
        first, last = _block(t, n_blocks, start, stop)
        width = (last - first) * positions
        if width > 0:
            cols = cols_space[t * k_all * block_cols:t * k_all * block_cols + k_all * width].reshape((k_all, width))
            douts = dout_space[t * n_filters * block_cols:
                               t * n_filters * block_cols + n_filters * width].reshape((n_filters, width))
            for s in range(last - first):
                _im2col(x[first + s], kh, kw, geom, out_h, out_w, cols, s * positions)
                dout_s = dout[first + s].reshape((n_filters, positions))
                douts[:, s * positions:(s + 1) * positions] = dout_s
                for f in range(n_filters):
                    total = db_parts[t, f]
                    for q in range(positions):
                        total += dout_s[f, q]
                    db_parts[t, f] = total
            for g in range(groups):
                rows = cols[g * k_group:(g + 1) * k_group]
                dw_parts[t, g * f_group:(g + 1) * f_group] += np.dot(douts[g * f_group:(g + 1) * f_group], rows.T)
            for g in range(groups):
                np.dot(w2[g * f_group:(g + 1) * f_group].T, douts[g * f_group:(g + 1) * f_group],
                       cols[g * k_group:(g + 1) * k_group])
            for s in range(last - first):
                dx_n = dx[first + s]
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
                    for oh in range(out_h):
                        ih = oh * sh - ph + i * dh
                        if 0 <= ih < height:
                            src_row, dst_row = src[ih], plane[oh]
                            for q in range(lo, hi):
                                dst_row[q] += weight * src_row[q * sw + off_w]


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
                    for oh in range(out_h):
                        ih = oh * sh - ph + i * dh
                        if 0 <= ih < height:
                            dst_row, grad_row = plane[ih], grad[oh]
                            for q in range(lo, hi):
                                dst_row[q * sw + off_w] += weight * grad_row[q]


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
                    acc[:] = 0
                    for n in range(n_batch):
                        src, grad = x[n, c0 + c], dout[n, f]
                        for oh in range(out_h):
                            ih = oh * sh - ph + i * dh
                            if 0 <= ih < height:
                                src_row, grad_row = src[ih], grad[oh]
                                for q in range(lo, hi):
                                    acc[q] += grad_row[q] * src_row[q * sw + off_w]
                    dw_out[f, c, i, j] = acc.sum()
        acc[:] = 0
        for n in range(n_batch):
            grad = dout[n, f]
            for oh in range(out_h):
                for q in range(out_w):
                    acc[q] += grad[oh, q]
        db_out[f] = acc.sum()
