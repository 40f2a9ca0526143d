"""Every backend, naive included, against PyTorch's autograd as an independent oracle."""
import numpy as np
import pytest

from fastconv.testing import (CONV_GRID, MAX_POOL_SPECIAL_KINDS, POOL_GRID, assert_close, config_conv_inputs,
                              config_pool_inputs, conv2d_results, max_pool_special_inputs, pool2d_results,
                              torch_conv2d_results, torch_pool2d_results)

pytest.importorskip("torch")

POOL_OPS = ("max_pool2d", "avg_pool2d")


def names(configs):
    return [cfg.name for cfg in configs]


@pytest.mark.parametrize("cfg", CONV_GRID, ids=names(CONV_GRID))
def test_conv2d_matches_torch(backend, dtype, cfg):
    x, w, b, dout = config_conv_inputs(cfg, dtype, seed=1)
    expected = torch_conv2d_results(x, w, b, dout, **cfg.kwargs())
    actual = conv2d_results(x, w, b, dout, backend, **cfg.kwargs())
    for name, got, want in zip(("out", "dx", "dw", "db"), actual, expected):
        if want is None:
            assert got is None, f"{name} must be None without bias"
            continue
        assert got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=names(POOL_GRID))
def test_pool2d_matches_torch(backend, dtype, op, cfg):
    x, dout = config_pool_inputs(cfg, dtype, seed=1)
    expected = torch_pool2d_results(op, x, dout, **cfg.kwargs())
    actual = pool2d_results(op, x, dout, backend, **cfg.kwargs())
    for name, got, want in zip(("out", "dx"), actual, expected):
        assert got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


@pytest.mark.parametrize("kind", MAX_POOL_SPECIAL_KINDS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=names(POOL_GRID))
def test_max_pool2d_ties_nan_inf_match_torch_exactly(backend, dtype, kind, cfg):
    # PyTorch sends a tied window's gradient to its first maximum and lets NaN win; the
    # integer-valued dout keeps gradient sums exact, so any other routing is a mismatch.
    x, dout = max_pool_special_inputs(kind, cfg, dtype, seed=1)
    expected = torch_pool2d_results("max_pool2d", x, dout, **cfg.kwargs())
    actual = pool2d_results("max_pool2d", x, dout, backend, **cfg.kwargs())
    for name, got, want in zip(("out", "dx"), actual, expected):
        np.testing.assert_array_equal(got, want, err_msg=name)
