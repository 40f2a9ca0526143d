"""Generated configurations covering every argument: each backend against naive and against PyTorch."""
import numpy as np
import pytest

import fastconv
from fastconv.testing import (MAX_POOL_SPECIAL_KINDS, ConvConfig, PoolConfig, assert_close, config_conv_inputs,
                              config_pool_inputs, conv2d_results, max_pool_special_inputs, pair, pool2d_results,
                              torch_conv2d_results, torch_pool2d_results)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

BACKENDS = fastconv.available_backends()
FAST_BACKENDS = tuple(name for name in BACKENDS if name != "naive")
DTYPES = pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=("float32", "float64"))
POOL_OPS = pytest.mark.parametrize("op", ("max_pool2d", "avg_pool2d"))
MAX_SIDE = 9

# Derandomized and without an example database, so every run (CI included) sees the same cases.
CASES = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def int_or_pair(low, high):
    """An int or an (h, w) pair, as users pass them."""
    value = st.integers(low, high)
    return st.one_of(value, st.tuples(value, value))


def side_for(extent, pad, draw):
    """An image side that leaves at least one output position for a window of ``extent``."""
    low = max(1, extent - 2 * pad)
    return draw(st.integers(low, max(low, MAX_SIDE)))


@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    channels_per_group = draw(st.integers(1, 4 // groups))
    filters = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding, dilation = draw(int_or_pair(1, 4)), draw(int_or_pair(0, 3)), draw(int_or_pair(1, 3))
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    h = side_for(dh * (kh - 1) + 1, ph, draw)
    w = side_for(dw * (kw - 1) + 1, pw, draw)
    x_shape = (draw(st.integers(1, 3)), groups * channels_per_group, h, w)
    return ConvConfig("generated", x_shape, (filters, channels_per_group, kh, kw), stride, padding, dilation,
                      groups, draw(st.booleans()))


@st.composite
def pool_configs(draw):
    kernel = draw(int_or_pair(1, 4))
    kh, kw = pair(kernel)
    padding = draw(st.one_of(st.integers(0, min(kh, kw) // 2),
                             st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2))))
    stride = draw(st.one_of(st.none(), int_or_pair(1, 4)))
    ph, pw = pair(padding)
    x_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), side_for(kh, ph, draw), side_for(kw, pw, draw))
    return PoolConfig("generated", x_shape, kernel, stride, padding)


def pool_inputs(op, cfg, kind, dtype, seed):
    if op == "max_pool2d" and kind != "normal":
        return max_pool_special_inputs(kind, cfg, dtype, seed)
    return config_pool_inputs(cfg, dtype, seed)


def check_conv(actual, expected):
    for name, got, want in zip(("out", "dx", "dw", "db"), actual, expected):
        if want is None:
            assert got is None, f"{name} must be None without bias"
            continue
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


def check_pool(actual, expected, exact):
    for name, got, want in zip(("out", "dx"), actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if exact:  # special max-pool inputs come with an integer dout: sums are exact
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert_close(got, want, err_msg=name)


SEEDS = st.integers(0, 2**16)
KINDS = st.sampled_from(("normal",) + MAX_POOL_SPECIAL_KINDS)


@DTYPES
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@CASES
@given(cfg=conv_configs(), seed=SEEDS)
def test_conv2d_matches_naive(backend, dtype, cfg, seed):
    x, w, b, dout = config_conv_inputs(cfg, dtype, seed)
    check_conv(conv2d_results(x, w, b, dout, backend, **cfg.kwargs()),
               conv2d_results(x, w, b, dout, "naive", **cfg.kwargs()))


@POOL_OPS
@DTYPES
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@CASES
@given(cfg=pool_configs(), kind=KINDS, seed=SEEDS)
def test_pool2d_matches_naive(backend, dtype, op, cfg, kind, seed):
    x, dout = pool_inputs(op, cfg, kind, dtype, seed)
    check_pool(pool2d_results(op, x, dout, backend, **cfg.kwargs()),
               pool2d_results(op, x, dout, "naive", **cfg.kwargs()), exact=op == "max_pool2d" and kind != "normal")


@DTYPES
@pytest.mark.parametrize("backend", BACKENDS)
@CASES
@given(cfg=conv_configs(), seed=SEEDS)
def test_conv2d_matches_torch(backend, dtype, cfg, seed):
    pytest.importorskip("torch")
    x, w, b, dout = config_conv_inputs(cfg, dtype, seed)
    check_conv(conv2d_results(x, w, b, dout, backend, **cfg.kwargs()),
               torch_conv2d_results(x, w, b, dout, **cfg.kwargs()))


@POOL_OPS
@DTYPES
@pytest.mark.parametrize("backend", BACKENDS)
@CASES
@given(cfg=pool_configs(), kind=KINDS, seed=SEEDS)
def test_pool2d_matches_torch(backend, dtype, op, cfg, kind, seed):
    pytest.importorskip("torch")
    x, dout = pool_inputs(op, cfg, kind, dtype, seed)
    check_pool(pool2d_results(op, x, dout, backend, **cfg.kwargs()),
               torch_pool2d_results(op, x, dout, **cfg.kwargs()), exact=op == "max_pool2d" and kind != "normal")
