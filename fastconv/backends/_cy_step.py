"""The cython backend's kernels for the rest of a training step, on the clean arrays the front passes.

Elementwise work and batch norm run on as many OpenMP threads as the work is worth
(``fastconv._threads.GRAIN_ELEMENTS`` per thread), so small tensors stay on the calling thread.
Affine GEMMs run on the same team as the convolutions, one single-threaded BLAS call per
thread, never on numpy's BLAS, whose worker threads would keep spinning after every call.
"""
from __future__ import annotations

import numpy as np

from .._threads import inner_blas_single_threaded
from .._tuning import GRAIN_ELEMENTS, GRAIN_FLOPS
from ._cy_runtime import _cy_layers, run, team_for

_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def _elementwise_team(size: int) -> int:
    return team_for(size, GRAIN_ELEMENTS)


def relu_forward(x):
    out = np.empty_like(x)
    run(_cy_layers.relu_forward, x.reshape(-1), out.reshape(-1), _elementwise_team(x.size))
    return out


def relu_backward(dout, out):
    dx = np.empty_like(dout)
    run(_cy_layers.relu_backward, dout.reshape(-1), out.reshape(-1), dx.reshape(-1), _elementwise_team(dout.size))
    return dx


def _affine_team(n: int, depth: int, m: int) -> int:
    return min(team_for(2.0 * n * depth * m, GRAIN_FLOPS), max(n, depth))


def affine_forward(x2, w, b):
    n, depth = x2.shape
    m = w.shape[1]
    out = np.empty((n, m), x2.dtype)
    if n == 0 or m == 0 or depth == 0:
        out[...] = 0 if b is None else b
        return out
    threads = _affine_team(n, depth, m)
    with inner_blas_single_threaded():
        run(_cy_layers.affine_forward, x2, w, not w.flags.c_contiguous, _EMPTY[x2.dtype] if b is None else b,
            out, min(threads, n), threads)
    return out


def affine_backward(dout, x2, w, has_bias):
    n, depth = x2.shape
    m = w.shape[1]
    transposed = not w.flags.c_contiguous
    dx2 = np.empty_like(x2)
    dw_c = np.empty((m, depth) if transposed else (depth, m), x2.dtype)
    if n == 0 or m == 0 or depth == 0:
        dx2[...] = 0
        dw_c[...] = 0
    else:
        threads = _affine_team(n, depth, m)
        with inner_blas_single_threaded():
            run(_cy_layers.affine_backward, dout, x2, w, transposed, dx2, dw_c, threads, threads)
    return dx2, dw_c.T if transposed else dw_c, dout.sum(axis=0) if has_bias else None


def _channel_team(x3) -> int:
    return min(_elementwise_team(x3.size), x3.shape[1])


def batch_norm_train_forward(x3, gamma, beta, eps, relu):
    out = np.empty_like(x3)
    mean = np.empty(x3.shape[1], x3.dtype)
    var = np.empty(x3.shape[1], x3.dtype)
    run(_cy_layers.batch_norm_train_forward, x3, gamma, beta, eps, relu, out, mean, var, _channel_team(x3))
    return out, mean, var


def batch_norm_eval_forward(x3, scale, shift, relu):
    out = np.empty_like(x3)
    run(_cy_layers.batch_norm_eval_forward, x3, scale, shift, relu, out, _elementwise_team(x3.size))
    return out


def batch_norm_backward(dout3, x3, relu_out, mean, inv_std, gamma, training):
    dx = np.empty_like(x3)
    dgamma = np.empty(x3.shape[1], x3.dtype)
    dbeta = np.empty(x3.shape[1], x3.dtype)
    mask = _EMPTY[x3.dtype] if relu_out is None else relu_out.reshape(-1)
    run(_cy_layers.batch_norm_backward, dout3, x3, mask, mean, inv_std, gamma, training, dx, dgamma, dbeta,
        _channel_team(x3))
    return dx, dgamma, dbeta


def softmax_cross_entropy(scores, y):
    losses = np.empty(scores.shape[0], scores.dtype)
    dscores = np.empty_like(scores)
    run(_cy_layers.softmax_cross_entropy, scores, y, losses, dscores, _elementwise_team(scores.size))
    return losses, dscores


def sgd_update(w, dw, lr):
    run(_cy_layers.sgd_update, w, dw, lr, _elementwise_team(w.size))


def sgd_momentum_update(w, dw, velocity, lr, momentum):
    run(_cy_layers.sgd_momentum_update, w, dw, velocity, lr, momentum, _elementwise_team(w.size))


def rmsprop_update(w, dw, cache, lr, decay, eps):
    run(_cy_layers.rmsprop_update, w, dw, cache, lr, decay, eps, _elementwise_team(w.size))


def adam_update(w, dw, m, v, lr, beta1, beta2, eps, bias1, bias2):
    run(_cy_layers.adam_update, w, dw, m, v, lr, beta1, beta2, eps, bias1, bias2, _elementwise_team(w.size))
