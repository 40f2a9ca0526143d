"""Shape cases for conv and pooling, the benchmark suites, their inputs, every tolerance, result comparison."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._params import conv_out_size


def pair(value) -> tuple:
    """An int or an (h, w) pair as a tuple of two ints."""
    return (value, value) if np.ndim(value) == 0 else tuple(value)


class ConvCase(NamedTuple):
    """One conv2d call: shapes and arguments; stride/padding/dilation are ints or (h, w) pairs."""

    name: str
    x_shape: tuple  # (N, C, H, W)
    w_shape: tuple  # (F, C // groups, KH, KW)
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True

    def kwargs(self) -> dict:
        """The keyword arguments of conv2d_forward besides the arrays."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def out_shape(self) -> tuple:
        (sh, sw), (ph, pw), (dh, dw) = pair(self.stride), pair(self.padding), pair(self.dilation)
        n, _, h, w = self.x_shape
        f, _, kh, kw = self.w_shape
        return n, f, conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)

    def flops(self) -> float:
        """Multiply-adds x 2 of the forward pass."""
        n, f, out_h, out_w = self.out_shape()
        _, c_group, kh, kw = self.w_shape
        return 2.0 * n * f * out_h * out_w * c_group * kh * kw

    def inputs(self, dtype=np.float64, seed=0) -> tuple:
        """(x, w, b, dout): standard-normal x, b and dout, He-scaled w; b is None without bias."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x_shape).astype(dtype)
        fan_in = int(np.prod(self.w_shape[1:]))
        w = (rng.standard_normal(self.w_shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        b = rng.standard_normal(self.w_shape[0]).astype(dtype) if self.bias else None
        dout = rng.standard_normal(self.out_shape()).astype(dtype)
        return x, w, b, dout


class PoolCase(NamedTuple):
    """One pooling call (max or average); stride None means stride = kernel_size."""

    name: str
    x_shape: tuple  # (N, C, H, W)
    kernel_size: object
    stride: object = None
    padding: object = 0

    def kwargs(self) -> dict:
        """The keyword arguments of max_pool2d_forward / avg_pool2d_forward besides x."""
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def out_shape(self) -> tuple:
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)
        sh, sw = pair(self.kernel_size if self.stride is None else self.stride)
        n, c, h, w = self.x_shape
        return n, c, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)

    def flops(self) -> float:
        """Operations of the forward pass: one per window cell (a compare or an add)."""
        n, c, out_h, out_w = self.out_shape()
        kh, kw = pair(self.kernel_size)
        return float(n * c * out_h * out_w * kh * kw)

    def inputs(self, dtype=np.float64, seed=0) -> tuple:
        """(x, dout), standard normal."""
        rng = np.random.default_rng(seed)
        return rng.standard_normal(self.x_shape).astype(dtype), rng.standard_normal(self.out_shape()).astype(dtype)


# The suite the performance targets are stated on.
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

# Every tolerance the tests and the bench compare by, by name. Agreement tolerances (keyword
# arguments of assert_allclose) are keyed by dtype name; gradient checks through
# nn.gradient_check.rel_error are bounds on the relative error.
TOLERANCES = {
    # Two implementations of one op (assert_close): float32 sums taken in different orders differ
    # by a few ulps of the magnitudes involved, so atol is scaled by the result's magnitude.
    "float32": dict(rtol=2e-4, atol=2e-4),
    "float64": dict(rtol=1e-10, atol=1e-10),
    # The scalar loss of two implementations (relative).
    "loss-float32": 1e-5,
    "loss-float64": 1e-12,
    # nn's float32 modules on a fast backend against the same modules on the naive reference.
    "module-float32": dict(rtol=1e-4, atol=1e-5),
    # nn's float64 parameter gradients against PyTorch's for the same network.
    "torch-gradient-float64": dict(rtol=1e-10, atol=1e-12),
    # Conv and pooling backward against central differences (float64): conv is linear in each
    # argument, so they agree up to the rounding of the summed output (~1e-9); max-pool is linear
    # away from ties, which the inputs avoid.
    "conv-pool-gradient": dict(rtol=1e-6, atol=1e-7),
    # rel_error bounds, analytic against numerical gradients (float64):
    "layer-gradient": 1e-7,  # one nn layer or module
    "step-gradient": 1e-6,  # fastconv's training-step ops: through a normalization ~1e-7 at best
    "model-gradient": 1e-6,  # composed models: a little above the per-layer bound
    "backward-variants": 1e-9,  # two analytic implementations of one backward
}


def tolerance(kind):
    """``TOLERANCES[kind]``; a dtype stands for its agreement tolerance."""
    return TOLERANCES[kind if isinstance(kind, str) else np.dtype(kind).name]


def assert_close(actual, expected, dtype=None, err_msg=""):
    """assert_allclose with the per-dtype agreement tolerance, atol scaled by the magnitude of ``expected``."""
    tol = tolerance(np.dtype(dtype or expected.dtype))
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=err_msg)


def assert_results_close(actual, expected, dtype=None, exact=False):
    """Each of the results ``actual`` against the same one of ``expected``: as many results; None where
    the other is None; else the same shape and dtype and values within the per-dtype agreement
    tolerance (``exact``: equal, NaN where NaN)."""
    actual, expected = tuple(actual), tuple(expected)
    assert len(actual) == len(expected), f"{len(actual)} results, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(actual, expected)):
        name = f"result {index}"
        if got is None or want is None:
            assert got is None and want is None, f"{name}: expected {'None' if want is None else 'an array'}"
            continue
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}"
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert_close(got, want, dtype=dtype, err_msg=name)


def max_abs_error(outputs: tuple, expected: tuple) -> float:
    """Largest absolute difference over all outputs (inf when a shape or a missing output differs)."""
    worst = 0.0
    for actual, wanted in zip(outputs, expected):
        if actual is None and wanted is None:
            continue
        if actual is None or wanted is None or np.shape(actual) != np.shape(wanted):
            return float("inf")
        difference = np.abs(np.asarray(actual, np.float64) - np.asarray(wanted, np.float64))
        worst = max(worst, float(np.max(difference, initial=0.0)))
    return worst
