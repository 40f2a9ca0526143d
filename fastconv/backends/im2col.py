"""The im2col backend: strided copies into a reused column workspace, batched BLAS products, pooling by kernel offsets.

Conv forward copies each batch chunk's windows into ``cols`` of shape (n, G, K, OH*OW) with
K = C/G * KH * KW (one copy per kernel offset, clipped to the image so padding needs no padded
copy), then one batched matmul ``(G, F/G, K) @ (n, G, K, OH*OW)`` writes the output in NCHW
layout directly. With a bias, cols get a row of ones and the weights a bias column, so the
same product adds the bias and, in backward, the dw product also yields db.
Pooling walks the KH*KW kernel offsets with whole-plane ufuncs (measured ~8x faster here than
a reshape's max/sum over the two window axes); max-pool keeps each window's winner as a small
int. Non-overlapping unpadded windows take a reshape fast path where it pays (avg backward is
one broadcast divide into the tiled dx); non-overlapping max-pool backward assigns, not adds.
"""
from __future__ import annotations

import numpy as np

from .. import _tuning
from . import _workspace
from ._strided import Offset, batches, kernel_offsets, outside
from ._workspace import scratch



# ----------------------------------------------------------------------------------- conv2d
def _conv_offsets(in_hw, w_shape, p):
    return kernel_offsets(in_hw, (p.out_h, p.out_w), w_shape[2:], (p.stride_h, p.stride_w),
                          (p.pad_h, p.pad_w), (p.dil_h, p.dil_w))


def _im2col(x, w_shape, p, ones_row: bool) -> np.ndarray:
    """Columns (n, G, K [+1 row of ones], OH*OW) of x's windows, padding as zeros: a workspace view."""
    n, _, h, width = x.shape
    _, c_group, kh, kw = w_shape
    g, k = p.groups, c_group * kh * kw
    if p.is_pointwise and not ones_row:
        return x.reshape(n, g, k, h * width)  # a pointwise conv's columns are the image itself
    cols = scratch("im2col.cols", (n, g, k + ones_row, p.out_h * p.out_w), x.dtype)
    planes = cols[:, :, :k].reshape(n, g, c_group, kh, kw, p.out_h, p.out_w)
    images = x.reshape(n, g, c_group, h, width)
    for off in _conv_offsets((h, width), w_shape, p):
        plane = planes[:, :, :, off.i, off.j]
        off.at_out(plane)[...] = off.at_in(images)
        for rows, columns in outside((p.out_h, p.out_w), off.out):
            plane[..., rows, columns] = 0
    if ones_row:
        cols[:, :, k] = 1
    return cols


def _col2im_add(dcols, dx, w_shape, p) -> None:
    """dx += the scatter of column gradients (n, G, K, OH*OW) back onto the image (n, C, H, W)."""
    n, _, h, width = dx.shape
    _, c_group, kh, kw = w_shape
    planes = dcols.reshape(n, p.groups, c_group, kh, kw, p.out_h, p.out_w)
    images = dx.reshape(n, p.groups, c_group, h, width)
    for off in _conv_offsets((h, width), w_shape, p):
        target = off.at_in(images)
        target += off.at_out(planes[:, :, :, off.i, off.j])


def _conv_batches(x, w, p, ones_row: bool, grad_rows: int = 0):
    """Batch slices whose workspaces (cols, plus per-sample dw partials) fit the limit."""
    _, c_group, kh, kw = w.shape
    k = c_group * kh * kw + ones_row
    per_sample = (p.groups * k * p.out_h * p.out_w + grad_rows * k) * x.itemsize
    return batches(x.shape[0], per_sample, min(_tuning.IM2COL_COLS_CHUNK_BYTES, _workspace.WORKSPACE_LIMIT_BYTES))


