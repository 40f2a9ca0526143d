"""nn.layers: every layer gradient-checked in float64, dtype kept, CS231n conventions."""
import numpy as np
import pytest

import fastconv
from fastconv.cases import assert_results_close, tolerance
from nn.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from nn.layers import *  # noqa: F403 -- the drop-in promise is exactly this import

LAYER_GRADIENT = tolerance("layer-gradient")


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def check_array_grads(forward, backward, inputs, dout, tol=LAYER_GRADIENT):
    """Analytic gradients (backward(dout, cache)) of forward(*inputs) vs numerical ones, per input."""
    _, cache = forward(*inputs)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    for i, grad in enumerate(analytic):
        def f(value, i=i):
            args = list(inputs)
            args[i] = value
            return forward(*args)[0]
        numeric = eval_numerical_gradient_array(f, inputs[i], dout)
        assert rel_error(grad, numeric) <= tol, f"input {i}: rel error {rel_error(grad, numeric)}"


def test_affine_forward_matches_formula_and_gradients(rng):
    x, w, b = rng.standard_normal((3, 2, 3)), rng.standard_normal((6, 4)), rng.standard_normal(4)
    out, _ = affine_forward(x, w, b)
    np.testing.assert_allclose(out, x.reshape(3, 6) @ w + b)
    check_array_grads(affine_forward, affine_backward, (x, w, b), rng.standard_normal((3, 4)))


def test_relu_gradients(rng):
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(relu_forward(x)[0], np.maximum(x, 0))
    check_array_grads(lambda x: relu_forward(x), relu_backward, (x,), rng.standard_normal((4, 5)))


@pytest.mark.parametrize("forward,backward", [(conv_forward_naive, conv_backward_naive),
                                              (conv_forward_fast, conv_backward_fast)])
def test_conv_gradients(rng, forward, backward):
    x, w, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    conv_param = {"stride": 2, "pad": 1}
    out, _ = forward(x, w, b, conv_param)
    assert out.shape == (2, 2, 3, 3)
    check_array_grads(lambda x, w, b: forward(x, w, b, conv_param), backward, (x, w, b),
                      rng.standard_normal(out.shape))


def test_conv_known_value():
    # CS231n's 1-channel sanity case: a 3x3 box filter over ones with zero padding counts neighbours
    x = np.ones((1, 1, 3, 3))
    w = np.ones((1, 1, 3, 3))
    out, _ = conv_forward_naive(x, w, np.zeros(1), {"stride": 1, "pad": 1})
    np.testing.assert_array_equal(out[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


@pytest.mark.parametrize("forward,backward", [(max_pool_forward_naive, max_pool_backward_naive),
                                              (max_pool_forward_fast, max_pool_backward_fast)])
def test_max_pool_gradients(rng, forward, backward):
    x = rng.standard_normal((2, 3, 4, 4))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, _ = forward(x, pool_param)
    np.testing.assert_array_equal(out, x.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)))
    check_array_grads(lambda x: forward(x, pool_param), backward, (x,), rng.standard_normal(out.shape))


def test_naive_and_fast_agree_on_every_fast_backend(rng, fast_backend):
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 2, 7, 7), (4, 2, 3, 3), (4,)))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    conv_param = {"stride": 1, "pad": 1}
    with fastconv.use_backend(fast_backend):
        fast, fast_cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
        fast_grads = conv_relu_pool_backward(np.ones_like(fast), fast_cache)
    assert [cache.backend for cache in fast_cache] == [fast_backend, fast_backend]
    a, conv_cache = conv_forward_naive(x, w, b, conv_param)
    naive, pool_cache = max_pool_forward_naive(np.maximum(a, 0), pool_param)
    assert [cache.backend for cache in (conv_cache, pool_cache)] == ["naive", "naive"]
    naive_grads = conv_backward_naive(max_pool_backward_naive(np.ones_like(naive), pool_cache) * (a > 0), conv_cache)
    assert_results_close((fast, *fast_grads), (naive, *naive_grads))


def test_sandwich_gradients(rng):
    x, w, b = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    check_array_grads(lambda x, w, b: conv_relu_forward(x, w, b, conv_param), conv_relu_backward, (x, w, b),
                      rng.standard_normal((1, 2, 4, 4)))
    check_array_grads(lambda x, w, b: conv_relu_pool_forward(x, w, b, conv_param, pool_param),
                      conv_relu_pool_backward, (x, w, b), rng.standard_normal((1, 2, 2, 2)))
    xa, wa, ba = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    check_array_grads(affine_relu_forward, affine_relu_backward, (xa, wa, ba), rng.standard_normal((3, 4)))


@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_alt])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_gradients(rng, backward, mode):
    x, gamma, beta = rng.standard_normal((5, 4)) * 3 + 1, rng.standard_normal(4), rng.standard_normal(4)
    running = {"running_mean": rng.standard_normal(4), "running_var": rng.random(4) + 0.5}
    check_array_grads(lambda x, g, b: batchnorm_forward(x, g, b, {"mode": mode, **running}), backward,
                      (x, gamma, beta), rng.standard_normal((5, 4)))


