"""nn.classifiers: SVM and softmax losses against the seed's formulas and numeric gradients, SGD, search, digits."""
import itertools
import math

import numpy as np
import pytest

from fastconv.cases import tolerance
from nn.classifiers import (DIGITS_DEFAULTS, LinearClassifier, LinearSVM, Softmax, grid_search, linear_features,
                            predict_linear_classifier, sample_batch, softmax_get_search_params, softmax_loss_naive,
                            softmax_loss_vectorized, svm_get_search_params, svm_loss_naive, svm_loss_vectorized,
                            test_one_param_set, train_linear_classifier)
from nn.gradient_check import eval_numerical_gradient, rel_error

LAYER_GRADIENT = tolerance("layer-gradient")
LOSSES = [svm_loss_naive, svm_loss_vectorized, softmax_loss_naive, softmax_loss_vectorized]


# The seed's (EECS 498 A2) loops, transcribed to NumPy: the reference every implementation must match.
def seed_svm_loss(W, X, y, reg):
    dW = np.zeros_like(W)
    loss = 0.0
    for i in range(X.shape[0]):
        scores = W.T.dot(X[i])
        correct_class_score = scores[y[i]]
        for j in range(W.shape[1]):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + 1
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    return loss / X.shape[0] + reg * np.sum(W * W), dW / X.shape[0] + 2 * W * reg


def seed_softmax_loss(W, X, y, reg):
    dW = np.zeros_like(W)
    loss = 0.0
    for i in range(X.shape[0]):
        scores = W.T.dot(X[i])
        scores -= scores.max()
        scores = np.exp(scores)
        scores_prob = scores / scores.sum()
        loss -= np.log(scores_prob[y[i]])
        for j in range(W.shape[1]):
            dW[:, j] += (scores_prob[j] - (1 if j == y[i] else 0)) * X[i]
    return loss / X.shape[0] + reg * np.sum(W * W), dW / X.shape[0] + 2 * reg * W


SEED_REFERENCE = {svm_loss_naive: seed_svm_loss, svm_loss_vectorized: seed_svm_loss,
                  softmax_loss_naive: seed_softmax_loss, softmax_loss_vectorized: seed_softmax_loss}


def problem(seed=0, N=7, D=5, C=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((D, C)).astype(dtype), rng.standard_normal((N, D)).astype(dtype),
            rng.integers(0, C, N))


@pytest.fixture(scope="module")
def digits():
    from nn.data import load_digits
    return linear_features(load_digits())


# ----------------------------------------------------------------------------- losses

@pytest.mark.parametrize("loss_func", LOSSES, ids=lambda f: f.__name__)
def test_loss_matches_the_seed_formula(loss_func):
    W, X, y = problem()
    loss, dW = loss_func(W, X, y, 0.1)
    ref_loss, ref_dW = SEED_REFERENCE[loss_func](W, X, y, 0.1)
    assert isinstance(loss, float)
    assert abs(loss - ref_loss) <= tolerance("loss-float64") * abs(ref_loss)
    np.testing.assert_allclose(dW, ref_dW, **tolerance(np.float64))


@pytest.mark.parametrize("naive,vectorized", [(svm_loss_naive, svm_loss_vectorized),
                                              (softmax_loss_naive, softmax_loss_vectorized)])
def test_naive_and_vectorized_agree(naive, vectorized):
    W, X, y = problem(seed=1, N=40, D=12, C=6)
    loss, dW = naive(W, X, y, 0.05)
    fast_loss, fast_dW = vectorized(W, X, y, 0.05)
    assert abs(loss - fast_loss) <= tolerance("loss-float64") * abs(loss)
    np.testing.assert_allclose(fast_dW, dW, **tolerance(np.float64))


@pytest.mark.parametrize("loss_func", LOSSES, ids=lambda f: f.__name__)
def test_dW_matches_numeric_gradient(loss_func):
    W, X, y = problem(seed=2)
    _, dW = loss_func(W, X, y, 0.3)
    numeric = eval_numerical_gradient(lambda w: loss_func(w, X, y, 0.3)[0], W.copy(), verbose=False)
    assert rel_error(dW, numeric) <= LAYER_GRADIENT


