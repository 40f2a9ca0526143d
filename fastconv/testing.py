"""Shared by tests and benchmarks: the shape suite, input makers and per-dtype tolerances."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ConvCase(NamedTuple):
    name: str
    x_shape: tuple  # (N, C, H, W)
    w_shape: tuple  # (F, C // groups, KH, KW)
    stride: int
    padding: int
    dilation: int = 1
    groups: int = 1

    def flops(self) -> float:
        """Multiply-adds x 2 of the forward pass."""
        n, _, h, w = self.x_shape
        f, cg, kh, kw = self.w_shape
        oh = (h + 2 * self.padding - self.dilation * (kh - 1) - 1) // self.stride + 1
        ow = (w + 2 * self.padding - self.dilation * (kw - 1) - 1) // self.stride + 1
        return 2.0 * n * f * oh * ow * cg * kh * kw


class PoolCase(NamedTuple):
    name: str
    x_shape: tuple
    kernel_size: int
    stride: int
    padding: int = 0


# The suite the performance targets are stated on (name, x NCHW, w FCHW, stride, pad).
CONV_SUITE = (
    ConvCase("cs231n-s2", (100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    ConvCase("cs231n-s1", (100, 3, 32, 32), (25, 3, 3, 3), 1, 1),
    ConvCase("lenet-c1", (64, 1, 28, 28), (20, 1, 5, 5), 1, 0),
    ConvCase("vgg-c64", (32, 64, 32, 32), (64, 64, 3, 3), 1, 1),
    ConvCase("res-c128", (16, 128, 16, 16), (128, 128, 3, 3), 1, 1),
    ConvCase("down-s2", (16, 64, 32, 32), (128, 64, 3, 3), 2, 1),
    ConvCase("1x1", (32, 256, 14, 14), (64, 256, 1, 1), 1, 0),
    ConvCase("stem-7x7", (8, 3, 224, 224), (64, 3, 7, 7), 2, 3),
)

# Small enough for the naive reference.
CONV_SMALL = (
    ConvCase("small-s2", (10, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    ConvCase("small-dil-groups", (4, 8, 17, 15), (12, 4, 3, 3), 1, 2, dilation=2, groups=2),
    ConvCase("small-depthwise", (4, 16, 16, 16), (16, 1, 3, 3), 1, 1, groups=16),
)

POOL_SUITE = (
    PoolCase("pool2-s2", (32, 64, 32, 32), 2, 2),
    PoolCase("pool3-s2", (16, 64, 56, 56), 3, 2),
    PoolCase("pool2-cs231n", (100, 25, 32, 32), 2, 2),
)

POOL_SMALL = (
    PoolCase("small-pool2", (8, 8, 16, 16), 2, 2),
    PoolCase("small-pool3-pad", (4, 8, 15, 15), 3, 2, 1),
)

# Agreement between backends: float32 sums in different orders differ by a few ulps of the
# magnitudes involved, so tolerances are relative to the scale of the result.
TOLERANCES = {np.dtype(np.float32): dict(rtol=2e-4, atol=2e-4), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10)}


def tolerance(dtype) -> dict:
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, dtype=None, scale=None, err_msg=""):
    """assert_allclose with the per-dtype tolerance, atol scaled by the magnitude of ``expected``."""
    tol = tolerance(dtype or expected.dtype)
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=err_msg)


def conv_inputs(case: ConvCase, dtype=np.float64, seed=0, bias=True):
    """(x, w, b, dout) for ``case``: standard-normal inputs, He-scaled weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    fan_in = int(np.prod(case.w_shape[1:]))
    w = (rng.standard_normal(case.w_shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    b = rng.standard_normal(case.w_shape[0]).astype(dtype) if bias else None
    n, _, h, wd = case.x_shape
    kh, kw = case.w_shape[2:]
    oh = (h + 2 * case.padding - case.dilation * (kh - 1) - 1) // case.stride + 1
    ow = (wd + 2 * case.padding - case.dilation * (kw - 1) - 1) // case.stride + 1
    dout = rng.standard_normal((n, case.w_shape[0], oh, ow)).astype(dtype)
    return x, w, b, dout


def pool_inputs(case: PoolCase, dtype=np.float64, seed=0):
    """(x, dout) for ``case``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    n, c, h, w = case.x_shape
    oh = (h + 2 * case.padding - case.kernel_size) // case.stride + 1
    ow = (w + 2 * case.padding - case.kernel_size) // case.stride + 1
    dout = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    return x, dout


def numeric_gradient(f, x, dout, h=1e-6):
    """Central-difference gradient of ``sum(f(x) * dout)`` with respect to ``x`` (float64)."""
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = np.sum(f(x) * dout)
        flat_x[i] = old - h
        minus = np.sum(f(x) * dout)
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * h)
    return grad
