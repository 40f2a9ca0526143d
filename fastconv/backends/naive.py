"""The reference backend: explicit loops written to be read, against which every other backend is tested."""
from __future__ import annotations

import numpy as np


def _padded(x, pad_h, pad_w):
    return np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))


def _conv_windows(x_shape, w_shape, p):
    """Yield (n, f, oh, ow, channel slice, row slice, col slice) for every output cell."""
    n_batch, c, _, _ = x_shape
    f_total, c_per_group, kh, kw = w_shape
    f_per_group = f_total // p.groups
    for n in range(n_batch):
        for f in range(f_total):
            g = f // f_per_group
            channels = slice(g * c_per_group, (g + 1) * c_per_group)
            for oh in range(p.out_h):
                h0 = oh * p.stride_h
                rows = slice(h0, h0 + p.dil_h * (kh - 1) + 1, p.dil_h)
                for ow in range(p.out_w):
                    w0 = ow * p.stride_w
                    cols = slice(w0, w0 + p.dil_w * (kw - 1) + 1, p.dil_w)
                    yield n, f, oh, ow, channels, rows, cols


def conv2d_forward(x, w, b, p):
    xp = _padded(x, p.pad_h, p.pad_w)
    out = np.zeros((x.shape[0], w.shape[0], p.out_h, p.out_w), x.dtype)
    for n, f, oh, ow, channels, rows, cols in _conv_windows(x.shape, w.shape, p):
        out[n, f, oh, ow] = np.sum(xp[n, channels, rows, cols] * w[f])
    if b is not None:
        out += b[None, :, None, None]
    return out, None


def conv2d_backward(dout, x, w, ctx, p, has_bias, need_dx=True):
    xp = _padded(x, p.pad_h, p.pad_w)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n, f, oh, ow, channels, rows, cols in _conv_windows(x.shape, w.shape, p):
        grad = dout[n, f, oh, ow]
        dw[f] += grad * xp[n, channels, rows, cols]
        if need_dx:
            dxp[n, channels, rows, cols] += grad * w[f]
    dx = dxp[:, :, p.pad_h:p.pad_h + x.shape[2], p.pad_w:p.pad_w + x.shape[3]].copy() if need_dx else None
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def _pool_windows(x_shape, p):
    """Yield (oh, ow, in-bounds rows, in-bounds cols) for every pooling window."""
    _, _, h, w = x_shape
    for oh in range(p.out_h):
        h0 = oh * p.stride_h - p.pad_h
        rows = range(max(h0, 0), min(h0 + p.kernel_h, h))
        for ow in range(p.out_w):
            w0 = ow * p.stride_w - p.pad_w
            yield oh, ow, rows, range(max(w0, 0), min(w0 + p.kernel_w, w))


def max_pool2d_forward(x, p):
    n_batch, c = x.shape[:2]
    out = np.empty((n_batch, c, p.out_h, p.out_w), x.dtype)
    # argmax[n, c, oh, ow] = flat (row * W + col) index of the window's winner in x[n, c]
    argmax = np.empty(out.shape, np.int64)
    for n in range(n_batch):
        for ch in range(c):
            plane = x[n, ch]
            for oh, ow, rows, cols in _pool_windows(x.shape, p):
                # Padding is -inf, which never beats anything, so only in-bounds cells compete.
                # PyTorch's rule: start at the first in-bounds cell with -inf; a strictly larger
                # value or any NaN takes over (so ties keep the first maximum, NaN propagates).
                best, best_index = -np.inf, rows[0] * x.shape[3] + cols[0]
                for r in rows:
                    for col in cols:
                        value = plane[r, col]
                        if value > best or np.isnan(value):
                            best, best_index = value, r * x.shape[3] + col
                out[n, ch, oh, ow] = best
                argmax[n, ch, oh, ow] = best_index
    return out, argmax


def max_pool2d_backward(dout, x, argmax, p):
    dx = np.zeros_like(x)
    n_batch, c, _, width = x.shape
    for n in range(n_batch):
        for ch in range(c):
            for oh in range(p.out_h):
                for ow in range(p.out_w):
                    r, col = divmod(int(argmax[n, ch, oh, ow]), width)
                    dx[n, ch, r, col] += dout[n, ch, oh, ow]
    return dx