@pytest.mark.parametrize("loss_func", [softmax_loss_naive, softmax_loss_vectorized], ids=lambda f: f.__name__)
def test_softmax_of_zero_weights_is_log_C(loss_func):
    _, X, y = problem(C=10)
    loss, _ = loss_func(np.zeros((5, 10)), X, y, 1.0)
    assert loss == pytest.approx(math.log(10), rel=1e-12)


@pytest.mark.parametrize("loss_func", [svm_loss_naive, svm_loss_vectorized], ids=lambda f: f.__name__)
def test_svm_of_zero_weights_is_C_minus_1(loss_func):
    _, X, y = problem(C=10)
    assert loss_func(np.zeros((5, 10)), X, y, 1.0)[0] == pytest.approx(9, rel=1e-12)


@pytest.mark.parametrize("loss_func", [softmax_loss_naive, softmax_loss_vectorized], ids=lambda f: f.__name__)
def test_softmax_is_stable_for_huge_scores(loss_func):
    W, X, y = problem()
    W = W * 1e4  # scores of ~1e4: exp overflows without the max shift
    loss, dW = loss_func(W, X, y, 0.0)
    scores = X @ W
    shifted = scores - scores.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y])
    assert np.isfinite(dW).all() and loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss_func", LOSSES, ids=lambda f: f.__name__)
def test_float32_is_kept_and_inputs_untouched(loss_func):
    W, X, y = problem(seed=3, dtype=np.float32)
    copies = W.copy(), X.copy(), y.copy()
    loss, dW = loss_func(W, X, y, 0.1)
    assert isinstance(loss, float) and dW.dtype == np.float32
    for before, after in zip(copies, (W, X, y)):
        np.testing.assert_array_equal(before, after)
    ref_loss, ref_dW = loss_func(W.astype(np.float64), X.astype(np.float64), y, 0.1)
    assert abs(loss - ref_loss) <= tolerance("loss-float32") * abs(ref_loss)
    np.testing.assert_allclose(dW, ref_dW, **tolerance(np.float32))


def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    W, X, y = problem(seed=4, N=9, D=6, C=5)
    W_t = torch.tensor(W, requires_grad=True)
    scores, labels, penalty = torch.tensor(X) @ W_t, torch.tensor(y), 0.2 * (W_t * W_t).sum()
    # multi_margin_loss averages its hinge terms over the C classes too
    oracles = {svm_loss_vectorized: torch.nn.functional.multi_margin_loss(scores, labels) * W.shape[1] + penalty,
               softmax_loss_vectorized: torch.nn.functional.cross_entropy(scores, labels) + penalty}
    for loss_func, oracle in oracles.items():
        (expected_dW,) = torch.autograd.grad(oracle, W_t, retain_graph=True)
        loss, dW = loss_func(W, X, y, 0.2)
        assert loss == pytest.approx(oracle.item(), rel=1e-12)
        np.testing.assert_allclose(dW, expected_dW.numpy(), **tolerance(np.float64))


def _bad_loss_args():
    W, X, y = problem()
    return [
        ("X", dict(X=X[0])),
        ("X", dict(X=X.tolist())),
        ("X", dict(X=X.astype(np.int64))),
        ("W", dict(W=W[:-1])),
        ("W", dict(W=W.astype(np.float32))),
        ("y", dict(y=y[:-1])),
        ("y", dict(y=y.astype(np.float64))),
        ("y", dict(y=np.where(y == 0, 4, y))),
        ("y", dict(y=np.where(y == 0, -1, y))),
        ("reg", dict(reg=-0.1)),
        ("reg", dict(reg=float("nan"))),
    ]


