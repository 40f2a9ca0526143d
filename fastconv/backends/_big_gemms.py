"""Conv as a few big GEMMs on numpy's all-thread BLAS, around a backend's own parallel im2col/col2im.

Shared by the compiled backends for the layers where one GEMM per thread is a poor deal (a
pointwise conv is nothing but GEMMs; a deep conv on a small image gives each thread short,
packing-bound GEMMs). Each backend decides when to take this path and supplies its kernels:

- ``im2col(x_part, cols)``: fill ``cols`` (n, C*KH*KW, OH*OW) with the columns of ``x_part``.
- ``col2im(cols, dx_part)``: overwrite ``dx_part`` with the scatter-add of ``cols``.

Both run in parallel over (sample, channel) planes; the GEMMs run between them, outside any
parallel region, so BLAS uses every thread without oversubscribing. Each step's GEMM output
has one writer per element and numpy's BLAS splits rows and columns, not the sum, across its
threads, so results are reproducible at a fixed thread count.
"""
from __future__ import annotations

import numpy as np

from ._workspace import batch_chunk, scratch

# Columns of this many bytes per step: the GEMMs then read what the im2col just wrote from cache.
COLS_STEP_BYTES = 4 * 2**20


def is_pointwise(w_shape, p) -> bool:
    """1x1 kernel, stride 1, no padding: x[n] viewed as (C, H*W) is already its im2col matrix."""
    return w_shape[2:] == (1, 1) and (p.stride_h, p.stride_w, p.pad_h, p.pad_w) == (1, 1, 0, 0)


def _grouped_matrices(a, groups):
    """(N, C, ...) as (N, G, C/G, rest): per-group GEMM operands."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def _steps(n_batch, bytes_per_sample):
    step = batch_chunk(n_batch, bytes_per_sample, COLS_STEP_BYTES)
    return [slice(s0, min(n_batch, s0 + step)) for s0 in range(0, n_batch, step)]


def _columns(x_part, w_shape, p, im2col):
    """(n, C*KH*KW, OH*OW) columns of x_part: x itself for a pointwise conv, else a workspace."""
    if is_pointwise(w_shape, p):
        return x_part.reshape(x_part.shape[0], x_part.shape[1], -1)
    kh, kw = w_shape[2:]
    cols = scratch("big_gemms.cols", (x_part.shape[0], x_part.shape[1] * kh * kw, p.out_h * p.out_w), x_part.dtype)
    im2col(x_part, cols)
    return cols


def forward(x, w, b, p, im2col):
    out = np.empty((x.shape[0], w.shape[0], p.out_h, p.out_w), x.dtype)
    weights = w.reshape(p.groups, w.shape[0] // p.groups, -1)
    for part in _steps(x.shape[0], x.shape[1] * w[0, 0].size * out[0, 0].size * x.itemsize):
        cols = _columns(x[part], w.shape, p, im2col)
        np.matmul(weights, _grouped_matrices(cols, p.groups), out=_grouped_matrices(out[part], p.groups))
    if b is not None:
        out += b[:, None, None]
    return out


def backward(dout, x, w, p, has_bias, im2col, col2im):
    groups = p.groups
    weights = w.reshape(groups, w.shape[0] // groups, -1)
    dout_mats = _grouped_matrices(dout, groups)
    dx = np.empty_like(x)
    dw = np.zeros(weights.shape, x.dtype)
    pointwise = is_pointwise(w.shape, p)
    cols_bytes = x.shape[1] * w[0, 0].size * dout[0, 0].size * x.itemsize
    for part in _steps(x.shape[0], cols_bytes + weights.size * x.itemsize):
        cols = _columns(x[part], w.shape, p, im2col)
        col_mats = _grouped_matrices(cols, groups)
        products = scratch("big_gemms.dw", (cols.shape[0], *weights.shape), x.dtype)
        np.matmul(dout_mats[part], col_mats.transpose(0, 1, 3, 2), out=products)
        dw += products.sum(axis=0)
        # The columns are dead now: their gradients overwrite them (or land in dx directly).
        dcols = dx[part].reshape(cols.shape) if pointwise else cols
        np.matmul(weights.transpose(0, 2, 1), dout_mats[part], out=_grouped_matrices(dcols, groups))
        if not pointwise:
            col2im(cols, dx[part])
    return dx, dw.reshape(w.shape), dout.sum(axis=(0, 2, 3)) if has_bias else None