def conv2d_forward(x, w, b, p):
    n, f = x.shape[0], w.shape[0]
    g, has_bias = p.groups, b is not None
    weights = w.reshape(g, f // g, -1)
    if has_bias:
        weights = np.concatenate([weights, b.reshape(g, f // g, 1)], axis=2)
    out = np.empty((n, f, p.out_h, p.out_w), x.dtype)
    out_mat = out.reshape(n, g, f // g, p.out_h * p.out_w)
    for chunk in _conv_batches(x, w, p, has_bias):
        np.matmul(weights, _im2col(x[chunk], w.shape, p, has_bias), out=out_mat[chunk])
    return out, None


def conv2d_backward(dout, x, w, ctx, p, has_bias, need_dx=True):
    n, f = x.shape[0], w.shape[0]
    g, k = p.groups, w[0].size
    f_group = f // g
    # [dw | db] per group: the bias row of ones in cols turns the dw product's last column into db.
    grads = np.zeros((g, f_group, k + has_bias), x.dtype)
    dx = np.zeros_like(x) if need_dx else None
    dout_mat = dout.reshape(n, g, f_group, p.out_h * p.out_w)
    w_t = w.reshape(g, f_group, k).transpose(0, 2, 1)
    for chunk in _conv_batches(x, w, p, has_bias, grad_rows=f):
        cols = _im2col(x[chunk], w.shape, p, has_bias)
        partial = scratch("im2col.dw", (cols.shape[0], g, f_group, k + has_bias), x.dtype)
        np.matmul(dout_mat[chunk], cols.transpose(0, 1, 3, 2), out=partial)
        grads += partial.sum(axis=0)
        if not need_dx:
            continue
        # cols are dead now: the column gradients reuse their workspace.
        dcols = scratch("im2col.cols", (cols.shape[0], g, k, p.out_h * p.out_w), x.dtype)
        np.matmul(w_t, dout_mat[chunk], out=dcols)
        _col2im_add(dcols, dx[chunk], w.shape, p)
    dw = np.ascontiguousarray(grads[..., :k]).reshape(w.shape)
    db = grads[..., k].reshape(f).copy() if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------------------------- pooling
def _pool_offsets(x, p) -> list[Offset]:
    return list(kernel_offsets(x.shape[2:], (p.out_h, p.out_w), (p.kernel_h, p.kernel_w),
                               (p.stride_h, p.stride_w), (p.pad_h, p.pad_w)))


def _tiles(x, p):
    """Fast path: unpadded windows with stride == kernel, as a reshape view (N, C, OH, KH, OW, KW)."""
    if p.pad_h or p.pad_w or (p.stride_h, p.stride_w) != (p.kernel_h, p.kernel_w):
        return None
    n, c = x.shape[:2]
    cropped = x[:, :, :p.out_h * p.kernel_h, :p.out_w * p.kernel_w]
    return cropped.reshape(n, c, p.out_h, p.kernel_h, p.out_w, p.kernel_w)


def _pool_batches(x, p, bytes_per_out_cell: int):
    return batches(x.shape[0], x.shape[1] * p.out_h * p.out_w * bytes_per_out_cell)


def max_pool2d_forward(x, p):
    n, c = x.shape[:2]
    out = np.empty((n, c, p.out_h, p.out_w), x.dtype)
    # ctx: the winner's row-major position inside its window, in the smallest int type.
    argmax = np.empty(out.shape, np.min_scalar_type(p.kernel_h * p.kernel_w - 1))
    offsets = _pool_offsets(x, p)
    for chunk in _pool_batches(x, p, 1):
        _max_pool_chunk(x[chunk], out[chunk], argmax[chunk], offsets, p)
    return out, argmax


def _max_pool_chunk(x, out, argmax, offsets, p) -> None:
    out.fill(-np.inf)  # padding is -inf and never wins, so only in-bounds cells compete
    for off in offsets:
        np.maximum(off.at_out(out), off.at_in(x), out=off.at_out(out))
    # np.maximum propagates NaN, as PyTorch does. The winner is the FIRST cell equal to
    # the maximum: walking the window backwards, the last match to be written is the first.
    mask = scratch("im2col.mask", out.shape, np.bool_)
    for off in reversed(offsets):
        np.equal(off.at_in(x), off.at_out(out), out=off.at_out(mask))
        np.copyto(off.at_out(argmax), off.k, where=off.at_out(mask))
    if np.isnan(out).any():  # PyTorch's rule: any NaN takes over, so the LAST NaN wins
        for off in offsets:
            # x != x is isnan; np.isnan(..., out=<strided bool view>) miscomputes in numpy 2.4.
            cells = off.at_in(x)
            np.not_equal(cells, cells, out=off.at_out(mask))
            np.copyto(off.at_out(argmax), off.k, where=off.at_out(mask))


def max_pool2d_backward(dout, x, argmax, p):
    dx = np.zeros_like(x)
    offsets = _pool_offsets(x, p)
    for chunk in _pool_batches(x, p, 1):
        grad, winners, target = dout[chunk], argmax[chunk], dx[chunk]
        mask = scratch("im2col.mask", grad.shape, np.bool_)
        for off in offsets:
            np.equal(off.at_out(winners), off.k, out=off.at_out(mask))
            cells = off.at_in(target)
            if p.overlapping:  # a cell may win several windows: accumulate
                np.add(cells, off.at_out(grad), out=cells, where=off.at_out(mask))
            else:
                np.copyto(cells, off.at_out(grad), where=off.at_out(mask))
    return dx


def avg_pool2d_forward(x, p):
    out = np.zeros((x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    for off in _pool_offsets(x, p):
        np.add(off.at_out(out), off.at_in(x), out=off.at_out(out))
    out /= p.kernel_h * p.kernel_w  # count_include_pad: padded zeros count in the divisor
    return out, None


def avg_pool2d_backward(dout, x, ctx, p):
    area = p.kernel_h * p.kernel_w
    fast = _tiles(x, p) is not None
    tiles_cover_x = fast and (p.out_h * p.kernel_h, p.out_w * p.kernel_w) == x.shape[2:]
    dx = np.empty_like(x) if tiles_cover_x else np.zeros_like(x)
    if fast:
        np.divide(dout[:, :, :, None, :, None], area, out=_tiles(dx, p))
        return dx
    offsets = _pool_offsets(x, p)
    for chunk in _pool_batches(x, p, x.itemsize):
        share = np.divide(dout[chunk], area, out=scratch("im2col.share", dout[chunk].shape, x.dtype))
        target = dx[chunk]
        for off in offsets:
            cells = off.at_in(target)
            cells += off.at_out(share)
    return dx