@pytest.mark.parametrize("loss_func", LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name,bad", _bad_loss_args())
def test_loss_rejects_malformed_input(loss_func, name, bad):
    W, X, y = problem()
    args = dict(W=W, X=X, y=y, reg=0.1) | bad
    with pytest.raises((ValueError, TypeError), match=rf"^{name}\b"):
        loss_func(**args)


# ----------------------------------------------------------------------------- SGD and prediction

def test_sample_batch_draws_paired_rows_with_replacement_from_the_first_num_train():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    X_batch, y_batch = sample_batch(X, y, 4, 30, rng=0)
    assert X_batch.shape == (30, 2) and y_batch.shape == (30,)
    np.testing.assert_array_equal(X_batch, X[y_batch])
    assert set(y_batch) == {0, 1, 2, 3}  # 30 draws from 4 rows: repeats, never beyond num_train
    again = sample_batch(X, y, 4, 30, rng=0)
    np.testing.assert_array_equal(again[1], y_batch)


@pytest.mark.parametrize("kwargs,name", [(dict(num_train=11, batch_size=2), "num_train"),
                                         (dict(num_train=0, batch_size=2), "num_train"),
                                         (dict(num_train=5, batch_size=0), "batch_size"),
                                         (dict(num_train=5, batch_size=2.0), "batch_size")])
def test_sample_batch_rejects_bad_sizes(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=rf"^{name}\b"):
        sample_batch(np.zeros((10, 2)), np.zeros(10, np.int64), **kwargs)


def test_train_initializes_W_and_lowers_the_loss():
    W_true, X, _ = problem(seed=5, N=200, D=6, C=3)
    y = np.argmax(X @ W_true, axis=1)
    X = X.astype(np.float32)
    W, history = train_linear_classifier(softmax_loss_vectorized, None, X, y, learning_rate=0.5, num_iters=60,
                                         batch_size=50, rng=0)
    assert W.shape == (6, 3) and W.dtype == np.float32
    assert len(history) == 60 and all(isinstance(loss, float) for loss in history)
    assert history[0] == pytest.approx(math.log(3), abs=1e-3)  # 1e-6 * randn: scores about 0
    assert np.mean(history[-10:]) < 0.5 * history[0]
    again, _ = train_linear_classifier(softmax_loss_vectorized, None, X, y, learning_rate=0.5, num_iters=60,
                                       batch_size=50, rng=0)
    np.testing.assert_array_equal(again, W)


def test_train_does_not_modify_the_callers_W():
    W, X, y = problem(seed=6)
    start = W.copy()
    trained, _ = train_linear_classifier(svm_loss_vectorized, W, X, y, learning_rate=0.1, num_iters=5, batch_size=4,
                                         rng=0)
    np.testing.assert_array_equal(W, start)
    assert not np.array_equal(trained, start)


def test_train_verbose_prints_every_100_iterations(capsys):
    W, X, y = problem()
    train_linear_classifier(svm_loss_vectorized, W, X, y, num_iters=201, batch_size=4, verbose=True, rng=0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"iteration {i} / 201" for i in (0, 100, 200)]


@pytest.mark.parametrize("kwargs,name", [(dict(num_iters=0), "num_iters"), (dict(batch_size=-1), "batch_size"),
                                         (dict(learning_rate=0.0), "learning_rate"), (dict(reg=-1.0), "reg"),
                                         (dict(loss_func="svm"), "loss_func")])
def test_train_rejects_bad_arguments(kwargs, name):
    W, X, y = problem()
    args = dict(loss_func=svm_loss_vectorized, W=W, X=X, y=y) | kwargs
    with pytest.raises((ValueError, TypeError), match=rf"^{name}\b"):
        train_linear_classifier(**args)


def test_predict_is_the_argmax_of_the_scores():
    W, X, _ = problem(seed=7)
    labels = predict_linear_classifier(W, X)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [np.argmax(row @ W) for row in X])
    with pytest.raises(ValueError, match=r"^W\b"):
        predict_linear_classifier(W.T, X)


# ----------------------------------------------------------------------------- classes and search

