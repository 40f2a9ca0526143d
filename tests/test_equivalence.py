"""Every backend against the naive reference on a fixed grid: conv and both pools, forward and backward."""
import numpy as np
import pytest

import fastconv
from fastconv.cases import assert_results_close
from fastconv.testing import (CONV_GRID, MAX_POOL_SPECIAL_KINDS, POOL_GRID, POOL_OPS, case_id, conv2d_results,
                              max_pool_special_inputs, naive_results, pool2d_results)


@pytest.mark.parametrize("cfg", CONV_GRID, ids=case_id)
def test_conv2d_matches_naive(fast_backend, dtype, cfg):
    actual = conv2d_results(*cfg.inputs(dtype), fast_backend, **cfg.kwargs())
    assert_results_close(actual, naive_results(cfg, dtype))


@pytest.mark.parametrize("cfg", CONV_GRID, ids=case_id)
def test_conv2d_backward_without_dx_gives_the_same_weight_gradients(backend, dtype, cfg):
    # need_dx=False (a first layer) must skip dx only: dw and db bit for bit as with dx.
    x, w, b, dout = cfg.inputs(dtype)
    _, cache = fastconv.conv2d_forward(x, w, b, backend=backend, **cfg.kwargs())
    _, dw, db = fastconv.conv2d_backward(dout, cache)
    dx, dw_only, db_only = fastconv.conv2d_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw_only, dw)
    assert (db is None) == (db_only is None) and (db is None or np.array_equal(db_only, db))


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=case_id)
def test_pool2d_matches_naive(fast_backend, dtype, op, cfg):
    actual = pool2d_results(op, *cfg.inputs(dtype), fast_backend, **cfg.kwargs())
    assert_results_close(actual, naive_results(cfg, dtype, op=op))


@pytest.mark.parametrize("kind", MAX_POOL_SPECIAL_KINDS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=case_id)
def test_max_pool2d_ties_nan_inf_match_naive_exactly(fast_backend, dtype, kind, cfg):
    # Integer-valued dout makes every gradient sum exact, so a gradient routed to another
    # tied cell, or a NaN not propagated, shows up as an exact mismatch.
    x, dout = max_pool_special_inputs(kind, cfg, dtype)
    expected = pool2d_results("max_pool2d", x, dout, "naive", **cfg.kwargs())
    actual = pool2d_results("max_pool2d", x, dout, fast_backend, **cfg.kwargs())
    assert_results_close(actual, expected, exact=True)


def test_auto_backend_matches_naive(dtype):
    cfg = next(cfg for cfg in CONV_GRID if cfg.name == "everything")
    with fastconv.use_backend("auto"):
        actual = conv2d_results(*cfg.inputs(dtype), **cfg.kwargs())
    assert_results_close(actual, naive_results(cfg, dtype))
