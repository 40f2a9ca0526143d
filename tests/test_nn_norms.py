"""nn.layers layernorm / groupnorm and the normalization composites; FullyConnectedNet with layernorm."""
import numpy as np
import pytest

from fastconv.cases import assert_close, tolerance
from nn.layers import (affine_bn_relu_backward, affine_bn_relu_forward, affine_ln_relu_backward,
                       affine_ln_relu_forward, affine_relu_dropout_backward, affine_relu_dropout_forward,
                       conv_bn_relu_backward, conv_bn_relu_forward, conv_forward_naive, dropout_forward,
                       layernorm_backward, layernorm_forward, spatial_groupnorm_backward, spatial_groupnorm_forward)
from nn.models import FullyConnectedNet
from test_nn_layers import check_array_grads
from test_nn_models import check_model

F32, F64 = np.float32, np.float64


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


# ----------------------------------------------------------------------------- CS231n formulas, transcribed

def layernorm_reference(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def groupnorm_reference(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    x_group = x.reshape(N, G, C // G, H, W)
    mean = x_group.mean(axis=(2, 3, 4), keepdims=True)
    var = x_group.var(axis=(2, 3, 4), keepdims=True)
    x_norm = ((x_group - mean) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return gamma * x_norm + beta


def batchnorm_reference(x, gamma, beta, eps=1e-5):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = gamma.shape if x.ndim == 2 else (1, -1, 1, 1)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return gamma.reshape(shape) * (x - mean) / np.sqrt(var + eps) + beta.reshape(shape)


def relu(x):
    return np.maximum(x, 0)


def layernorm_inputs(rng, dtype=F64, n=4, d=5):
    x = rng.standard_normal((n, d)) * 3 + 2
    return x.astype(dtype), rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)


def groupnorm_inputs(rng, dtype=F64, shape=(2, 6, 3, 2)):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 - 1
    return (x.astype(dtype), rng.standard_normal((1, c, 1, 1)).astype(dtype),
            rng.standard_normal((1, c, 1, 1)).astype(dtype))


# ----------------------------------------------------------------------------- layernorm, groupnorm

@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("eps", [None, 0.1])
def test_layernorm_forward_matches_formula_and_keeps_dtype(rng, dtype, eps):
    x, gamma, beta = layernorm_inputs(rng, dtype)
    ln_param = {} if eps is None else {"eps": eps}
    out, _ = layernorm_forward(x, gamma, beta, ln_param)
    assert out.dtype == dtype
    assert_close(out, layernorm_reference(x.astype(F64), gamma.astype(F64), beta.astype(F64), eps or 1e-5), dtype)
    grads = layernorm_backward(np.ones_like(out), layernorm_forward(x, gamma, beta, ln_param)[1])
    assert [g.dtype for g in grads] == [dtype] * 3


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("G", [1, 2, 6])
def test_groupnorm_forward_matches_formula_and_keeps_dtype(rng, dtype, G):
    x, gamma, beta = groupnorm_inputs(rng, dtype)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, G, {"eps": 1e-3})
    assert out.dtype == dtype
    assert_close(out, groupnorm_reference(x.astype(F64), gamma.astype(F64), beta.astype(F64), G, 1e-3), dtype)
    dx, dgamma, dbeta = spatial_groupnorm_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == gamma.shape
    assert [g.dtype for g in (dx, dgamma, dbeta)] == [dtype] * 3


def test_layernorm_gradients(rng):
    x, gamma, beta = layernorm_inputs(rng)
    check_array_grads(lambda x, g, b: layernorm_forward(x, g, b, {}), layernorm_backward, (x, gamma, beta),
                      rng.standard_normal(x.shape))


@pytest.mark.parametrize("G", [1, 3, 6])
def test_groupnorm_gradients(rng, G):
    x, gamma, beta = groupnorm_inputs(rng)
    check_array_grads(lambda x, g, b: spatial_groupnorm_forward(x, g, b, G, {}), spatial_groupnorm_backward,
                      (x, gamma, beta), rng.standard_normal(x.shape))


def test_layernorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, gamma, beta = layernorm_inputs(rng, n=3, d=7)
    dout = rng.standard_normal(x.shape)
    out, cache = layernorm_forward(x, gamma, beta, {"eps": 1e-4})
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    expected = torch.nn.functional.layer_norm(tensors[0], (7,), tensors[1], tensors[2], eps=1e-4)
    expected.backward(torch.tensor(dout))
    assert_close(out, expected.detach().numpy())
    for grad, tensor in zip(layernorm_backward(dout, cache), tensors):
        assert_close(grad, tensor.grad.numpy())


def test_groupnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, gamma, beta = groupnorm_inputs(rng, shape=(3, 4, 2, 3))
    dout = rng.standard_normal(x.shape)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, 2, {})
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, gamma.ravel(), beta.ravel())]
    expected = torch.nn.functional.group_norm(tensors[0], 2, tensors[1], tensors[2], eps=1e-5)
    expected.backward(torch.tensor(dout))
    assert_close(out, expected.detach().numpy())
    for grad, tensor in zip(spatial_groupnorm_backward(dout, cache), tensors):
        assert_close(grad.reshape(tensor.shape), tensor.grad.numpy())


