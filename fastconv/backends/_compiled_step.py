"""The Python side of the compiled backends' step kernels (ReLU, affine, batch norm, loss, updates).

What the wrappers settle: outputs, thread counts, the BLAS pin.

Both compiled backends implement the same kernels with the same arguments (inputs, outputs,
then scalars; ``_cy_layers.pyx`` and ``_numba_step.py``) and differ only in how a kernel is run
on a number of threads. So the wrappers with the reference's signatures live once, here.
Each call runs on as many threads as its work is worth (fastconv._tuning's GRAIN_*), down to
the calling thread alone for small tensors; affine GEMMs run one single-threaded BLAS call
per thread, never on numpy's BLAS, whose worker threads keep spinning after every call.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .._threads import inner_blas_single_threaded
from .._tuning import GRAIN_ELEMENTS, GRAIN_FLOPS

FUNCTIONS = ("relu_forward", "relu_backward", "affine_forward", "affine_backward", "batch_norm_train_forward",
             "batch_norm_eval_forward", "batch_norm_backward", "softmax_cross_entropy", "sgd_update",
             "sgd_momentum_update", "rmsprop_update", "adam_update")
_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


class CompiledStepKernels:
    """A compiled backend's step kernels behind the reference's signatures.

    ``kernels``: the module of compiled kernels; ``run(kernel, threads, *args)`` runs one on
    ``threads`` threads; ``threads_for(work, grain)`` sizes a call's team.
    """

    def __init__(self, kernels, run: Callable, threads_for: Callable):
        self.kernels, self.run, self.threads_for = kernels, run, threads_for

    def export(self, namespace: dict) -> None:
        """Put every wrapper (FUNCTIONS) into a backend module's namespace."""
        for name in FUNCTIONS:
            namespace[name] = getattr(self, name)

    def _elementwise(self, size: int) -> int:
        return self.threads_for(size, GRAIN_ELEMENTS)

    def relu_forward(self, x):
        out = np.empty_like(x)
        self.run(self.kernels.relu_forward, self._elementwise(x.size), x.reshape(-1), out.reshape(-1))
        return out

    def relu_backward(self, dout, out):
        dx = np.empty_like(dout)
        self.run(self.kernels.relu_backward, self._elementwise(dout.size), dout.reshape(-1), out.reshape(-1),
                 dx.reshape(-1))
        return dx

    def _affine_team(self, n: int, depth: int, m: int) -> int:
        return min(self.threads_for(2.0 * n * depth * m, GRAIN_FLOPS), max(n, depth))

    def affine_forward(self, x2, w, b):
        n, depth = x2.shape
        m = w.shape[1]
        out = np.empty((n, m), x2.dtype)
        if n == 0 or m == 0 or depth == 0:
            out[...] = 0 if b is None else b
            return out
        threads = self._affine_team(n, depth, m)
        with inner_blas_single_threaded():
            self.run(self.kernels.affine_forward, threads, x2, w, not w.flags.c_contiguous,
                     _EMPTY[x2.dtype] if b is None else b, out, min(threads, n))
        return out

    def affine_backward(self, dout, x2, w, has_bias):
        """dw comes back in w's memory order (the transpose of a C array for a transposed w)."""
        n, depth = x2.shape
        m = w.shape[1]
        transposed = not w.flags.c_contiguous
        dx2 = np.empty_like(x2)
        dw_c = np.empty((m, depth) if transposed else (depth, m), x2.dtype)
        if n == 0 or m == 0 or depth == 0:
            dx2[...] = 0
            dw_c[...] = 0
        else:
            threads = self._affine_team(n, depth, m)
            with inner_blas_single_threaded():
                self.run(self.kernels.affine_backward, threads, dout, x2, w, transposed, dx2, dw_c, threads)
        return dx2, dw_c.T if transposed else dw_c, dout.sum(axis=0) if has_bias else None

    def _channel_team(self, x3) -> int:
        return min(self._elementwise(x3.size), x3.shape[1])

    def batch_norm_train_forward(self, x3, gamma, beta, eps, relu):
        out = np.empty_like(x3)
        mean = np.empty(x3.shape[1], x3.dtype)
        var = np.empty(x3.shape[1], x3.dtype)
        self.run(self.kernels.batch_norm_train_forward, self._channel_team(x3), x3, gamma, beta, eps, relu, out,
                 mean, var)
        return out, mean, var

    def batch_norm_eval_forward(self, x3, scale, shift, relu):
        out = np.empty_like(x3)
        self.run(self.kernels.batch_norm_eval_forward, self._elementwise(x3.size), x3, scale, shift, relu, out)
        return out

    def batch_norm_backward(self, dout3, x3, relu_out, mean, inv_std, gamma, training):
        dx = np.empty_like(x3)
        dgamma = np.empty(x3.shape[1], x3.dtype)
        dbeta = np.empty(x3.shape[1], x3.dtype)
        mask = _EMPTY[x3.dtype] if relu_out is None else relu_out.reshape(-1)
        self.run(self.kernels.batch_norm_backward, self._channel_team(x3), dout3, x3, mask, mean, inv_std, gamma,
                 training, dx, dgamma, dbeta)
        return dx, dgamma, dbeta

    def softmax_cross_entropy(self, scores, y):
        losses = np.empty(scores.shape[0], scores.dtype)
        dscores = np.empty_like(scores)
        self.run(self.kernels.softmax_cross_entropy, self._elementwise(scores.size), scores, y, losses, dscores)
        return losses, dscores

    def sgd_update(self, w, dw, lr):
        self.run(self.kernels.sgd_update, self._elementwise(w.size), w, dw, lr)

    def sgd_momentum_update(self, w, dw, velocity, lr, momentum):
        self.run(self.kernels.sgd_momentum_update, self._elementwise(w.size), w, dw, velocity, lr, momentum)

    def rmsprop_update(self, w, dw, cache, lr, decay, eps):
        self.run(self.kernels.rmsprop_update, self._elementwise(w.size), w, dw, cache, lr, decay, eps)

    def adam_update(self, w, dw, m, v, lr, beta1, beta2, eps, bias1, bias2):
        self.run(self.kernels.adam_update, self._elementwise(w.size), w, dw, m, v, lr, beta1, beta2, eps, bias1,
                 bias2)