def test_batchnorm_normalizes_and_updates_running_stats(rng):
    x = rng.standard_normal((200, 3)) * [1, 2, 3] + [4, 5, 6]
    bn_param = {"mode": "train"}
    out, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.1 * x.var(axis=0))
    bn_param["mode"] = "test"
    out_test, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    expected = (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-5)
    np.testing.assert_allclose(out_test, expected)


def test_batchnorm_backward_variants_agree(rng):
    x, gamma, beta, dout = (rng.standard_normal(s) for s in ((6, 5), 5, 5, (6, 5)))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for a, b in zip(batchnorm_backward(dout, cache), batchnorm_backward_alt(dout, cache)):
        assert rel_error(a, b) <= tolerance("backward-variants")


def test_spatial_batchnorm_gradients_and_statistics(rng):
    x, gamma, beta = rng.standard_normal((3, 2, 3, 4)) * 2 + 1, rng.standard_normal(2), rng.standard_normal(2)
    out, _ = spatial_batchnorm_forward(x, np.ones(2), np.zeros(2), {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    check_array_grads(lambda x, g, b: spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
                      spatial_batchnorm_backward, (x, gamma, beta), rng.standard_normal(x.shape))


def test_dropout_keeps_p_inverted_and_is_reproducible(rng):
    x = rng.standard_normal((500, 500)) + 10
    out, _ = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 1})
    kept = out != 0
    assert abs(kept.mean() - 0.3) < 0.01
    np.testing.assert_allclose(out[kept], x[kept] / 0.3)
    again, _ = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 1})
    np.testing.assert_array_equal(out, again)
    assert dropout_forward(x, {"mode": "test", "p": 0.3})[0] is x
    with pytest.raises(ValueError, match="keep probability"):
        dropout_forward(x, {"mode": "train", "p": 0.0})


def test_dropout_gradient(rng):
    x = rng.standard_normal((4, 6))
    param = {"mode": "train", "p": 0.6, "seed": 3}
    check_array_grads(lambda x: dropout_forward(x, param), dropout_backward, (x,), rng.standard_normal((4, 6)))


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
def test_loss_gradients(rng, loss_fn):
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    _, dx = loss_fn(x, y)
    numeric = eval_numerical_gradient(lambda x: loss_fn(x, y)[0], x, verbose=False)
    assert rel_error(dx, numeric) <= LAYER_GRADIENT


def test_losses_known_values():
    x = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    y = np.array([2, 0])
    # svm: row 0 margins (1-3+1, 2-3+1) -> (0, 0); row 1 margins (1, 1) -> 2; mean 1
    assert svm_loss(x, y)[0] == pytest.approx(1.0)
    expected = -(np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(1 / 3)) / 2
    assert softmax_loss(x, y)[0] == pytest.approx(expected)
    # uniform scores give log(C), the CS231n sanity check
    assert softmax_loss(np.zeros((4, 10)), np.arange(4))[0] == pytest.approx(np.log(10))


def test_softmax_is_stable_for_huge_scores():
    loss, dx = softmax_loss(np.array([[1e4, 0.0, -1e4]], np.float32), np.array([1]))
    assert np.isfinite(loss) and loss == pytest.approx(1e4)
    assert np.all(np.isfinite(dx))


def test_losses_reject_bad_labels():
    with pytest.raises(ValueError, match="labels must be in"):
        softmax_loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        svm_loss(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_float32_stays_float32(rng):
    f32 = np.float32
    x, w, b = rng.standard_normal((2, 3, 6, 6)).astype(f32), rng.standard_normal((4, 3, 3, 3)).astype(f32), \
        np.zeros(4, f32)
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert out.dtype == f32 and all(g.dtype == f32 for g in conv_relu_pool_backward(np.ones_like(out), cache))
    flat, fc_cache = affine_relu_forward(out, rng.standard_normal((36, 5)).astype(f32), np.zeros(5, f32))
    assert flat.dtype == f32 and all(g.dtype == f32 for g in affine_relu_backward(np.ones_like(flat), fc_cache))
    bn_param = {"mode": "train"}
    bn_out, bn_cache = batchnorm_forward(flat, np.ones(5, f32), np.zeros(5, f32), bn_param)
    assert bn_out.dtype == f32 and bn_param["running_mean"].dtype == f32
    assert all(g.dtype == f32 for g in batchnorm_backward(np.ones_like(bn_out), bn_cache))
    sp_out, _ = spatial_batchnorm_forward(x, np.ones(3, f32), np.zeros(3, f32), {"mode": "train"})
    assert sp_out.dtype == f32
    assert dropout_forward(flat, {"mode": "train", "p": 0.5, "seed": 0})[0].dtype == f32
    assert softmax_loss(flat, np.arange(2))[1].dtype == f32
    assert svm_loss(flat, np.arange(2))[1].dtype == f32