def test_norms_leave_inputs_untouched(rng):
    for forward, backward, inputs in [
            (lambda x, g, b: layernorm_forward(x, g, b, {}), layernorm_backward, layernorm_inputs(rng)),
            (lambda x, g, b: spatial_groupnorm_forward(x, g, b, 2, {}), spatial_groupnorm_backward,
             groupnorm_inputs(rng))]:
        copies = [a.copy() for a in inputs]
        out, cache = forward(*inputs)
        dout = rng.standard_normal(out.shape)
        dout_copy = dout.copy()
        backward(dout, cache)
        for array, copy in zip((*inputs, dout), (*copies, dout_copy)):
            np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("change,error,match", [
    (dict(x=np.ones((2, 3, 1))), ValueError, "x"),
    (dict(x=np.ones((2, 3), np.int64)), TypeError, "x"),
    (dict(x=[[1.0, 2.0, 3.0]]), TypeError, "x"),
    (dict(gamma=np.ones(4)), ValueError, "gamma"),
    (dict(beta=np.ones((1, 3))), ValueError, "beta"),
    (dict(gamma=np.ones(3, F32)), TypeError, "gamma"),
    (dict(ln_param={"eps": 0.0}), ValueError, "eps"),
    (dict(ln_param=None), TypeError, "ln_param"),
])
def test_layernorm_rejects_malformed_input(change, error, match):
    args = dict(x=np.ones((2, 3)), gamma=np.ones(3), beta=np.zeros(3), ln_param={}) | change
    with pytest.raises(error, match=match):
        layernorm_forward(**args)


@pytest.mark.parametrize("change,error,match", [
    (dict(x=np.ones((2, 4, 3))), ValueError, "x"),
    (dict(G=3), ValueError, "G"),
    (dict(G=0), ValueError, "G"),
    (dict(G=2.0), TypeError, "G"),
    (dict(gamma=np.ones(4)), ValueError, "gamma"),
    (dict(beta=np.ones((1, 2, 1, 1))), ValueError, "beta"),
    (dict(gn_param={"eps": -1.0}), ValueError, "eps"),
])
def test_groupnorm_rejects_malformed_input(change, error, match):
    args = dict(x=np.ones((2, 4, 3, 3)), gamma=np.ones((1, 4, 1, 1)), beta=np.zeros((1, 4, 1, 1)), G=2,
                gn_param={}) | change
    with pytest.raises(error, match=match):
        spatial_groupnorm_forward(**args)


# ----------------------------------------------------------------------------- composites

def affine_inputs(rng, n=5, d=4, m=3):
    return rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)


