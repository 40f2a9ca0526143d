"""Every backend, naive included, against PyTorch's autograd as an independent oracle."""
import pytest

from fastconv.cases import assert_results_close
from fastconv.testing import (CONV_GRID, MAX_POOL_SPECIAL_KINDS, POOL_GRID, POOL_OPS, case_id, conv2d_results,
                              max_pool_special_inputs, pool2d_results, torch_conv2d_results, torch_pool2d_results)

pytest.importorskip("torch")


@pytest.mark.parametrize("cfg", CONV_GRID, ids=case_id)
def test_conv2d_matches_torch(backend, dtype, cfg):
    x, w, b, dout = cfg.inputs(dtype, seed=1)
    expected = torch_conv2d_results(x, w, b, dout, **cfg.kwargs())
    assert_results_close(conv2d_results(x, w, b, dout, backend, **cfg.kwargs()), expected)


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=case_id)
def test_pool2d_matches_torch(backend, dtype, op, cfg):
    x, dout = cfg.inputs(dtype, seed=1)
    expected = torch_pool2d_results(op, x, dout, **cfg.kwargs())
    assert_results_close(pool2d_results(op, x, dout, backend, **cfg.kwargs()), expected)


@pytest.mark.parametrize("kind", MAX_POOL_SPECIAL_KINDS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=case_id)
def test_max_pool2d_ties_nan_inf_match_torch_exactly(backend, dtype, kind, cfg):
    # PyTorch sends a tied window's gradient to its first maximum and lets NaN win; the
    # integer-valued dout keeps gradient sums exact, so any other routing is a mismatch.
    x, dout = max_pool_special_inputs(kind, cfg, dtype, seed=1)
    expected = torch_pool2d_results("max_pool2d", x, dout, **cfg.kwargs())
    assert_results_close(pool2d_results("max_pool2d", x, dout, backend, **cfg.kwargs()), expected, exact=True)
