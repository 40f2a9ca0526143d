"""Every backward function of every backend against central differences of its own forward (float64)."""
import numpy as np
import pytest

import fastconv
from fastconv.cases import ConvCase, PoolCase, tolerance
from fastconv.testing import POOL_OPS, case_id, numeric_gradient

GRADIENT = tolerance("conv-pool-gradient")

CONV_CONFIGS = (
    ConvCase("plain", (2, 2, 4, 4), (3, 2, 3, 3), 1, 1),
    ConvCase("pairs-groups", (2, 4, 5, 4), (4, 2, 3, 2), (2, 1), (1, 0), (1, 2), groups=2),
    ConvCase("depthwise-dilated-no-bias", (1, 3, 6, 6), (3, 1, 2, 2), 2, 2, 2, groups=3, bias=False),
)
POOL_CONFIGS = (
    PoolCase("k2", (2, 1, 4, 6), 2),
    PoolCase("k3-s2-p1", (2, 2, 5, 5), 3, 2, 1),
    PoolCase("pairs-overlapping", (1, 2, 6, 5), (2, 3), (1, 2), (1, 1)),
)


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=case_id)
def test_conv2d_backward_matches_numeric_gradient(backend, cfg):
    x, w, b, dout = cfg.inputs(np.float64, seed=3)
    kwargs = dict(cfg.kwargs(), backend=backend)
    _, cache = fastconv.conv2d_forward(x, w, b, **kwargs)
    dx, dw, db = fastconv.conv2d_backward(dout, cache)

    def out_for(x_, w_, b_):
        return fastconv.conv2d_forward(x_, w_, b_, **kwargs)[0]

    np.testing.assert_allclose(dx, numeric_gradient(lambda v: out_for(v, w, b), x.copy(), dout), **GRADIENT)
    np.testing.assert_allclose(dw, numeric_gradient(lambda v: out_for(x, v, b), w.copy(), dout), **GRADIENT)
    if cfg.bias:
        np.testing.assert_allclose(db, numeric_gradient(lambda v: out_for(x, w, v), b.copy(), dout), **GRADIENT)
    else:
        assert db is None


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=case_id)
def test_pool2d_backward_matches_numeric_gradient(backend, op, cfg):
    forward, backward = getattr(fastconv, op + "_forward"), getattr(fastconv, op + "_backward")
    _, dout = cfg.inputs(np.float64, seed=3)
    # Distinct values 1/size apart: no window has a tie a step of 1e-6 could flip.
    rng = np.random.default_rng(3)
    size = int(np.prod(cfg.x_shape))
    x = rng.permutation(size).reshape(cfg.x_shape) / size
    _, cache = forward(x, **cfg.kwargs(), backend=backend)
    dx = backward(dout, cache)
    expected = numeric_gradient(lambda v: forward(v, **cfg.kwargs(), backend=backend)[0], x.copy(), dout)
    np.testing.assert_allclose(dx, expected, **GRADIENT)