def test_affine_bn_relu_matches_formula_and_updates_running_stats(rng):
    x, w, b = affine_inputs(rng)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    bn_param = {"mode": "train", "momentum": 0.8}
    out, _ = affine_bn_relu_forward(x, w, b, gamma, beta, bn_param)
    a = x @ w + b
    assert_close(out, relu(batchnorm_reference(a, gamma, beta)))
    assert_close(bn_param["running_mean"], 0.2 * a.mean(axis=0))
    assert_close(bn_param["running_var"], 0.2 * a.var(axis=0))
    bn_param["mode"] = "test"
    out, _ = affine_bn_relu_forward(x, w, b, gamma, beta, bn_param)
    normalized = (a - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-5)
    assert_close(out, relu(gamma * normalized + beta))


def test_affine_ln_relu_matches_formula(rng):
    x, w, b = affine_inputs(rng)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    out, _ = affine_ln_relu_forward(x, w, b, gamma, beta, {"eps": 1e-3})
    assert_close(out, relu(layernorm_reference(x @ w + b, gamma, beta, 1e-3)))


def test_affine_relu_dropout_matches_its_pieces(rng):
    x, w, b = affine_inputs(rng, n=20, m=10)
    out, _ = affine_relu_dropout_forward(x, w, b, {"p": 0.6, "seed": 5})
    expected, _ = dropout_forward(relu(x @ w + b), {"p": 0.6, "seed": 5})
    assert_close(out, expected)
    assert np.any((out == 0) & (x @ w + b > 0))  # some units really were dropped
    out, _ = affine_relu_dropout_forward(x, w, b, {"p": 0.6, "mode": "test"})
    assert_close(out, relu(x @ w + b))


@pytest.mark.parametrize("mode", ["train", "test"])
def test_conv_bn_relu_matches_formula(rng, mode):
    x, w, b = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    conv_param = {"stride": 1, "pad": 1}
    running = {"running_mean": rng.standard_normal(3), "running_var": rng.random(3) + 0.5}
    bn_param = {"mode": mode, **{key: value.copy() for key, value in running.items()}}
    out, _ = conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param)
    a, _ = conv_forward_naive(x, w, b, conv_param)
    if mode == "train":
        expected = batchnorm_reference(a, gamma, beta)
        assert_close(bn_param["running_mean"], 0.9 * running["running_mean"] + 0.1 * a.mean(axis=(0, 2, 3)))
    else:
        mean, var = (running[key].reshape(1, -1, 1, 1) for key in ("running_mean", "running_var"))
        expected = gamma.reshape(1, -1, 1, 1) * (a - mean) / np.sqrt(var + 1e-5) + beta.reshape(1, -1, 1, 1)
    assert_close(out, relu(expected))


def check_grads_skipping_bias(forward, backward, inputs, dout):
    """As check_array_grads for every input but the bias (index 2), whose gradient batchnorm in train mode
    makes exactly zero (a constant shift per feature is subtracted again): a relative error against
    numerical noise would mean nothing, so that one is checked to vanish."""
    bias = inputs[2]
    others = inputs[:2] + inputs[3:]
    check_array_grads(lambda *args: forward(*args[:2], bias, *args[2:]),
                      lambda d, cache: (lambda grads: grads[:2] + grads[3:])(backward(d, cache)), others, dout)
    db = backward(dout, forward(*inputs)[1])[2]
    assert np.abs(db).max() < 1e-10


@pytest.mark.parametrize("mode", ["train", "test"])
def test_affine_bn_relu_gradients(rng, mode):
    x, w, b = affine_inputs(rng)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3) + 0.5
    running = {"running_mean": rng.standard_normal(3), "running_var": rng.random(3) + 0.5}
    def forward(*args):
        return affine_bn_relu_forward(*args, {"mode": mode, **running})
    dout = rng.standard_normal((5, 3))
    if mode == "train":
        check_grads_skipping_bias(forward, affine_bn_relu_backward, (x, w, b, gamma, beta), dout)
    else:
        check_array_grads(forward, affine_bn_relu_backward, (x, w, b, gamma, beta), dout)


def test_affine_ln_relu_gradients(rng):
    x, w, b = affine_inputs(rng, d=4, m=5)
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5) + 0.5
    check_array_grads(lambda *args: affine_ln_relu_forward(*args, {}), affine_ln_relu_backward,
                      (x, w, b, gamma, beta), rng.standard_normal((5, 5)))


