"""Jitted max/avg pooling kernels of the numba backend, parallel over (sample, channel) planes.

``geom = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)``. Every plane has exactly one
writer, so the results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._numba_runtime import jit


@jit()
def _window(o, stride, pad, kernel, size):
    """In-bounds input range [lo, hi) of output cell ``o`` along one axis."""
    start = o * stride - pad
    return max(start, 0), min(start + kernel, size)


@jit(parallel=True)
def max_pool_forward(x, geom, out, argmax):
    """out = window maxima; argmax = flat (row * W + col) index in the plane of each winner.

    PyTorch's rule: start from the first in-bounds cell with -inf; a strictly larger value or
    a NaN takes over, so ties keep the first maximum and NaN propagates.
    """
    kh, kw, sh, sw, ph, pw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, channels, height, width = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        flat, dst, idx = x[n, c].reshape(height * width), out[n, c], argmax[n, c]
        for oh in range(out_h):
            r0, r1 = _window(oh, sh, ph, kh, height)
            for ow in range(out_w):
                c0, c1 = _window(ow, sw, pw, kw, width)
                best = dst.dtype.type(-np.inf)
                best_index = r0 * width + c0
                for r in range(r0, r1):
                    for col in range(c0, c1):
                        # Selects, not branches: random data would mispredict half of them.
                        # The unsigned index spares Numba's negative-index check.
                        value = flat[np.uintp(r * width + col)]
                        take = (value > best) | (value != value)
                        best = value if take else best
                        best_index = r * width + col if take else best_index
                dst[oh, ow] = best
                idx[oh, ow] = best_index


@jit(parallel=True)
def max_pool_backward(dout, argmax, dx):
    """dx = each window's gradient added onto its winner (zero elsewhere)."""
    n_batch, channels = dx.shape[0], dx.shape[1]
    out_h, out_w = dout.shape[2], dout.shape[3]
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = dx[n, c].reshape(-1)
        plane[:] = 0
        grad, idx = dout[n, c], argmax[n, c]
        for oh in range(out_h):
            for ow in range(out_w):
                plane[idx[oh, ow]] += grad[oh, ow]


@jit(parallel=True)
def avg_pool_forward(x, geom, out):
    """out = window sums / (kernel_h * kernel_w): padded cells count in the divisor."""
    kh, kw, sh, sw, ph, pw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, channels, height, width = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    area = out.dtype.type(kh * kw)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        src, dst = x[n, c], out[n, c]
        for oh in range(out_h):
            r0, r1 = _window(oh, sh, ph, kh, height)
            for ow in range(out_w):
                c0, c1 = _window(ow, sw, pw, kw, width)
                total = dst.dtype.type(0)
                for r in range(r0, r1):
                    for col in range(c0, c1):
                        total += src[r, col]
                dst[oh, ow] = total / area


@jit(parallel=True)
def avg_pool_backward(dout, geom, dx):
    """dx = each window's gradient / area spread over its in-bounds cells."""
    kh, kw, sh, sw, ph, pw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    n_batch, channels, height, width = dx.shape
    out_h, out_w = dout.shape[2], dout.shape[3]
    area = dx.dtype.type(kh * kw)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane, grad = dx[n, c], dout[n, c]
        plane[...] = 0
        for oh in range(out_h):
            r0, r1 = _window(oh, sh, ph, kh, height)
            for ow in range(out_w):
                c0, c1 = _window(ow, sw, pw, kw, width)
                share = grad[oh, ow] / area
                for r in range(r0, r1):
                    for col in range(c0, c1):
                        plane[r, col] += share
