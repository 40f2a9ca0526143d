"""Tiny calls of every kernel of a step op (ReLU, affine, batch norm, ...): what compiles a JIT backend's kernels."""
from __future__ import annotations

import numpy as np


def step_kernels_call(module, op: str, char: str):
    """Every kernel of a step op's family on tiny inputs (what compiles a JIT backend's kernels for
    ``char``'s dtype); a kernel the backend lacks is the reference's and needs nothing."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(char)
    flat, c = x.reshape(-1), x.shape[1]

    def call(name, *args):
        kernel = getattr(module, name, None)
        return kernel(*args) if kernel is not None else None

    def run():
        if op == "relu":
            call("relu_backward", flat, call("relu_forward", flat))
        elif op == "affine":
            x2, w = x.reshape(2, 12), rng.standard_normal((12, 5)).astype(char)
            for weight in (w, np.asfortranarray(w)):
                call("affine_forward", x2, weight, None)
                call("affine_backward", x2[:, :5].copy(), x2, weight, True)
        elif op == "batch_norm":
            ones, zeros = np.ones(c, char), np.zeros(c, char)
            for relu in (False, True):
                out, mean, _ = call("batch_norm_train_forward", x, ones, zeros, 1e-5, relu) or (x, zeros, ones)
                call("batch_norm_eval_forward", x, ones, zeros, relu)
                for training in (True, False):
                    call("batch_norm_backward", x, x, out if relu else None, mean, ones, ones, training)
        elif op == "softmax_cross_entropy":
            call(op, x[0], np.zeros(3, np.int64))
        else:  # an optimizer update: w, dw, then its state arrays and hyperparameters
            states = {"sgd_update": 0, "sgd_momentum_update": 1, "rmsprop_update": 1, "adam_update": 2}[op]
            hyper = {"sgd_update": (0.1,), "sgd_momentum_update": (0.1, 0.9), "rmsprop_update": (0.1, 0.9, 1e-8),
                     "adam_update": (0.1, 0.9, 0.99, 1e-8, 0.1, 0.01)}[op]
            call(op, flat.copy(), flat, *[np.zeros_like(flat) for _ in range(states)], *hyper)
    return run