def test_affine_relu_dropout_gradients(rng):
    x, w, b = affine_inputs(rng)
    check_array_grads(lambda *args: affine_relu_dropout_forward(*args, {"p": 0.7, "seed": 1}),
                      affine_relu_dropout_backward, (x, w, b), rng.standard_normal((5, 3)))


def test_conv_bn_relu_gradients(rng):
    x, w, b = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3) + 0.5
    conv_param = {"stride": 1, "pad": 1}  # stride 2 leaves 8 values per channel: too noisy for 1e-7
    check_grads_skipping_bias(lambda *args: conv_bn_relu_forward(*args[:5], conv_param, {"mode": "train"}),
                              conv_bn_relu_backward, (x, w, b, gamma, beta), rng.standard_normal((2, 3, 4, 4)))


def test_composites_keep_float32(rng):
    x, w, b = (a.astype(F32) for a in affine_inputs(rng))
    gamma, beta = np.ones(3, F32), np.zeros(3, F32)
    for forward, backward, extra in [(affine_bn_relu_forward, affine_bn_relu_backward, (gamma, beta, {})),
                                     (affine_ln_relu_forward, affine_ln_relu_backward, (gamma, beta, {})),
                                     (affine_relu_dropout_forward, affine_relu_dropout_backward, ({"p": 0.5},))]:
        out, cache = forward(x, w, b, *extra)
        assert out.dtype == F32
        assert all(grad.dtype == F32 for grad in backward(np.ones_like(out), cache))
    images = rng.standard_normal((2, 2, 4, 4)).astype(F32)
    kernels = rng.standard_normal((3, 2, 3, 3)).astype(F32)
    out, cache = conv_bn_relu_forward(images, kernels, b, gamma, beta, {"pad": 1}, {})
    assert out.dtype == F32
    assert all(grad.dtype == F32 for grad in conv_bn_relu_backward(np.ones_like(out), cache))


# ----------------------------------------------------------------------------- FullyConnectedNet

@pytest.mark.parametrize("dropout,reg", [(0.0, 0.0), (0.0, 0.6), (0.3, 0.0)])
def test_fully_connected_net_layernorm_gradients(dropout, reg):
    np.random.seed(2)
    model = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, dropout=dropout, normalization="layernorm",
                              reg=reg, weight_scale=0.5, dtype=F64, seed=3)
    assert sorted(model.params) == sorted([f"{p}{i}" for i in (1, 2, 3) for p in "Wb"] +
                                          [f"{p}{i}" for i in (1, 2) for p in ("gamma", "beta")])
    rng = np.random.default_rng(0)
    check_model(model, rng.standard_normal((4, 4)), rng.integers(0, 3, 4))


def test_fully_connected_net_layernorm_overfits_small_batch():
    np.random.seed(0)
    model = FullyConnectedNet([20, 20], input_dim=8, num_classes=5, normalization="layernorm", weight_scale=0.1,
                              dtype=F64)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((12, 8)), rng.integers(0, 5, 12)
    for _ in range(150):
        _, grads = model.loss(X, y)
        for name, grad in grads.items():
            model.params[name] = model.params[name] - 0.3 * grad
    assert np.mean(np.argmax(model.loss(X), axis=1) == y) == 1.0
    assert model.loss(X, y)[0] < 0.1


def test_fully_connected_net_layernorm_is_the_same_in_train_and_test():
    np.random.seed(0)
    model = FullyConnectedNet([5], input_dim=3, num_classes=2, normalization="layernorm", dtype=F32)
    X = np.random.default_rng(0).standard_normal((4, 3))
    scores = model.loss(X)
    assert scores.dtype == F32
    model.loss(X, np.zeros(4, np.int64))
    np.testing.assert_array_equal(model.loss(X), scores)  # no running statistics
    assert model.bn_params == [] and "bn1.running_mean" not in model.state_dict()


def test_fully_connected_net_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([3], normalization="groupnorm")
