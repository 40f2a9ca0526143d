"""Every backend against the naive reference on a fixed grid: conv and both pools, forward and backward."""
import numpy as np
import pytest

import fastconv
from fastconv.testing import (CONV_GRID, MAX_POOL_SPECIAL_KINDS, POOL_GRID, assert_close, config_conv_inputs,
                              config_pool_inputs, conv2d_results, max_pool_special_inputs, pool2d_results)

POOL_OPS = ("max_pool2d", "avg_pool2d")
CONV_RESULT_NAMES = ("out", "dx", "dw", "db")


def names(configs):
    return [cfg.name for cfg in configs]


@pytest.mark.parametrize("cfg", CONV_GRID, ids=names(CONV_GRID))
def test_conv2d_matches_naive(fast_backend, dtype, cfg):
    x, w, b, dout = config_conv_inputs(cfg, dtype)
    expected = conv2d_results(x, w, b, dout, "naive", **cfg.kwargs())
    actual = conv2d_results(x, w, b, dout, fast_backend, **cfg.kwargs())
    for name, got, want in zip(CONV_RESULT_NAMES, actual, expected):
        if want is None:
            assert got is None, f"{name} must be None without bias"
            continue
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=names(POOL_GRID))
def test_pool2d_matches_naive(fast_backend, dtype, op, cfg):
    x, dout = config_pool_inputs(cfg, dtype)
    expected = pool2d_results(op, x, dout, "naive", **cfg.kwargs())
    actual = pool2d_results(op, x, dout, fast_backend, **cfg.kwargs())
    for name, got, want in zip(("out", "dx"), actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


@pytest.mark.parametrize("kind", MAX_POOL_SPECIAL_KINDS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=names(POOL_GRID))
def test_max_pool2d_ties_nan_inf_match_naive_exactly(fast_backend, dtype, kind, cfg):
    # Integer-valued dout makes every gradient sum exact, so a gradient routed to another
    # tied cell, or a NaN not propagated, shows up as an exact mismatch.
    x, dout = max_pool_special_inputs(kind, cfg, dtype)
    expected = pool2d_results("max_pool2d", x, dout, "naive", **cfg.kwargs())
    actual = pool2d_results("max_pool2d", x, dout, fast_backend, **cfg.kwargs())
    for name, got, want in zip(("out", "dx"), actual, expected):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_auto_backend_matches_naive(dtype):
    cfg = next(cfg for cfg in CONV_GRID if cfg.name == "everything")
    x, w, b, dout = config_conv_inputs(cfg, dtype)
    expected = conv2d_results(x, w, b, dout, "naive", **cfg.kwargs())
    with fastconv.use_backend("auto"):
        actual = conv2d_results(x, w, b, dout, **cfg.kwargs())
    for name, got, want in zip(CONV_RESULT_NAMES, actual, expected):
        assert_close(got, want, err_msg=name)
