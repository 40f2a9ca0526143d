"""Conv as a few wide GEMMs on numpy's all-thread BLAS, around a backend's own parallel kernels.

For the layers where one GEMM per thread is a poor deal: a pointwise conv is nothing but
GEMMs (``pointwise_forward``/``pointwise_backward``, used by both compiled backends); a deep
conv on a small image gives each thread short, packing-bound GEMMs (``forward``/``backward``,
the numba backend's choice there). In ``forward``/``backward`` the samples of a step sit
side by side as the columns of one matrix, so every product is as wide as the workspace
allows (measured: float64 res-c128 forward and backward ~20 % faster than sample by sample);
a pointwise conv multiplies each sample's image in place instead, since moving it into and
out of the wide layout costs more than the wider GEMM saves (~25 % on the 1x1 case). The
caller supplies three parallel kernels (``Kernels``):

- ``im2col(x_part, cols)``: ``cols[:, n*P:(n+1)*P]`` = the im2col matrix of ``x_part[n]``
  (cols: (C*KH*KW, n*P), P = OH*OW);
- ``col2im(cols, dx_part)``: overwrite ``dx_part`` with the scatter-add of those columns;
- ``swap(src, dst)``: ``dst[b, a, :] = src[a, b, :]``, between (n, F, P) and (F, n, P).

The GEMMs run between them, outside any parallel region, so BLAS uses every thread without
oversubscribing. Each GEMM output element has one writer and numpy's BLAS splits rows and
columns, not the sum, across its threads, so results are reproducible at a fixed thread count.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import _workspace
from ._workspace import scratch


class Kernels(NamedTuple):
    im2col: Callable
    col2im: Callable
    swap: Callable


def is_pointwise(w_shape, p) -> bool:
    """1x1 kernel, stride 1, no padding: x[n] viewed as (C, H*W) is already its im2col matrix."""
    return w_shape[2:] == (1, 1) and (p.stride_h, p.stride_w, p.pad_h, p.pad_w) == (1, 1, 0, 0)


def _steps(n_batch: int, bytes_per_sample: int, reserved: int = 0) -> list[slice]:
    """Equal steps of the batch whose scratch fits the workspace limit beside ``reserved`` bytes."""
    most = max(1, min(n_batch, (_workspace.WORKSPACE_LIMIT_BYTES - reserved) // max(1, bytes_per_sample)))
    n_steps = -(-n_batch // most)
    size = -(-n_batch // n_steps)
    return [slice(s0, min(n_batch, s0 + size)) for s0 in range(0, n_batch, size)]


def _wide(slot: str, rows: int, n: int, positions: int, dtype) -> np.ndarray:
    return scratch(slot, (rows, n * positions), dtype)


def _grouped(matrix: np.ndarray, groups: int) -> np.ndarray:
    """(rows, cols) as (G, rows/G, cols): per-group GEMM operands (a view)."""
    return matrix.reshape(groups, matrix.shape[0] // groups, matrix.shape[1])


def _as_samples(matrix: np.ndarray, n: int) -> np.ndarray:
    """(rows, n*P) as (rows, n, P) (a view)."""
    return matrix.reshape(matrix.shape[0], n, -1)


def _columns(x_part, w_shape, p, kernels: Kernels) -> np.ndarray:
    n, channels = x_part.shape[:2]
    cols = _wide("big_gemms.cols", channels * w_shape[2] * w_shape[3], n, p.out_h * p.out_w, x_part.dtype)
    kernels.im2col(x_part, cols)
    return cols


def _per_sample(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, H, W) as (N, G, C/G, H*W): a pointwise conv's per-sample, per-group operands."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def _bytes_per_sample(x, w, p) -> int:
    return (x.shape[1] * w.shape[2] * w.shape[3] + w.shape[0]) * p.out_h * p.out_w * x.itemsize


def forward(x, w, b, p, kernels: Kernels):
    n_filters, positions = w.shape[0], p.out_h * p.out_w
    if is_pointwise(w.shape, p):
        return pointwise_forward(x, w, b, p)
    out = np.empty((x.shape[0], n_filters, p.out_h, p.out_w), x.dtype)
    weights = w.reshape(p.groups, n_filters // p.groups, -1)
    for part in _steps(x.shape[0], _bytes_per_sample(x, w, p)):
        n = part.stop - part.start
        cols = _columns(x[part], w.shape, p, kernels)
        product = _wide("big_gemms.out", n_filters, n, positions, x.dtype)
        np.matmul(weights, _grouped(cols, p.groups), out=_grouped(product, p.groups))
        kernels.swap(_as_samples(product, n), out[part].reshape(n, n_filters, positions))
    if b is not None:
        out += b[:, None, None]
    return out


def backward(dout, x, w, p, has_bias, kernels: Kernels):
    if is_pointwise(w.shape, p):
        return pointwise_backward(dout, x, w, p, has_bias)
    groups, n_filters, positions = p.groups, w.shape[0], p.out_h * p.out_w
    weights = w.reshape(groups, n_filters // groups, -1)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = np.empty_like(x)
    dw = np.zeros(weights.shape, x.dtype)
    products = scratch("big_gemms.dw", weights.shape, x.dtype)
    for part in _steps(x.shape[0], _bytes_per_sample(x, w, p), products.nbytes):
        n = part.stop - part.start
        cols = _columns(x[part], w.shape, p, kernels)
        grads = _wide("big_gemms.out", n_filters, n, positions, x.dtype)
        kernels.swap(dout[part].reshape(n, n_filters, positions), _as_samples(grads, n))
        np.matmul(_grouped(grads, groups), _grouped(cols, groups).transpose(0, 2, 1), out=products)
        dw += products
        # The columns are dead now: their gradients overwrite them.
        np.matmul(weights.transpose(0, 2, 1), _grouped(grads, groups), out=_grouped(cols, groups))
        kernels.col2im(cols, dx[part])
    return dx, dw.reshape(w.shape), db


def pointwise_forward(x, w, b, p):
    """A pointwise conv: out[n] = w @ x[n] per group, x[n] being its own im2col matrix."""
    out = np.empty((x.shape[0], w.shape[0], p.out_h, p.out_w), x.dtype)
    weights = w.reshape(p.groups, w.shape[0] // p.groups, -1)
    np.matmul(weights, _per_sample(x, p.groups), out=_per_sample(out, p.groups))
    if b is not None:
        out += b[:, None, None]
    return out


def pointwise_backward(dout, x, w, p, has_bias):
    """dx, dw, db of a pointwise conv: per-sample products, the per-sample dw summed in order."""
    groups = p.groups
    weights = w.reshape(groups, w.shape[0] // groups, -1)
    dx = np.empty_like(x)
    dout_mats, x_mats, dx_mats = (_per_sample(a, groups) for a in (dout, x, dx))
    np.matmul(weights.transpose(0, 2, 1), dout_mats, out=dx_mats)
    dw = np.zeros(weights.shape, x.dtype)
    for part in _steps(x.shape[0], weights.size * x.itemsize):
        products = scratch("big_gemms.dw", (part.stop - part.start, *weights.shape), x.dtype)
        np.matmul(dout_mats[part], x_mats[part].transpose(0, 1, 3, 2), out=products)
        dw += products.sum(axis=0)
    return dx, dw.reshape(w.shape), dout.sum(axis=(0, 2, 3)) if has_bias else None
