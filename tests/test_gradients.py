"""Every backward function of every backend against central differences of its own forward (float64)."""
import numpy as np
import pytest

import fastconv
from fastconv.testing import ConvConfig, PoolConfig, config_conv_inputs, config_pool_inputs, numeric_gradient

# Conv is linear in each argument, so central differences are exact up to rounding of the
# summed output (~1e-9 here); max-pool is linear away from ties, which the inputs avoid.
GRAD_TOL = dict(rtol=1e-6, atol=1e-7)

CONV_CONFIGS = (
    ConvConfig("plain", (2, 2, 4, 4), (3, 2, 3, 3), 1, 1),
    ConvConfig("pairs-groups", (2, 4, 5, 4), (4, 2, 3, 2), (2, 1), (1, 0), (1, 2), groups=2),
    ConvConfig("depthwise-dilated-no-bias", (1, 3, 6, 6), (3, 1, 2, 2), 2, 2, 2, groups=3, bias=False),
)
POOL_CONFIGS = (
    PoolConfig("k2", (2, 1, 4, 6), 2),
    PoolConfig("k3-s2-p1", (2, 2, 5, 5), 3, 2, 1),
    PoolConfig("pairs-overlapping", (1, 2, 6, 5), (2, 3), (1, 2), (1, 1)),
)
POOL_OPS = {"max_pool2d": (fastconv.max_pool2d_forward, fastconv.max_pool2d_backward),
            "avg_pool2d": (fastconv.avg_pool2d_forward, fastconv.avg_pool2d_backward)}


def names(configs):
    return [cfg.name for cfg in configs]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=names(CONV_CONFIGS))
def test_conv2d_backward_matches_numeric_gradient(backend, cfg):
    x, w, b, dout = config_conv_inputs(cfg, np.float64, seed=3)
    kwargs = dict(cfg.kwargs(), backend=backend)
    _, cache = fastconv.conv2d_forward(x, w, b, **kwargs)
    dx, dw, db = fastconv.conv2d_backward(dout, cache)

    def out_for(x_, w_, b_):
        return fastconv.conv2d_forward(x_, w_, b_, **kwargs)[0]

    np.testing.assert_allclose(dx, numeric_gradient(lambda v: out_for(v, w, b), x.copy(), dout), **GRAD_TOL)
    np.testing.assert_allclose(dw, numeric_gradient(lambda v: out_for(x, v, b), w.copy(), dout), **GRAD_TOL)
    if cfg.bias:
        np.testing.assert_allclose(db, numeric_gradient(lambda v: out_for(x, w, v), b.copy(), dout), **GRAD_TOL)
    else:
        assert db is None


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=names(POOL_CONFIGS))
def test_pool2d_backward_matches_numeric_gradient(backend, op, cfg):
    forward, backward = POOL_OPS[op]
    _, dout = config_pool_inputs(cfg, np.float64, seed=3)
    # Distinct values 1/size apart: no window has a tie a step of 1e-6 could flip.
    rng = np.random.default_rng(3)
    size = int(np.prod(cfg.x_shape))
    x = rng.permutation(size).reshape(cfg.x_shape) / size
    _, cache = forward(x, **cfg.kwargs(), backend=backend)
    dx = backward(dout, cache)
    expected = numeric_gradient(lambda v: forward(v, **cfg.kwargs(), backend=backend)[0], x.copy(), dout)
    np.testing.assert_allclose(dx, expected, **GRAD_TOL)
