"""nn.nielsen: Nielsen's sigmoid network against transcriptions of the seed's network2, numeric gradients and digits."""
import json
import warnings

import numpy as np
import pytest

from fastconv.cases import tolerance
from nn import nielsen
from nn.gradient_check import eval_numerical_gradient, rel_error
from nn.nielsen import CrossEntropyCost, Network, QuadraticCost, sigmoid, sigmoid_prime

LAYER_GRADIENT = tolerance("layer-gradient")
COSTS = [QuadraticCost, CrossEntropyCost]


# --- straight transcriptions of the seed (network2), per sample, as references ---------------------
def seed_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def seed_sigmoid_prime(z):
    return seed_sigmoid(z) * (1 - seed_sigmoid(z))


def seed_backprop(weights, biases, cost, x, y):
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]
    activation, activations, zs = x, [x], []
    for b, w in zip(biases, weights):
        z = np.dot(w, activation) + b
        zs.append(z)
        activation = seed_sigmoid(z)
        activations.append(activation)
    delta = (activations[-1] - y) * (seed_sigmoid_prime(zs[-1]) if cost is QuadraticCost else 1)
    nabla_b[-1] = delta
    nabla_w[-1] = np.dot(delta, activations[-2].transpose())
    for l in range(2, len(weights) + 1):
        delta = np.dot(weights[-l + 1].transpose(), delta) * seed_sigmoid_prime(zs[-l])
        nabla_b[-l] = delta
        nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
    return nabla_b, nabla_w


def seed_update_mini_batch(weights, biases, cost, mini_batch, eta, lmbda, n):
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]
    for x, y in mini_batch:
        delta_nabla_b, delta_nabla_w = seed_backprop(weights, biases, cost, x, y)
        nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
        nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
    weights = [(1 - eta * (lmbda / n)) * w - (eta / len(mini_batch)) * nw for w, nw in zip(weights, nabla_w)]
    biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(biases, nabla_b)]
    return weights, biases


def seed_total_cost(net, data, lmbda):
    """network2's total_cost on training data (one-hot y)."""
    cost = 0.0
    for x, y in data:
        a = x
        for b, w in zip(net.biases, net.weights):
            a = seed_sigmoid(np.dot(w, a) + b)
        if net.cost is QuadraticCost:
            cost += 0.5 * np.linalg.norm(a - y) ** 2 / len(data)
        else:
            cost += np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a))) / len(data)
    return cost + 0.5 * (lmbda / len(data)) * sum(np.linalg.norm(w) ** 2 for w in net.weights)


# --- helpers ------------------------------------------------------------------------------------
def toy_data(count, n_in=4, n_out=3, seed=0, one_hot=True):
    rng = np.random.default_rng(seed)
    return nielsen.vectorized_data(rng.standard_normal((count, n_in)), rng.integers(0, n_out, count), one_hot,
                                   num_classes=n_out)


def batch(data):
    return np.hstack([x for x, _ in data]), np.hstack([y for _, y in data])


# --- sigmoid and costs --------------------------------------------------------------------------
def test_sigmoid_matches_the_seed_and_keeps_dtype():
    z = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(z), seed_sigmoid(z), rtol=1e-14, atol=1e-300)
    # the seed's 1 - sigmoid(z) cancels for large z: it is only good to ~1e-16 absolute there
    np.testing.assert_allclose(sigmoid_prime(z), seed_sigmoid_prime(z), rtol=1e-12, atol=1e-15)
    for dtype in (np.float32, np.float64):
        assert sigmoid(z.astype(dtype)).dtype == dtype and sigmoid_prime(z.astype(dtype)).dtype == dtype
    assert sigmoid(np.array([0, 2])).dtype == np.float64  # ints become float64
    before = z.copy()
    sigmoid(z), sigmoid_prime(z)
    np.testing.assert_array_equal(z, before)


def test_sigmoid_is_safe_for_large_inputs():
    z = np.array([-1e4, -800.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, slope = sigmoid(z), sigmoid_prime(z)
    np.testing.assert_array_equal(out, [0, 0, 1, 1])
    np.testing.assert_array_equal(slope, 0)
    assert sigmoid_prime(np.array(40.0)) > 0  # exp(-40) is representable: not rounded to 0
    with pytest.raises(TypeError, match="z"):
        sigmoid(np.array(["a"]))


def test_costs_match_the_seed():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((5, 1)), np.eye(5)[:, [2]]
    a = seed_sigmoid(z)
    assert QuadraticCost.fn(a, y) == pytest.approx(0.5 * np.linalg.norm(a - y) ** 2, rel=1e-14)
    assert CrossEntropyCost.fn(a, y) == pytest.approx(np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a)), rel=1e-14)
    np.testing.assert_allclose(QuadraticCost.delta(z, a, y), (a - y) * seed_sigmoid_prime(z), rtol=1e-14)
    np.testing.assert_array_equal(CrossEntropyCost.delta(z, a, y), a - y)


