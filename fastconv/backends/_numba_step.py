"""Jitted kernels of the numba backend for the rest of a training step (ReLU, affine, batch norm, loss, optimizers)."""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._numba_runtime import jit

# The cython backend's design (_cy_layers.pyx), so that both give the same answers: elementwise
# kernels walk fixed chunks of the flat arrays; batch norm gives each thread whole channels (a
# channel's statistics are summed by one thread in one order, so they do not depend on the thread
# count); affine cuts its GEMMs by rows of the result, one single-threaded BLAS call per part.
# One kernel serves float32 and float64: scalars are cast to the arrays' dtype first, because
# Numba computes float32 with a float64 or an int in float64.

# Elements per chunk of an elementwise kernel: a few L1-sized pieces of work per thread.
CHUNK = 8192


def use_threads(count: int) -> None:
    """Run this Python thread's next parallel kernels on ``count`` threads (Numba's count is
    thread-local), so that small calls leave the pool asleep."""
    count = max(1, min(count, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != count:
        numba.set_num_threads(count)


@jit()
def _chunks(size):
    return (size + CHUNK - 1) // CHUNK


# Loops run over range(len) of a chunk's slices: Numba cannot drop its negative-index check for
# computed indices, and that check alone stops vectorization (as in _numba_conv).
@jit()
def _chunk(flat, k):
    return flat[k * CHUNK:(k + 1) * CHUNK]


# ------------------------------------------------------------------------------------ ReLU
@jit(parallel=True)
def relu_forward(x, out):
    """out = max(x, 0) on flat arrays; `<= 0 -> 0`: NaN stays NaN and -0.0 becomes 0, as in PyTorch."""
    zero = x.dtype.type(0)
    for k in prange(_chunks(x.shape[0])):
        src, dst = _chunk(x, k), _chunk(out, k)
        for i in range(src.shape[0]):
            dst[i] = zero if src[i] <= 0 else src[i]


@jit(parallel=True)
def relu_backward(dout, out, dx):
    """dx = dout where out > 0, else 0 (flat arrays)."""
    zero = dout.dtype.type(0)
    for k in prange(_chunks(dout.shape[0])):
        grad, mask, dst = _chunk(dout, k), _chunk(out, k), _chunk(dx, k)
        for i in range(grad.shape[0]):
            value = grad[i]  # loaded unconditionally: a select, not a branch (see _masked)
            dst[i] = value if mask[i] > 0 else zero


# ---------------------------------------------------------------------------------- affine
@jit()
def _part(total, parts, t):
    """Start of part t of ``parts`` near-equal parts of range(total)."""
    return t * total // parts


@jit(parallel=True)
def affine_forward(x2, w, w_transposed, bias, out, parts):
    """out = x2 @ w (+ bias, if not empty), its rows cut into ``parts``; w (D, M) is C- or
    Fortran-ordered (w_transposed: np.dot reads either, so it only keeps cython's arguments).
    N, D and M are >= 1 (the caller handles empty ones)."""
    n = x2.shape[0]
    for t in prange(parts):
        r0, r1 = _part(n, parts, t), _part(n, parts, t + 1)
        if r1 > r0:
            rows = out[r0:r1]
            np.dot(x2[r0:r1], w, rows)
            if bias.shape[0] > 0:
                for r in range(rows.shape[0]):
                    row = rows[r]
                    for j in range(row.shape[0]):
                        row[j] += bias[j]


@jit(parallel=True)
def affine_backward(dout, x2, w, w_transposed, dx2, dw_c, parts):
    """dx2 = dout @ w.T and dw_c = dw (C order), or with w_transposed dw.T (so dw has w's
    order): dw_c = left.T @ right with (left, right) = (x2, dout), or (dout, x2). The rows of
    each result are cut into ``parts``; a part's rows of dw_c need a column block of ``left``,
    which is copied: np.dot takes no leading dimension, and the copy costs a 1/M (or 1/D)
    fraction of the GEMM. N, D and M are >= 1.
    """
    left, right = (dout, x2) if w_transposed else (x2, dout)
    n, depth = dout.shape[0], dw_c.shape[0]
    for t in prange(parts):
        r0, r1 = _part(n, parts, t), _part(n, parts, t + 1)
        if r1 > r0:
            np.dot(dout[r0:r1], w.T, dx2[r0:r1])
        d0, d1 = _part(depth, parts, t), _part(depth, parts, t + 1)
        if d1 > d0:
            np.dot(np.ascontiguousarray(left[:, d0:d1]).T, right, dw_c[d0:d1])


# ------------------------------------------------------------------------------ batch norm
# x3 is (N, C, L): channel c of sample n is the run x3[n, c] (L = 1 for (N, C) inputs).
# Each run is summed in 8 interleaved partial sums (``lanes``, a scratch of 8) combined in a
# fixed order, as the cython backend's _sum: a single running sum would wait on each add's
# latency. The runs' sums add up across samples in float64.

@jit()
def _combine(lanes):
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


@jit()
def _sum_dev(run, center, squared, lanes):
    """sum(run - center), or sum((run - center)**2) when ``squared``."""
    lanes[:] = 0
    body = run.shape[0] - run.shape[0] % 8
    for i in range(0, body, 8):
        for u in range(8):
            d = run[i + u] - center
            lanes[u] += d * d if squared else d
    for i in range(body, run.shape[0]):
        d = run[i] - center
        lanes[0] += d * d if squared else d
    return _combine(lanes)


@jit()
def _scale_shift(src, scale, shift, relu, dst):
    zero = dst.dtype.type(0)
    for i in range(src.shape[0]):
        v = src[i] * scale + shift
        dst[i] = (zero if v <= 0 else v) if relu else v


@jit(parallel=True)
def batch_norm_train_forward(x3, gamma, beta, eps, relu, out, mean, var):
    """out = gamma * (x - mean) / sqrt(var + eps) + beta per channel (then ReLU if asked), with
    the batch mean and biased variance (two passes) over N and L, written to mean and var."""
    n_batch, channels, length = x3.shape
    real = x3.dtype.type
    count = n_batch * length
    for c in prange(channels):
        lanes = np.empty(8, x3.dtype)
        total = 0.0
        for n in range(n_batch):
            total += _sum_dev(x3[n, c], real(0), False, lanes)
        mu = real(total / count)
        total = 0.0
        for n in range(n_batch):
            total += _sum_dev(x3[n, c], mu, True, lanes)
        sigma2 = real(total / count)
        scale = gamma[c] / np.sqrt(sigma2 + real(eps))
        shift = beta[c] - mu * scale
        for n in range(n_batch):
            _scale_shift(x3[n, c], scale, shift, relu, out[n, c])
        mean[c] = mu
        var[c] = sigma2


@jit(parallel=True)
def batch_norm_eval_forward(x3, scale, shift, relu, out):
    """out = x * scale + shift per channel (then ReLU if asked), one (sample, channel) run per task."""
    channels = x3.shape[1]
    for plane in prange(x3.shape[0] * channels):
        n, c = plane // channels, plane % channels
        _scale_shift(x3[n, c], scale[c], shift[c], relu, out[n, c])


@jit()
def _grad_past_relu(dout, relu_flat, base, relu, dy):
    """dy = dout, zero where the fused ReLU's output (relu_flat[base:], read only with ``relu``)
    was not positive."""
    zero = dy.dtype.type(0)
    for i in range(dy.shape[0]):
        # The value first, then a select: a load under a condition makes a branch, and a random
        # mask mispredicts half of them (measured: 7x slower).
        value = dout[i]
        dy[i] = value if not relu or relu_flat[base + i] > 0 else zero


@jit()
def _grad_sums(dy, x, center, lanes_dy, lanes_dyx):
    """(sum(dy), sum(dy * (x - center))) over one run."""
    lanes_dy[:] = 0
    lanes_dyx[:] = 0
    body = x.shape[0] - x.shape[0] % 8
    for i in range(0, body, 8):
        for u in range(8):
            lanes_dy[u] += dy[i + u]
            lanes_dyx[u] += dy[i + u] * (x[i + u] - center)
    for i in range(body, x.shape[0]):
        lanes_dy[0] += dy[i]
        lanes_dyx[0] += dy[i] * (x[i] - center)
    return _combine(lanes_dy), _combine(lanes_dyx)


@jit(parallel=True)
def batch_norm_backward(dout3, x3, relu_flat, mean, inv_std, gamma, training, dx, dgamma, dbeta):
    """dx, dgamma, dbeta of batch norm, through its ReLU when relu_flat (the flat forward
    output) is not empty; training: the statistics were the batch's, else constants. dx holds
    the gradient reaching the batch norm first (as the cython kernel): a channel's rows stay
    in cache between the passes."""
    n_batch, channels, length = x3.shape
    relu = relu_flat.shape[0] > 0
    real = x3.dtype.type
    count = real(n_batch * length)
    for c in prange(channels):
        lanes_dy, lanes_dyx = np.empty(8, x3.dtype), np.empty(8, x3.dtype)
        center, inv = mean[c], inv_std[c]
        sum_dy = 0.0
        sum_dyx = 0.0
        for n in range(n_batch):
            _grad_past_relu(dout3[n, c], relu_flat, (n * channels + c) * length, relu, dx[n, c])
            dy, dyx = _grad_sums(dx[n, c], x3[n, c], center, lanes_dy, lanes_dyx)
            sum_dy += dy
            sum_dyx += dyx
        sum_dy_c, sum_dyx_c = real(sum_dy), real(sum_dyx * inv)  # the latter = sum(dy * x_hat)
        dbeta[c], dgamma[c] = sum_dy_c, sum_dyx_c
        scale = gamma[c] * inv
        k = scale / count
        for n in range(n_batch):
            src, dst = x3[n, c], dx[n, c]
            for i in range(src.shape[0]):
                if training:  # dx = gamma * inv_std / M * (M * dy - sum(dy) - x_hat * sum(dy * x_hat))
                    dst[i] = k * (count * dst[i] - sum_dy_c - (src[i] - center) * inv * sum_dyx_c)
                else:  # the statistics are constants
                    dst[i] = dst[i] * scale


# -------------------------------------------------------------------------------- the loss
@jit(parallel=True)
def softmax_cross_entropy(scores, y, losses, dscores):
    """Per row: losses[r] = logsumexp(scores[r]) - scores[r, y[r]]; dscores = (softmax - onehot) / N."""
    n, classes = scores.shape
    real = scores.dtype.type
    inv_n = real(1) / real(max(n, 1))
    for r in prange(n):
        row, grad = scores[r], dscores[r]
        top = row[0]
        for j in range(1, classes):
            if row[j] > top or row[j] != row[j]:  # a NaN takes over, and then stays
                top = row[j]
        total = real(0)
        for j in range(classes):
            grad[j] = np.exp(row[j] - top)
            total += grad[j]
        losses[r] = np.log(total) - (row[y[r]] - top)
        for j in range(classes):
            grad[j] = grad[j] / total * inv_n
        grad[y[r]] -= inv_n


# --------------------------------------------------------------------- optimizer updates
# Flat arrays, updated in place, with the reference's operations in its order.
@jit(parallel=True)
def sgd_update(w, dw, lr):
    rate = w.dtype.type(lr)
    for k in prange(_chunks(w.shape[0])):
        w_k, dw_k = _chunk(w, k), _chunk(dw, k)
        for i in range(w_k.shape[0]):
            w_k[i] -= rate * dw_k[i]


@jit(parallel=True)
def sgd_momentum_update(w, dw, velocity, lr, momentum):
    real = w.dtype.type
    rate, mu = real(lr), real(momentum)
    for k in prange(_chunks(w.shape[0])):
        w_k, dw_k, v_k = _chunk(w, k), _chunk(dw, k), _chunk(velocity, k)
        for i in range(w_k.shape[0]):
            v_k[i] = v_k[i] * mu - rate * dw_k[i]
            w_k[i] += v_k[i]


@jit(parallel=True)
def rmsprop_update(w, dw, cache, lr, decay, eps):
    real = w.dtype.type
    rate, rho, keep, epsilon = real(lr), real(decay), real(1 - decay), real(eps)
    for k in prange(_chunks(w.shape[0])):
        w_k, dw_k, c_k = _chunk(w, k), _chunk(dw, k), _chunk(cache, k)
        for i in range(w_k.shape[0]):
            c_k[i] = c_k[i] * rho + keep * dw_k[i] * dw_k[i]
            w_k[i] -= rate * dw_k[i] / (np.sqrt(c_k[i]) + epsilon)


@jit(parallel=True)
def adam_update(w, dw, m, v, lr, beta1, beta2, eps, bias1, bias2):
    real = w.dtype.type
    rate, b1, b2, keep1, keep2 = real(lr), real(beta1), real(beta2), real(1 - beta1), real(1 - beta2)
    c1, c2, epsilon = real(bias1), real(bias2), real(eps)
    for k in prange(_chunks(w.shape[0])):
        w_k, dw_k, m_k, v_k = _chunk(w, k), _chunk(dw, k), _chunk(m, k), _chunk(v, k)
        for i in range(w_k.shape[0]):
            m_k[i] = m_k[i] * b1 + keep1 * dw_k[i]
            v_k[i] = v_k[i] * b2 + keep2 * dw_k[i] * dw_k[i]
            w_k[i] -= rate * (m_k[i] / c1) / (np.sqrt(v_k[i] / c2) + epsilon)