def avg_pool2d_forward(x, p):
    out = np.empty((x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    area = p.kernel_h * p.kernel_w  # count_include_pad: padded zeros count in the divisor
    for oh, ow, rows, cols in _pool_windows(x.shape, p):
        window = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
        out[:, :, oh, ow] = window.sum(axis=(2, 3)) / area
    return out, None


def avg_pool2d_backward(dout, x, ctx, p):
    dx = np.zeros_like(x)
    area = p.kernel_h * p.kernel_w
    for oh, ow, rows, cols in _pool_windows(x.shape, p):
        dx[:, :, rows.start:rows.stop, cols.start:cols.stop] += (dout[:, :, oh, ow] / area)[:, :, None, None]
    return dx


# ------------------------------------------------------- the rest of a training step (numpy)
def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dout, out):
    return np.where(out > 0, dout, 0).astype(dout.dtype, copy=False)


def affine_forward(x2, w, b):
    out = x2 @ w
    if b is not None:
        out += b
    return out


def affine_backward(dout, x2, w, has_bias):
    dx2 = dout @ w.T
    dw = (dout.T @ x2).T if w.flags.f_contiguous and not w.flags.c_contiguous else x2.T @ dout
    return dx2, dw, dout.sum(axis=0) if has_bias else None


def batch_norm_train_forward(x3, gamma, beta, eps, relu):
    """x3 (N, C, L): statistics per channel over N and L; returns (out, mean, biased var)."""
    mean = x3.mean(axis=(0, 2))
    centered = x3 - mean[:, None]
    var = (centered * centered).mean(axis=(0, 2))
    inv_std = 1 / np.sqrt(var + x3.dtype.type(eps))
    out = centered * (gamma * inv_std)[:, None] + beta[:, None]
    return (np.maximum(out, 0) if relu else out), mean, var


def batch_norm_eval_forward(x3, scale, shift, relu):
    out = x3 * scale[:, None] + shift[:, None]
    return np.maximum(out, 0) if relu else out


def batch_norm_backward(dout3, x3, relu_out, mean, inv_std, gamma, training):
    dy = dout3 if relu_out is None else relu_backward(dout3, relu_out)
    x_hat = (x3 - mean[:, None]) * inv_std[:, None]
    dbeta = dy.sum(axis=(0, 2))
    dgamma = (dy * x_hat).sum(axis=(0, 2))
    if not training:  # the statistics are constants
        return dy * (gamma * inv_std)[:, None], dgamma, dbeta
    count = x3.shape[0] * x3.shape[2]
    dx = (gamma * inv_std / count)[:, None] * (count * dy - dbeta[:, None] - x_hat * dgamma[:, None])
    return dx, dgamma, dbeta


def softmax_cross_entropy(scores, y):
    """Per-row losses and the gradient of their mean."""
    rows = np.arange(scores.shape[0])
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    losses = log_norm - shifted[rows, y]
    dscores = np.exp(shifted - log_norm[:, None])
    dscores[rows, y] -= 1
    dscores /= scores.dtype.type(max(scores.shape[0], 1))
    return losses, dscores


# Optimizer updates: flat arrays, w and the state arrays updated in place.
def sgd_update(w, dw, lr):
    w -= w.dtype.type(lr) * dw


def sgd_momentum_update(w, dw, velocity, lr, momentum):
    velocity *= velocity.dtype.type(momentum)
    velocity -= velocity.dtype.type(lr) * dw
    w += velocity


def rmsprop_update(w, dw, cache, lr, decay, eps):
    real = w.dtype.type
    cache *= real(decay)
    cache += real(1 - decay) * dw * dw
    w -= real(lr) * dw / (np.sqrt(cache) + real(eps))


def adam_update(w, dw, m, v, lr, beta1, beta2, eps, bias1, bias2):
    real = w.dtype.type
    m *= real(beta1)
    m += real(1 - beta1) * dw
    v *= real(beta2)
    v += real(1 - beta2) * dw * dw
    w -= real(lr) * (m / real(bias1)) / (np.sqrt(v / real(bias2)) + real(eps))