@pytest.mark.parametrize("cls,loss_func", [(LinearSVM, svm_loss_vectorized), (Softmax, softmax_loss_vectorized)])
def test_classifier_trains_with_its_own_loss(cls, loss_func):
    W, X, y = problem(seed=8, N=30)
    model = cls(rng=1)
    with pytest.raises(ValueError, match="train"):
        model.predict(X)
    model.W = W.copy()
    assert model.loss(X, y, 0.1)[0] == loss_func(W, X, y, 0.1)[0]
    history = model.train(X, y, learning_rate=0.1, reg=0.1, num_iters=3, batch_size=5)
    expected, expected_history = train_linear_classifier(loss_func, W, X, y, 0.1, 0.1, 3, 5, rng=1)
    assert history == expected_history
    np.testing.assert_array_equal(model.W, expected)
    np.testing.assert_array_equal(model.predict(X), predict_linear_classifier(expected, X))


def test_linear_classifier_is_abstract():
    with pytest.raises(TypeError):
        LinearClassifier()


def test_one_param_set_trains_and_reports_accuracies(digits):
    model = Softmax(rng=0)
    returned, train_acc, val_acc = test_one_param_set(model, digits, 0.5, 1e-3, num_iters=50)
    assert returned is model and model.W.shape == (65, 10)
    assert train_acc == np.mean(model.predict(digits["X_train"]) == digits["y_train"])
    assert val_acc == np.mean(model.predict(digits["X_val"]) == digits["y_val"]) and val_acc > 0.8
    with pytest.raises(ValueError, match="data_dict"):
        test_one_param_set(Softmax(), {"X_train": digits["X_train"]}, 0.5, 1e-3)


@pytest.mark.parametrize("factory,get_params", [(lambda: LinearSVM(rng=0), svm_get_search_params),
                                                (lambda: Softmax(rng=0), softmax_get_search_params)])
def test_grid_search_keeps_the_best_validation_model(digits, factory, get_params):
    learning_rates, regs = get_params()
    assert len(learning_rates) >= 2 and len(regs) >= 2 and len(learning_rates) * len(regs) < 25
    best, results = grid_search(factory, digits, learning_rates, regs, num_iters=100)
    assert set(results) == set(itertools.product(learning_rates, regs))
    best_val = max(val for _, val in results.values())
    assert np.mean(best.predict(digits["X_val"]) == digits["y_val"]) == best_val
    assert best_val >= 0.9  # after only 100 iterations


def test_linear_features_flattens_centers_and_appends_ones():
    rng = np.random.default_rng(9)
    data = {"X_train": rng.random((6, 1, 2, 2), dtype=np.float32), "y_train": np.arange(6),
            "X_val": rng.random((3, 1, 2, 2), dtype=np.float32)}
    before = data["X_train"].copy()
    features = linear_features(data)
    np.testing.assert_array_equal(data["X_train"], before)
    assert features["y_train"] is data["y_train"]
    for key, n in (("X_train", 6), ("X_val", 3)):
        assert features[key].shape == (n, 5) and features[key].dtype == np.float32
        np.testing.assert_array_equal(features[key][:, -1], 1)
    np.testing.assert_allclose(features["X_train"][:, :4].mean(axis=0), 0, atol=1e-6)
    expected_val = data["X_val"].reshape(3, 4) - data["X_train"].reshape(6, 4).mean(axis=0)
    np.testing.assert_allclose(features["X_val"][:, :4], expected_val, rtol=1e-6)
    with pytest.raises(ValueError, match="X_train"):
        linear_features({"X_val": data["X_val"]})


@pytest.mark.parametrize("name,cls", [("linear-svm", LinearSVM), ("softmax", Softmax)])
def test_digits_defaults_reach_93_percent_test_accuracy(digits, name, cls):
    settings = DIGITS_DEFAULTS[name]
    model = cls(rng=0)
    model.train(digits["X_train"], digits["y_train"], **settings)
    assert np.mean(model.predict(digits["X_test"]) == digits["y_test"]) >= 0.93
