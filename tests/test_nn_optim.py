"""nn.optim: update rules against hand-computed values, and the classes reusing them."""
import numpy as np
import pytest

import nn
from nn import optim


def test_sgd_hand_computed():
    w, dw = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    next_w, config = optim.sgd(w, dw)
    np.testing.assert_allclose(next_w, [0.995, -2.005])
    assert config["learning_rate"] == 1e-2
    np.testing.assert_array_equal(w, [1.0, -2.0])  # inputs are never modified


def test_sgd_momentum_two_steps():
    w, dw = np.array([1.0]), np.array([2.0])
    w1, config = optim.sgd_momentum(w, dw, {"learning_rate": 0.1})
    np.testing.assert_allclose(w1, [0.8])  # v = -0.1 * 2
    w2, config = optim.sgd_momentum(w1, dw, config)
    np.testing.assert_allclose(config["velocity"], [0.9 * -0.2 - 0.2])
    np.testing.assert_allclose(w2, [0.8 - 0.38])


def test_rmsprop_first_step():
    w, dw = np.array([1.0]), np.array([2.0])
    next_w, config = optim.rmsprop(w, dw)
    cache = 0.01 * 4.0
    np.testing.assert_allclose(config["cache"], [cache])
    np.testing.assert_allclose(next_w, [1.0 - 1e-2 * 2.0 / (np.sqrt(cache) + 1e-8)])


def test_adam_increments_t_before_use():
    w, dw = np.array([1.0, 2.0]), np.array([0.1, -0.3])
    next_w, config = optim.adam(w, dw)
    assert config["t"] == 1
    # with t = 1 the bias-corrected moments are dw and dw**2, so the step is lr * sign(dw)
    np.testing.assert_allclose(next_w, w - 1e-3 * dw / (np.abs(dw) + 1e-8))
    w2, config = optim.adam(next_w, dw, config)
    m, v = 0.9 * 0.1 * dw + 0.1 * dw, 0.999 * 0.001 * dw ** 2 + 0.001 * dw ** 2
    expected = next_w - 1e-3 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    assert config["t"] == 2
    np.testing.assert_allclose(w2, expected)


def test_cs231n_adam_reference_values():
    # the values CS231n's notebook checks its adam against
    N, D = 4, 5
    w = np.linspace(-0.4, 0.6, num=N * D).reshape(N, D)
    dw = np.linspace(-0.6, 0.4, num=N * D).reshape(N, D)
    m = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    v = np.linspace(0.7, 0.5, num=N * D).reshape(N, D)
    next_w, _ = optim.adam(w, dw, {"learning_rate": 1e-2, "m": m, "v": v, "t": 5})
    expected_first_row = [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977]
    np.testing.assert_allclose(next_w[0], expected_first_row, rtol=1e-6)


@pytest.mark.parametrize("rule", list(optim.UPDATE_RULES.values()))
def test_rules_keep_float32(rule):
    w = np.ones(3, np.float32)
    next_w, config = rule(w, np.full(3, 0.5, np.float32))
    next_w, _ = rule(next_w, np.full(3, 0.5, np.float32), config)
    assert next_w.dtype == np.float32


@pytest.mark.parametrize("make,rule,config", [
    (lambda p: optim.SGD(p, lr=0.1), optim.sgd, {"learning_rate": 0.1}),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.5), optim.sgd_momentum, {"learning_rate": 0.1, "momentum": 0.5}),
    (lambda p: optim.RMSprop(p, lr=0.01, alpha=0.9), optim.rmsprop, {"learning_rate": 0.01, "decay_rate": 0.9}),
    (lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99)), optim.adam,
     {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99}),
])
def test_classes_follow_the_functions(make, rule, config):
    rng = np.random.default_rng(0)
    param = nn.Parameter(rng.standard_normal(4))
    optimizer = make([param])
    w, config = param.data.copy(), dict(config)
    for _ in range(3):
        param.grad[...] = rng.standard_normal(4)
        w, config = rule(w, param.grad, config)
        optimizer.step()
    np.testing.assert_allclose(param.data, w)
    optimizer.zero_grad()
    assert not param.grad.any()


def test_optimizer_trains_a_module():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(3, 2, dtype=np.float64, rng=0))
    loss_fn, optimizer = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(50):
        model.zero_grad()
        losses.append(loss_fn(model(X), y))
        model.backward(loss_fn.backward())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


def test_lr_setter_and_state_round_trip():
    params = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
    optimizer = optim.Adam(params)
    optimizer.step()
    optimizer.lr = 5e-4
    assert all(config["learning_rate"] == 5e-4 for config in optimizer.state)
    other = optim.Adam(params)
    other.load_state_dict(optimizer.state_dict())
    assert other.state[0]["t"] == 1
    with pytest.raises(ValueError, match="entries"):
        optim.Adam(params[:1]).load_state_dict(optimizer.state_dict())


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0), lambda p: optim.SGD(p, lr=-1), lambda p: optim.SGD(p, momentum=1.0),
    lambda p: optim.RMSprop(p, alpha=1.5), lambda p: optim.Adam(p, betas=(0.9, 1.0)),
    lambda p: optim.Adam(p, eps=0), lambda p: optim.Adam(p, lr=float("nan")), lambda p: optim.Adam(p, lr="1e-3"),
    lambda p: optim.Adam([]),
])
def test_hyperparameters_are_validated(make):
    with pytest.raises(ValueError):
        make([nn.Parameter(np.zeros(2))])
