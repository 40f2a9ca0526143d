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


# --- Argument grids for correctness tests: tiny shapes (the naive reference runs them), every
# argument of the interface, ints or (h, w) pairs.

def pair(value) -> tuple:
    """An int or an (h, w) pair as a tuple of two ints."""
    return (value, value) if np.ndim(value) == 0 else tuple(value)


class ConvConfig(NamedTuple):
    """One conv2d call of a correctness test; stride/padding/dilation are ints or pairs."""

    name: str
    x_shape: tuple
    w_shape: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def out_shape(self) -> tuple:
        (sh, sw), (ph, pw), (dh, dw) = pair(self.stride), pair(self.padding), pair(self.dilation)
        n, _, h, w = self.x_shape
        f, _, kh, kw = self.w_shape
        return (n, f, (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


class PoolConfig(NamedTuple):
    """One pooling call of a correctness test; stride None means stride = kernel_size."""

    name: str
    x_shape: tuple
    kernel_size: object
    stride: object = None
    padding: object = 0

    def kwargs(self) -> dict:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def out_shape(self) -> tuple:
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)
        sh, sw = pair(self.kernel_size if self.stride is None else self.stride)
        n, c, h, w = self.x_shape
        return (n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


CONV_GRID = (
    ConvConfig("basic", (2, 3, 7, 7), (4, 3, 3, 3), 1, 1),
    ConvConfig("pairs", (2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (1, 0), (1, 2)),
    ConvConfig("groups", (2, 6, 7, 7), (4, 3, 3, 3), 1, 1, groups=2),
    ConvConfig("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), 1, 1, groups=4),
    ConvConfig("depthwise-multiplier", (1, 3, 5, 5), (6, 1, 2, 2), 1, 0, groups=3),
    ConvConfig("no-bias", (2, 3, 6, 5), (2, 3, 3, 3), 1, 1, bias=False),
    ConvConfig("odd-sizes", (3, 3, 11, 13), (5, 3, 5, 3), (3, 2), (2, 1)),
    ConvConfig("batch1-1x1", (1, 2, 5, 5), (3, 2, 1, 1)),
    ConvConfig("kernel-is-input", (2, 3, 5, 6), (4, 3, 5, 6)),
    ConvConfig("stride-over-kernel", (2, 2, 9, 9), (3, 2, 2, 2), 4),
    ConvConfig("large-padding", (1, 2, 3, 3), (2, 2, 3, 3), 1, 4),
    ConvConfig("kernel-over-input", (1, 1, 2, 2), (1, 1, 4, 4), 1, 1),
    ConvConfig("dilation", (2, 2, 9, 9), (2, 2, 3, 3), 1, 2, 3),
    ConvConfig("everything", (2, 4, 8, 7), (6, 2, 3, 2), (2, 3), (2, 1), (2, 1), groups=2),
    ConvConfig("groups-no-bias", (1, 4, 5, 5), (2, 2, 2, 3), (1, 2), (0, 1), groups=2, bias=False),
    # Dilated kernel wider than the input: its last column of taps only ever reads padding.
    ConvConfig("taps-only-in-padding", (1, 2, 7, 5), (1, 2, 2, 4), 1, 3, 3, bias=False),
    # 3x3 / stride 1 with >= 16 channels and filters: cython's Winograd path, odd tile edges.
    ConvConfig("winograd", (2, 16, 7, 6), (16, 16, 3, 3), 1, 1),
    ConvConfig("winograd-pads", (3, 17, 5, 9), (18, 17, 3, 3), 1, (0, 2), bias=False),
)

POOL_GRID = (
    PoolConfig("k2", (2, 3, 8, 8), 2),
    PoolConfig("k3-s2-p1-odd", (2, 2, 9, 7), 3, 2, 1),
    PoolConfig("pairs-overlapping", (2, 2, 7, 8), (2, 3), (1, 2), (1, 1)),
    PoolConfig("k3-s1-p1", (1, 3, 6, 5), 3, 1, 1),
    PoolConfig("kernel-is-input", (1, 2, 5, 6), (5, 6)),
    PoolConfig("stride-over-kernel", (2, 2, 9, 9), 2, 3),
    PoolConfig("leftover-rows", (1, 2, 7, 5), 2),
    PoolConfig("k1", (1, 2, 3, 4), 1),
    PoolConfig("k4-p2", (1, 1, 6, 6), 4, None, 2),
    PoolConfig("pairs-stride-none", (3, 1, 7, 9), (3, 2), None, (1, 0)),
)


def config_conv_inputs(cfg: ConvConfig, dtype=np.float64, seed=0):
    """(x, w, b, dout) for a ConvConfig; ``b`` is None when ``cfg.bias`` is False."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg.x_shape).astype(dtype)
    w = rng.standard_normal(cfg.w_shape).astype(dtype)
    b = rng.standard_normal(cfg.w_shape[0]).astype(dtype) if cfg.bias else None
    dout = rng.standard_normal(cfg.out_shape()).astype(dtype)
    return x, w, b, dout


def config_pool_inputs(cfg: PoolConfig, dtype=np.float64, seed=0):
    """(x, dout) for a PoolConfig."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(cfg.x_shape).astype(dtype),
            rng.standard_normal(cfg.out_shape()).astype(dtype))


def conv2d_results(x, w, b, dout, backend=None, **kwargs):
    """(out, dx, dw, db) of one conv2d forward + backward on ``backend``."""
    from . import _api
    out, cache = _api.conv2d_forward(x, w, b, backend=backend, **kwargs)
    return (out, *_api.conv2d_backward(dout, cache))


def pool2d_results(op, x, dout, backend=None, **kwargs):
    """(out, dx) of one ``op`` ("max_pool2d" or "avg_pool2d") forward + backward on ``backend``."""
    from . import _api
    out, cache = getattr(_api, op + "_forward")(x, backend=backend, **kwargs)
    return out, getattr(_api, op + "_backward")(dout, cache)


def torch_conv2d_results(x, w, b, dout, stride=1, padding=0, dilation=1, groups=1):
    """(out, dx, dw, db) computed by PyTorch's autograd: the independent oracle (needs torch)."""
    import torch
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    out = torch.nn.functional.conv2d(tx, tw, tb, pair(stride), pair(padding), pair(dilation), groups)
    out.backward(torch.tensor(dout))
    db = None if tb is None else tb.grad.numpy()
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), db


def torch_pool2d_results(op, x, dout, kernel_size, stride=None, padding=0):
    """(out, dx) of PyTorch's ``max_pool2d`` / ``avg_pool2d`` (count_include_pad=True)."""
    import torch
    tx = torch.tensor(x, requires_grad=True)
    stride = kernel_size if stride is None else stride
    out = getattr(torch.nn.functional, op)(tx, pair(kernel_size), pair(stride), pair(padding))
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy()


MAX_POOL_SPECIAL_KINDS = ("ties", "constant-planes", "nan", "neg-inf", "nan-and-inf")


def max_pool_special_inputs(kind: str, cfg: PoolConfig, dtype=np.float64, seed=0):
    """(x, dout) that exercise max-pool's tie rule and NaN/inf handling.

    ``dout`` holds small integers, so gradient sums are exact in any order and backends can
    be compared bit for bit.
    """
    rng = np.random.default_rng(seed)
    shape = cfg.x_shape
    if kind == "ties":
        x = rng.integers(-1, 2, shape).astype(dtype)
    elif kind == "constant-planes":
        x = np.broadcast_to(rng.integers(-3, 4, shape[:2])[:, :, None, None], shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
        if kind in ("nan", "nan-and-inf"):
            x[rng.random(shape) < 0.2] = np.nan
        if kind in ("neg-inf", "nan-and-inf"):
            x[rng.random(shape) < 0.4] = -np.inf
            x[0, 0] = -np.inf  # a whole plane of -inf: every window's first cell must win
        if kind == "nan-and-inf":
            x[rng.random(shape) < 0.1] = np.inf
    dout = rng.integers(-3, 4, cfg.out_shape()).astype(dtype)
    return x, dout
