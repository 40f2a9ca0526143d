"""Numerical gradients by central differences, and the relative error used to compare gradients."""
from __future__ import annotations

import numpy as np


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function ``f`` at ``x`` by central differences.

    ``x`` is perturbed in place one entry at a time and restored; use float64 for meaningful
    results. With ``verbose`` each entry's index and gradient is printed.
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = f(x)
        x[index] = old - h
        f_minus = f(x)
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
        if verbose:
            print(index, grad[index])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient with respect to ``x`` of ``sum(f(x) * df)``, for an array-valued ``f``.

    ``df`` is the upstream gradient of ``f(x)``; ``x`` is perturbed in place and restored.
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = np.array(f(x), copy=True)
        x[index] = old - h
        f_minus = np.array(f(x), copy=True)
        x[index] = old
        grad[index] = np.sum((f_plus - f_minus) * df) / (2 * h)
    return grad


def rel_error(x, y):
    """Largest elementwise ``|x - y| / max(1e-8, |x| + |y|)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
