"""Generated configurations covering every argument: each backend against naive and against PyTorch."""
import numpy as np
import pytest

import fastconv
from fastconv.cases import ConvCase, PoolCase, assert_results_close, pair
from fastconv.testing import (DTYPES, MAX_POOL_SPECIAL_KINDS, POOL_OPS, conv2d_results, fast_backends,
                              max_pool_special_inputs, pool2d_results, torch_conv2d_results, torch_pool2d_results)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

# Parametrized here, not through conftest's fixtures: hypothesis runs a test's examples in one
# call of its function-scoped fixtures.
EVERY_DTYPE = pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
EVERY_POOL_OP = pytest.mark.parametrize("op", POOL_OPS)
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
    return ConvCase("generated", x_shape, (filters, channels_per_group, kh, kw), stride, padding, dilation,
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
    return PoolCase("generated", x_shape, kernel, stride, padding)


def pool_inputs(op, cfg, kind, dtype, seed):
    if op == "max_pool2d" and kind != "normal":
        return max_pool_special_inputs(kind, cfg, dtype, seed)
    return cfg.inputs(dtype, seed)


def exact(op, kind) -> bool:
    """Special max-pool inputs come with an integer dout: gradient sums are exact."""
    return op == "max_pool2d" and kind != "normal"


SEEDS = st.integers(0, 2**16)
KINDS = st.sampled_from(("normal",) + MAX_POOL_SPECIAL_KINDS)


@EVERY_DTYPE
@pytest.mark.parametrize("backend", fast_backends())
@CASES
@given(cfg=conv_configs(), seed=SEEDS)
def test_conv2d_matches_naive(backend, dtype, cfg, seed):
    x, w, b, dout = cfg.inputs(dtype, seed)
    assert_results_close(conv2d_results(x, w, b, dout, backend, **cfg.kwargs()),
                         conv2d_results(x, w, b, dout, "naive", **cfg.kwargs()))


@EVERY_POOL_OP
@EVERY_DTYPE
@pytest.mark.parametrize("backend", fast_backends())
@CASES
@given(cfg=pool_configs(), kind=KINDS, seed=SEEDS)
def test_pool2d_matches_naive(backend, dtype, op, cfg, kind, seed):
    x, dout = pool_inputs(op, cfg, kind, dtype, seed)
    assert_results_close(pool2d_results(op, x, dout, backend, **cfg.kwargs()),
                         pool2d_results(op, x, dout, "naive", **cfg.kwargs()), exact=exact(op, kind))


@EVERY_DTYPE
@pytest.mark.parametrize("backend", fastconv.available_backends())
@CASES
@given(cfg=conv_configs(), seed=SEEDS)
def test_conv2d_matches_torch(backend, dtype, cfg, seed):
    pytest.importorskip("torch")
    x, w, b, dout = cfg.inputs(dtype, seed)
    assert_results_close(conv2d_results(x, w, b, dout, backend, **cfg.kwargs()),
                         torch_conv2d_results(x, w, b, dout, **cfg.kwargs()))


@EVERY_POOL_OP
@EVERY_DTYPE
@pytest.mark.parametrize("backend", fastconv.available_backends())
@CASES
@given(cfg=pool_configs(), kind=KINDS, seed=SEEDS)
def test_pool2d_matches_torch(backend, dtype, op, cfg, kind, seed):
    pytest.importorskip("torch")
    x, dout = pool_inputs(op, cfg, kind, dtype, seed)
    assert_results_close(pool2d_results(op, x, dout, backend, **cfg.kwargs()),
                         torch_pool2d_results(op, x, dout, **cfg.kwargs()), exact=exact(op, kind))
