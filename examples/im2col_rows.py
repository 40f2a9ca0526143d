"""A conv2d variant for fastconv in pure NumPy: im2col with one ROW per output pixel (patch-major columns).

fastconv's own im2col lays the columns out as (C*KH*KW, N*OH*OW), one column per output pixel;
here each output pixel's patch is a row, (N*OH*OW, C*KH*KW), as many textbooks write it. The
kernels follow fastconv's backend protocol (see fastconv.backends): arrays arrive validated and
C-contiguous, ``p`` holds stride, padding, dilation, groups and the output size. Pooling is not
defined here, so fastconv runs its fallback backend's (im2col) for it.

    fastconv check examples/im2col_rows.py                      # the conformance grid
    fastconv bench --backend-module examples/im2col_rows.py     # timed beside the built-in backends
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _patch_rows(x, w_shape, p):
    """(G, N*OH*OW, C/G*KH*KW): each output pixel's receptive field as one row, per group."""
    n, c = x.shape[:2]
    _, c_group, kh, kw = w_shape
    padded = np.pad(x, ((0, 0), (0, 0), (p.pad_h, p.pad_h), (p.pad_w, p.pad_w)))
    span = (p.dil_h * (kh - 1) + 1, p.dil_w * (kw - 1) + 1)
    windows = sliding_window_view(padded, span, axis=(2, 3))  # (N, C, H', W', span_h, span_w)
    windows = windows[:, :, ::p.stride_h, ::p.stride_w, ::p.dil_h, ::p.dil_w][:, :, :p.out_h, :p.out_w]
    groups = windows.reshape(n, p.groups, c_group, p.out_h, p.out_w, kh, kw)
    rows = groups.transpose(1, 0, 3, 4, 2, 5, 6)  # (G, N, OH, OW, C/G, KH, KW)
    return rows.reshape(p.groups, n * p.out_h * p.out_w, c_group * kh * kw)


def _group_weights(w, groups):
    """(G, C/G*KH*KW, F/G): the weights as the right-hand side of the row-major product."""
    return w.reshape(groups, w.shape[0] // groups, -1).transpose(0, 2, 1)


def _to_nchw(per_group, n, p):
    """(G, N*OH*OW, F/G) -> (N, F, OH, OW)."""
    g, _, f_group = per_group.shape
    return per_group.reshape(g, n, p.out_h, p.out_w, f_group).transpose(1, 0, 4, 2, 3).reshape(
        n, g * f_group, p.out_h, p.out_w)


def conv2d_forward(x, w, b, p):
    rows = _patch_rows(x, w.shape, p)
    out = _to_nchw(rows @ _group_weights(w, p.groups), x.shape[0], p)
    if b is not None:
        out += b[None, :, None, None]
    return out, rows  # the rows are the context: backward reuses them (and never writes to them)


def conv2d_backward(dout, x, w, rows, p, has_bias, need_dx=True):
    n, c, h, width = x.shape
    f, c_group, kh, kw = w.shape
    g = p.groups
    # dout as (G, N*OH*OW, F/G), the layout of the forward's product.
    drows_out = dout.reshape(n, g, f // g, p.out_h * p.out_w).transpose(1, 0, 3, 2).reshape(g, -1, f // g)
    dw = (drows_out.transpose(0, 2, 1) @ rows).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    drows = drows_out @ _group_weights(w, g).transpose(0, 2, 1)  # (G, N*OH*OW, C/G*KH*KW)
    patches = drows.reshape(g, n, p.out_h, p.out_w, c_group, kh, kw).transpose(1, 0, 4, 5, 6, 2, 3)
    patches = patches.reshape(n, c, kh, kw, p.out_h, p.out_w)
    dpadded = np.zeros((n, c, h + 2 * p.pad_h, width + 2 * p.pad_w), x.dtype)
    for i in range(kh):  # col2im: every kernel tap adds its gradients back where it read
        for j in range(kw):
            top, left = i * p.dil_h, j * p.dil_w
            dpadded[:, :, top:top + p.stride_h * p.out_h:p.stride_h,
                    left:left + p.stride_w * p.out_w:p.stride_w] += patches[:, :, i, j]
    return np.ascontiguousarray(dpadded[:, :, p.pad_h:p.pad_h + h, p.pad_w:p.pad_w + width]), dw, db
