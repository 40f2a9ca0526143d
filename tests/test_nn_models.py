"""nn.models: gradient checks in float64 (with regularization, batchnorm, dropout), dtypes, scores."""
import numpy as np
import pytest

import nn
from fastconv.cases import tolerance
from nn.gradient_check import eval_numerical_gradient, rel_error
from nn.models import FullyConnectedNet, ModuleClassifier, ThreeLayerConvNet


def check_model(model, X, y, tol=tolerance("model-gradient")):
    """Analytic vs numerical gradients of every parameter. Biases are first moved off zero: a zero
    bias behind an all-zero input puts a ReLU exactly on its kink, where no finite difference agrees."""
    rng = np.random.default_rng(7)
    for name in [n for n in model.params if n.startswith("b") and not n.startswith("beta") or n.endswith("bias")]:
        model.params[name] = rng.uniform(0.1, 0.5, model.params[name].shape)
    loss, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name in model.params:
        numeric = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name], verbose=False)
        if name.startswith("b") and np.abs(numeric).max() < 1e-8:  # a bias right before batchnorm: no effect
            assert np.abs(grads[name]).max() < 1e-8, name
            continue
        assert np.any(grads[name]), f"{name}: all-zero gradient (dead units?), the check would prove nothing"
        assert rel_error(grads[name], numeric) <= tol, f"{name}: {rel_error(grads[name], numeric)}"
    return loss


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_three_layer_convnet_gradients(reg):
    np.random.seed(1)
    model = ThreeLayerConvNet(input_dim=(2, 4, 4), num_filters=2, filter_size=3, hidden_dim=5, num_classes=3,
                              weight_scale=1.0, reg=reg, dtype=np.float64)
    rng = np.random.default_rng(0)
    check_model(model, rng.standard_normal((3, 2, 4, 4)), rng.integers(0, 3, 3))


def test_three_layer_convnet_initial_loss_and_scores():
    np.random.seed(0)
    model = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=10)
    X = np.random.default_rng(0).standard_normal((6, 1, 8, 8))  # float64 input: computed in the model's float32
    scores = model.loss(X)
    assert scores.shape == (6, 10) and scores.dtype == np.float32
    loss, grads = model.loss(X, np.arange(6))
    assert loss == pytest.approx(np.log(10), rel=1e-3)  # tiny weights: uniform scores
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.params["W2"].shape == (4 * 4 * 4, 10)


@pytest.mark.parametrize("normalization,dropout,reg", [(None, 0.0, 0.0), (None, 0.0, 1.3), ("batchnorm", 0.0, 0.5),
                                                       (None, 0.3, 0.0), ("batchnorm", 0.25, 0.0)])
def test_fully_connected_net_gradients(normalization, dropout, reg):
    np.random.seed(1)
    model = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, dropout=dropout, normalization=normalization,
                              reg=reg, weight_scale=0.5, dtype=np.float64, seed=3)
    rng = np.random.default_rng(0)
    check_model(model, rng.standard_normal((4, 4)), rng.integers(0, 3, 4))


def test_fully_connected_net_structure_and_test_mode():
    np.random.seed(0)
    model = FullyConnectedNet([7, 6, 5], input_dim=4, num_classes=3, normalization="batchnorm", dropout=0.5)
    assert sorted(model.params) == sorted([f"{p}{i}" for i in (1, 2, 3, 4) for p in "Wb"] +
                                          [f"{p}{i}" for i in (1, 2, 3) for p in ("gamma", "beta")])
    X = np.random.default_rng(0).standard_normal((5, 4))
    model.loss(X, np.zeros(5, np.int64))
    np.testing.assert_array_equal(model.loss(X), model.loss(X))  # test mode: no dropout, running stats
    state = model.state_dict()
    assert "bn2.running_var" in state
    np.random.seed(5)
    clone = FullyConnectedNet([7, 6, 5], input_dim=4, num_classes=3, normalization="batchnorm", dropout=0.5)
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone.loss(X), model.loss(X))
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([3], normalization="groupnorm")
    with pytest.raises(TypeError, match="float32 or float64"):
        FullyConnectedNet([3], dtype=np.int32)


def test_regularization_adds_half_reg_squared_norm():
    np.random.seed(0)
    model = FullyConnectedNet([3], input_dim=2, num_classes=2, reg=0.0, dtype=np.float64)
    X, y = np.ones((2, 2)), np.array([0, 1])
    plain, _ = model.loss(X, y)
    model.reg = 2.0
    regularized, _ = model.loss(X, y)
    expected = 0.5 * 2.0 * (np.sum(model.params["W1"] ** 2) + np.sum(model.params["W2"] ** 2))
    assert regularized - plain == pytest.approx(expected)


def test_module_classifier_gradients_and_live_params():
    module = nn.Sequential(nn.Conv2d(1, 2, 3, dtype=np.float64, rng=0), nn.ReLU(), nn.Flatten(),
                           nn.Linear(8, 3, dtype=np.float64, rng=1))
    model = ModuleClassifier(module)
    rng = np.random.default_rng(0)
    check_model(model, rng.standard_normal((3, 1, 4, 4)), rng.integers(0, 3, 3), tol=tolerance("layer-gradient"))
    model.params["3.bias"] = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(module[3].bias.data, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        model.params["3.bias"] = np.zeros(4)