def test_cross_entropy_of_saturated_outputs_is_finite_without_warnings():
    a, y = np.array([[1.0], [0.0], [1.0]]), np.array([[1.0], [0.0], [0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cost = CrossEntropyCost.fn(a, y)
    assert np.isfinite(cost) and cost > 1e300  # right ones cost 0, the wrong one the largest float
    assert CrossEntropyCost.fn(a[:2], y[:2]) == 0


# --- network --------------------------------------------------------------------------------------
def test_shapes_and_initializers_are_seeded():
    net = Network([400, 300, 2], rng=0)
    assert net.num_layers == 3 and net.sizes == [400, 300, 2]
    assert [w.shape for w in net.weights] == [(300, 400), (2, 300)]
    assert [b.shape for b in net.biases] == [(300, 1), (2, 1)]
    assert net.weights[0].std() == pytest.approx(1 / np.sqrt(400), rel=0.02)
    assert net.biases[0].std() == pytest.approx(1, rel=0.1)
    net.large_weight_initializer()
    assert net.weights[0].std() == pytest.approx(1, rel=0.02)
    again = Network([400, 300, 2], rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.weights[1], Network([400, 300, 2], rng=0).weights[1])
    assert not np.array_equal(Network([400, 300, 2], rng=1).weights[1], again.weights[1])
    assert Network([3, 2], dtype=np.float32).weights[0].dtype == np.float32


def test_feedforward_of_a_batch_is_the_columns_fed_forward_one_by_one():
    net = Network([4, 5, 3], rng=0)
    x = np.random.default_rng(1).standard_normal((4, 6))
    out = net.feedforward(x)
    assert out.shape == (3, 6)
    for column in range(6):
        a = x[:, [column]]
        for b, w in zip(net.biases, net.weights):
            a = seed_sigmoid(np.dot(w, a) + b)
        np.testing.assert_allclose(net.feedforward(x[:, [column]]), a, rtol=1e-14)
        np.testing.assert_allclose(out[:, [column]], a, rtol=1e-14)


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_backprop_matches_numeric_gradients_of_the_cost(cost):
    net = Network([3, 4, 5, 2], cost, rng=0)
    x, y = batch(toy_data(3, 3, 2, seed=1))

    def total_cost(_):
        return cost.fn(net.feedforward(x), y)

    nabla_b, nabla_w = net.backprop(x, y)
    for layer in range(net.num_layers - 1):
        for analytic, param in ((nabla_w[layer], net.weights[layer]), (nabla_b[layer], net.biases[layer])):
            numeric = eval_numerical_gradient(total_cost, param, verbose=False)
            assert rel_error(analytic, numeric) <= LAYER_GRADIENT, (cost.__name__, layer)


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_batched_backprop_is_the_sum_of_per_sample_backprops(cost):
    net = Network([4, 6, 3], cost, rng=2)
    data = toy_data(5)
    nabla_b, nabla_w = net.backprop(*batch(data))
    per_sample = [net.backprop(x, y) for x, y in data]
    for layer in range(2):
        np.testing.assert_allclose(nabla_b[layer], sum(s[0][layer] for s in per_sample), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(nabla_w[layer], sum(s[1][layer] for s in per_sample), rtol=1e-12, atol=1e-15)
        reference_b, reference_w = seed_backprop(net.weights, net.biases, cost, *data[0])
        np.testing.assert_allclose(per_sample[0][0][layer], reference_b[layer], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(per_sample[0][1][layer], reference_w[layer], rtol=1e-12, atol=1e-15)


def test_backprop_against_torch_autograd():
    torch = pytest.importorskip("torch")
    net = Network([4, 5, 3], rng=3)
    x, y = batch(toy_data(4, seed=4))
    params = [torch.tensor(p, requires_grad=True) for p in net.weights + net.biases]
    a = torch.tensor(x)
    for w, b in zip(params[:2], params[2:]):
        a = torch.sigmoid(w @ a + b)
    torch.nn.functional.binary_cross_entropy(a, torch.tensor(y), reduction="sum").backward()
    nabla_b, nabla_w = net.backprop(x, y)
    for ours, param in zip(nabla_w + nabla_b, params):
        np.testing.assert_allclose(ours, param.grad.numpy(), **tolerance("torch-gradient-float64"))


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_update_mini_batch_matches_the_seeds_per_sample_loop(cost):
    net = Network([4, 6, 3], cost, rng=5)
    mini_batch, eta, lmbda, n = toy_data(7, seed=6), 0.7, 2.0, 50
    weights, biases = seed_update_mini_batch(net.weights, net.biases, cost, mini_batch, eta, lmbda, n)
    before = [x.copy() for x, _ in mini_batch]
    net.update_mini_batch(mini_batch, eta, lmbda, n)
    for ours, reference in zip(net.weights + net.biases, weights + biases):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)
    for (x, _), old in zip(mini_batch, before):
        np.testing.assert_array_equal(x, old)


def test_total_cost_and_accuracy_match_the_seed():
    for cost in COSTS:
        net = Network([4, 6, 3], cost, rng=7)
        train, labelled = toy_data(9, seed=8), toy_data(9, seed=8, one_hot=False)
        assert net.total_cost(train, 0.3) == pytest.approx(seed_total_cost(net, train, 0.3), rel=1e-12)
        assert net.total_cost(labelled, 0.3, convert=True) == pytest.approx(net.total_cost(train, 0.3), rel=1e-14)
        expected = sum(int(np.argmax(net.feedforward(x)) == label) for x, label in labelled)
        assert net.evaluate(labelled) == net.accuracy(labelled) == net.accuracy(train, convert=True) == expected


def test_float32_network_stays_float32():
    net = Network([4, 5, 3], rng=0, dtype=np.float32)
    data = toy_data(6)
    assert net.feedforward(batch(data)[0]).dtype == np.float32
    assert all(g.dtype == np.float32 for grads in net.backprop(*batch(data)) for g in grads)
    net.SGD(data, 2, 3, 0.5, 0.1, verbose=False)
    assert all(p.dtype == np.float32 for p in net.weights + net.biases)


def test_sgd_monitors_one_entry_per_epoch_and_is_reproducible(capsys):
    train, evaluation = toy_data(20, seed=1), toy_data(8, seed=2, one_hot=False)
    snapshot = [(x.copy(), y.copy()) for x, y in train]

    def run(verbose):
        net = Network([4, 5, 3], rng=3)
        history = net.SGD(train, 3, 4, 0.5, 0.1, evaluation_data=evaluation, monitor_evaluation_cost=True,
                          monitor_evaluation_accuracy=True, monitor_training_cost=True,
                          monitor_training_accuracy=True, verbose=verbose)
        return net, history

    net, (evaluation_cost, evaluation_accuracy, training_cost, training_accuracy) = run(verbose=False)
    assert capsys.readouterr().out == ""
    assert [len(h) for h in (evaluation_cost, evaluation_accuracy, training_cost, training_accuracy)] == [3] * 4
    assert evaluation_cost[-1] == pytest.approx(net.total_cost(evaluation, 0.1, convert=True), rel=1e-12)
    assert training_cost[-1] == pytest.approx(net.total_cost(train, 0.1), rel=1e-12)
    assert evaluation_accuracy[-1] == net.accuracy(evaluation)
    assert training_accuracy[-1] == net.accuracy(train, convert=True)
    assert training_cost[-1] < training_cost[0]
    again, history = run(verbose=True)
    assert "Epoch 2 training complete" in capsys.readouterr().out
    np.testing.assert_array_equal(again.weights[0], net.weights[0])
    assert history[0] == evaluation_cost
    assert all(np.array_equal(x, x0) and np.array_equal(y, y0) for (x, y), (x0, y0) in zip(train, snapshot))
    assert Network([4, 5, 3], rng=3).SGD(train, 2, 4, 0.5, verbose=False) == ([], [], [], [])


def test_early_stopping_stops_once_evaluation_accuracy_stalls():
    train, evaluation = toy_data(12, seed=1), toy_data(6, seed=2, one_hot=False)
    net = Network([4, 5, 3], rng=0)
    # a vanishing learning rate leaves the accuracy where it starts: best after epoch 0, then stalled
    _, accuracy, _, _ = net.SGD(train, 20, 4, 1e-12, evaluation_data=evaluation, monitor_evaluation_accuracy=True,
                                early_stopping_n=3, verbose=False)
    assert len(accuracy) == 4 and len(set(accuracy)) == 1
    _, accuracy, _, _ = net.SGD(train, 5, 4, 1e-12, evaluation_data=evaluation, monitor_evaluation_accuracy=True,
                                verbose=False)
    assert len(accuracy) == 5
    with pytest.raises(ValueError, match="evaluation_data"):
        net.SGD(train, 5, 4, 0.1, early_stopping_n=2, verbose=False)


def test_save_load_round_trip(tmp_path):
    for cost, dtype in ((QuadraticCost, np.float64), (CrossEntropyCost, np.float32)):
        net = Network([4, 5, 3], cost, rng=1, dtype=dtype)
        net.SGD(toy_data(8), 1, 4, 0.5, verbose=False)
        path = tmp_path / "net.json"
        net.save(path)
        loaded = nielsen.load(path)
        assert loaded.sizes == net.sizes and loaded.cost is cost and loaded.dtype == dtype
        for ours, theirs in zip(loaded.weights + loaded.biases, net.weights + net.biases):
            assert ours.dtype == dtype
            np.testing.assert_array_equal(ours, theirs)
    assert set(json.loads(path.read_text())) >= {"sizes", "weights", "biases", "cost"}


@pytest.mark.parametrize("change,match", [
    (lambda s: s.update(cost="HingeCost"), "unknown cost"),
    (lambda s: s.pop("weights"), "expected a JSON object"),
    (lambda s: s.update(sizes=[4, 0, 3]), "malformed"),
    (lambda s: s["weights"][0].pop(), "shapes"),
    (lambda s: s["biases"][1].append([1.0, 2.0]), "malformed"),
])
def test_load_refuses_malformed_files(tmp_path, change, match):
    path = tmp_path / "net.json"
    Network([4, 5, 3], rng=0).save(path)
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=match) as info:
        nielsen.load(path)
    assert "net.json" in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="net.json"):
        nielsen.load(path)


def test_bad_arguments_raise_errors_naming_them():
    with pytest.raises(ValueError, match="sizes"):
        Network([5])
    with pytest.raises(ValueError, match="sizes"):
        Network([5, 0, 2])
    with pytest.raises(TypeError, match="sizes"):
        Network([5, 2.0])
    with pytest.raises(TypeError, match="sizes"):
        Network(5)
    with pytest.raises(TypeError, match="dtype"):
        Network([2, 2], dtype=np.int32)
    with pytest.raises(ValueError, match="cost"):
        Network([2, 2], cost="quadratic")
    net = Network([4, 5, 3], rng=0)
    with pytest.raises(ValueError, match="a must be"):
        net.feedforward(np.zeros(4))
    with pytest.raises(ValueError, match="y must be"):
        net.backprop(np.zeros((4, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="training_data"):
        net.SGD(toy_data(4, one_hot=False), 1, 2, 0.1, verbose=False)
    with pytest.raises(ValueError, match="training_data"):
        net.SGD([(np.zeros((5, 1)), np.zeros((3, 1)))], 1, 2, 0.1, verbose=False)
    with pytest.raises(ValueError, match="mini_batch"):
        net.update_mini_batch([], 0.1, 0.0, 10)
    with pytest.raises(ValueError, match="eta"):
        net.SGD(toy_data(4), 1, 2, -0.1, verbose=False)
    with pytest.raises(TypeError, match="mini_batch_size"):
        net.SGD(toy_data(4), 1, 2.5, 0.1, verbose=False)
    with pytest.raises(ValueError, match="data: labels"):
        net.evaluate(toy_data(4, n_out=5, one_hot=False))
    with pytest.raises(ValueError, match="y has 2 labels"):
        nielsen.vectorized_data(np.zeros((3, 4)), np.array([0, 1]), one_hot=False)
    with pytest.raises(ValueError, match="data must be"):
        nielsen.digits_data({"X_train": np.zeros((2, 64))})


def test_vectorized_data_formats_and_copies():
    X = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    train = nielsen.vectorized_data(X, np.array([2, 0, 1]), one_hot=True)
    x, y = train[0]
    assert x.shape == (8, 1) and x.dtype == np.float32 and y.shape == (10, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y.ravel(), np.eye(10)[2])
    np.testing.assert_array_equal(x.ravel(), X[0].ravel())
    test = nielsen.vectorized_data(X, np.array([2, 0, 1]), one_hot=False)
    assert [label for _, label in test] == [2, 0, 1] and all(isinstance(label, int) for _, label in test)
    x[0, 0] = -1.0
    assert X[0, 0, 0] == 0  # the pairs do not alias X


def test_digits_defaults_reach_93_percent():
    pytest.importorskip("sklearn")
    from nn.data import load_digits

    data = load_digits()
    training, validation, test = nielsen.digits_data(data)
    assert (len(training), len(validation), len(test)) == (1257, 180, 360)
    assert training[0][0].shape == (64, 1) and training[0][1].shape == (10, 1)
    settings = dict(nielsen.DIGITS_DEFAULTS)
    net = Network(settings.pop("sizes"), rng=0)
    net.SGD(training, **settings, verbose=False)
    assert net.evaluate(test) / len(test) >= 0.93
