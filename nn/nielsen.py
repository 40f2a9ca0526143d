"""Nielsen's sigmoid network (network / network2 of "Neural Networks and Deep Learning"), batched by columns."""
from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

from . import layers
from .modules import _float_dtype
from .optim import _check_range

__all__ = ["sigmoid", "sigmoid_prime", "QuadraticCost", "CrossEntropyCost", "COSTS", "Network", "load",
           "vectorized_data", "digits_data", "DIGITS_DEFAULTS"]

# The seed's MNIST recipe scaled to nn.data.load_digits() (1257 training images of 8x8): 96.5-97.5 %
# test accuracy over init seeds, in about half a second. lmbda is far below the seed's 5.0 because the
# decay per step, eta * lmbda / n, grows as the training set shrinks (n = 1257 here, 50000 for MNIST).
DIGITS_DEFAULTS = dict(sizes=[64, 30, 10], epochs=30, mini_batch_size=10, eta=0.5, lmbda=0.1)


def _float_array(name, z):
    """``z`` as an array, float32 and float64 kept, anything else numeric as float64."""
    z = np.asarray(z)
    if z.dtype in (np.float32, np.float64):
        return z
    if z.dtype == bool or not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real numeric array, got dtype {z.dtype}")
    return z.astype(np.float64)


def sigmoid(z):
    """``1 / (1 + exp(-z))`` elementwise, without overflow for large ``|z|``."""
    return layers.sigmoid(_float_array("z", z))


def sigmoid_prime(z):
    """The derivative ``sigmoid(z) * (1 - sigmoid(z))``, accurate (not rounded to 0) for large ``|z|``."""
    e = np.exp(-np.abs(_float_array("z", z)))
    return e / ((1 + e) * (1 + e))


class QuadraticCost:
    """``0.5 * ||a - y||^2``, summed over the columns of a batch."""

    @staticmethod
    def fn(a, y):
        return 0.5 * np.sum((a - y) ** 2)

    @staticmethod
    def delta(z, a, y):
        """The error of the output layer, dC/dz."""
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    """``-sum(y ln a + (1 - y) ln(1 - a))``; a saturated wrong output costs a huge finite number, not inf."""

    @staticmethod
    def fn(a, y):
        # 0 * log(0) is nan and log(0) is -inf; nan_to_num turns them into 0 and the largest float
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        """The error of the output layer, dC/dz: sigmoid's derivative cancels against the cost's."""
        return a - y


COSTS = {cost.__name__: cost for cost in (QuadraticCost, CrossEntropyCost)}


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_sizes(sizes):
    if not isinstance(sizes, (list, tuple)):
        raise TypeError(f"sizes must be a list of ints, got {type(sizes).__name__}")
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least 2 layers (input and output), got {list(sizes)}")
    return [_check_int("sizes", size, 1) for size in sizes]


def _pairs(data, name):
    """``data`` as a non-empty list of (x, y) pairs."""
    try:
        data = [(x, y) for x, y in data]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of (x, y) pairs") from None
    if not data:
        raise ValueError(f"{name} is empty")
    return data


def _stack_columns(columns, rows, name):
    """The (rows, 1) arrays ``columns`` side by side as one (rows, len(columns)) array."""
    columns = [np.asarray(column) for column in columns]
    bad = next((column.shape for column in columns if column.shape != (rows, 1)), None)
    if bad is not None:
        raise ValueError(f"{name}: every entry must be a ({rows}, 1) column, got shape {bad}")
    return np.concatenate(columns, axis=1)


def _one_hot(labels, num_classes, dtype):
    """(num_classes, N): column i is 1 in row labels[i]."""
    return (np.arange(num_classes)[:, None] == labels).astype(dtype)


class Network:
    """A fully connected sigmoid network trained by mini-batch SGD with L2 weight decay (network2).

    ``sizes`` are the neurons per layer, input first. ``weights[l]`` is (sizes[l+1], sizes[l]),
    ``biases[l]`` is (sizes[l+1], 1); samples are columns. ``cost`` is ``CrossEntropyCost`` or
    ``QuadraticCost``. ``rng`` (seed or Generator) drives the initialization and the shuffling;
    parameters and every computation are in ``dtype``.
    """

    def __init__(self, sizes, cost=CrossEntropyCost, *, rng=None, dtype=np.float64):
        self.sizes = _check_sizes(sizes)
        self.num_layers = len(self.sizes)
        if cost not in COSTS.values():
            raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        self.cost = cost
        self.dtype = _float_dtype(dtype)
        self.rng = np.random.default_rng(rng)
        self.default_weight_initializer()

    def _init(self, weight_scale):
        shapes = list(zip(self.sizes[1:], self.sizes[:-1]))
        self.biases = [self.rng.standard_normal((y, 1)).astype(self.dtype) for y, _ in shapes]
        self.weights = [(self.rng.standard_normal((y, x)) * weight_scale(x)).astype(self.dtype) for y, x in shapes]

    def default_weight_initializer(self):
        """Weights N(0, 1/fan_in), so hidden neurons start unsaturated; biases N(0, 1)."""
        self._init(lambda fan_in: 1 / np.sqrt(fan_in))

    def large_weight_initializer(self):
        """Weights and biases N(0, 1), as the first "network"."""
        self._init(lambda fan_in: 1.0)

    def _input(self, a, name="a"):
        a = _float_array(name, a)
        if a.ndim != 2 or a.shape[0] != self.sizes[0]:
            raise ValueError(f"{name} must be ({self.sizes[0]}, k) (samples as columns), got shape {a.shape}")
        return a.astype(self.dtype, copy=False)

    def feedforward(self, a):
        """The output for input ``a``: a column (n, 1) or a batch (n, k) of columns."""
        a = self._input(a)
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(w @ a + b)
        return a

    def backprop(self, x, y):
        """``(nabla_b, nabla_w)``, the gradient of the cost summed over the columns of ``x`` (n, k), ``y`` (m, k)."""
        x = self._input(x, "x")
        y = _float_array("y", y)
        if y.shape != (self.sizes[-1], x.shape[1]):
            raise ValueError(f"y must be ({self.sizes[-1]}, {x.shape[1]}) to match x, got shape {y.shape}")
        activations, zs = [x], []
        for b, w in zip(self.biases, self.weights):
            zs.append(w @ activations[-1] + b)
            activations.append(sigmoid(zs[-1]))
        delta = self.cost.delta(zs[-1], activations[-1], y.astype(self.dtype, copy=False))
        nabla_b, nabla_w = [], []
        for layer in range(self.num_layers - 2, -1, -1):
            nabla_b.insert(0, delta.sum(axis=1, keepdims=True))
            nabla_w.insert(0, delta @ activations[layer].T)
            if layer:
                delta = (self.weights[layer].T @ delta) * sigmoid_prime(zs[layer - 1])
        return nabla_b, nabla_w

    def _step(self, x, y, eta, lmbda, n):
        """One SGD step on the columns of ``x``, ``y``; weight decay scaled by the training set size ``n``."""
        nabla_b, nabla_w = self.backprop(x, y)
        rate = eta / x.shape[1]
        self.weights = [(1 - eta * lmbda / n) * w - rate * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - rate * nb for b, nb in zip(self.biases, nabla_b)]

    def update_mini_batch(self, mini_batch, eta, lmbda, n):
        """One SGD step on the (x (n, 1), y (m, 1)) pairs of ``mini_batch`` at once, L2 weight decay ``lmbda``."""
        x, y = self._training_columns(mini_batch, "mini_batch")
        self._step(x, y, _check_range("eta", eta, 0, math.inf, low_open=True),
                   _check_range("lmbda", lmbda, 0, math.inf), _check_int("n", n, 1))

    def _training_columns(self, data, name):
        xs, ys = zip(*_pairs(data, name))
        return (_stack_columns(xs, self.sizes[0], name).astype(self.dtype, copy=False),
                _stack_columns(ys, self.sizes[-1], name).astype(self.dtype, copy=False))

    def _columns(self, data, one_hot, name):
        """``(X (n, N), Y (m, N) one-hot)`` from pairs whose y are one-hot columns, else int labels."""
        if one_hot:
            return self._training_columns(data, name)
        xs, labels = zip(*_pairs(data, name))
        x = _stack_columns(xs, self.sizes[0], name)
        return x, _one_hot(layers.class_labels(name, labels, self.sizes[-1]), self.sizes[-1], self.dtype)

    def accuracy(self, data, convert=False):
        """How many of ``data`` the network classifies right: y are int labels, or one-hot with ``convert``."""
        return self._accuracy(*self._columns(data, convert, "data"))

    def evaluate(self, data):
        """How many of ``data`` (pairs (x, int label)) the network classifies right."""
        return self.accuracy(data)

    def total_cost(self, data, lmbda, convert=False):
        """The mean cost over ``data`` plus the L2 term; y are one-hot, or int labels with ``convert``."""
        return self._total_cost(*self._columns(data, not convert, "data"), _check_range("lmbda", lmbda, 0, math.inf))

    def _accuracy(self, x, y):
        return int(np.sum(np.argmax(self.feedforward(x), axis=0) == np.argmax(y, axis=0)))

    def _total_cost(self, x, y, lmbda):
        n = x.shape[1]
        weight_norm = sum(float(np.sum(w * w)) for w in self.weights)
        return float(self.cost.fn(self.feedforward(x), y)) / n + 0.5 * lmbda / n * weight_norm

    def SGD(self, training_data, epochs, mini_batch_size, eta, lmbda=0.0, evaluation_data=None,
            monitor_evaluation_cost=False, monitor_evaluation_accuracy=False,
            monitor_training_cost=False, monitor_training_accuracy=False, early_stopping_n=0, *, verbose=True):
        """Train by mini-batch SGD; returns the monitored (evaluation_cost, evaluation_accuracy,
        training_cost, training_accuracy) lists, one entry per epoch.

        ``training_data`` pairs (x (n, 1), one-hot y (m, 1)); ``evaluation_data`` pairs (x, int label).
        With ``early_stopping_n > 0`` training stops once the evaluation accuracy has not improved
        for that many epochs. Accuracies are counts of correct samples.
        """
        x_train, y_train = self._training_columns(training_data, "training_data")
        epochs = _check_int("epochs", epochs, 0)
        mini_batch_size = _check_int("mini_batch_size", mini_batch_size, 1)
        eta = _check_range("eta", eta, 0, math.inf, low_open=True)
        lmbda = _check_range("lmbda", lmbda, 0, math.inf)
        early_stopping_n = _check_int("early_stopping_n", early_stopping_n, 0)
        needs_evaluation = monitor_evaluation_cost or monitor_evaluation_accuracy or early_stopping_n
        if needs_evaluation and evaluation_data is None:
            raise ValueError("evaluation_data is needed to monitor it or to stop early")
        if evaluation_data is not None:
            x_eval, y_eval = self._columns(evaluation_data, False, "evaluation_data")
        n = x_train.shape[1]
        evaluation_cost, evaluation_accuracy, training_cost, training_accuracy = [], [], [], []
        best_accuracy, epochs_without_improvement = -1, 0
        say = print if verbose else (lambda *args: None)
        for epoch in range(epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, mini_batch_size):
                batch = order[start:start + mini_batch_size]
                self._step(x_train[:, batch], y_train[:, batch], eta, lmbda, n)
            say(f"Epoch {epoch} training complete")
            if monitor_training_cost:
                training_cost.append(self._total_cost(x_train, y_train, lmbda))
                say(f"Cost on training data: {training_cost[-1]}")
            if monitor_training_accuracy:
                training_accuracy.append(self._accuracy(x_train, y_train))
                say(f"Accuracy on training data: {training_accuracy[-1]} / {n}")
            if monitor_evaluation_cost:
                evaluation_cost.append(self._total_cost(x_eval, y_eval, lmbda))
                say(f"Cost on evaluation data: {evaluation_cost[-1]}")
            if monitor_evaluation_accuracy or early_stopping_n:
                accuracy = self._accuracy(x_eval, y_eval)
                if monitor_evaluation_accuracy:
                    evaluation_accuracy.append(accuracy)
                    say(f"Accuracy on evaluation data: {accuracy} / {x_eval.shape[1]}")
            if early_stopping_n:
                if accuracy > best_accuracy:
                    best_accuracy, epochs_without_improvement = accuracy, 0
                else:
                    epochs_without_improvement += 1
                if epochs_without_improvement == early_stopping_n:
                    say(f"Early stopping: no improvement in the last {early_stopping_n} epochs")
                    break
        return evaluation_cost, evaluation_accuracy, training_cost, training_accuracy

    def save(self, path):
        """Write sizes, weights, biases, cost name and dtype to ``path`` as JSON."""
        state = {"sizes": self.sizes, "weights": [w.tolist() for w in self.weights],
                 "biases": [b.tolist() for b in self.biases], "cost": self.cost.__name__, "dtype": self.dtype.name}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(state, fh)


def load(path) -> Network:
    """The Network saved to ``path`` by ``Network.save``; ValueError naming the file if it is not one."""
    where = repr(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where} is not a JSON file ({exc})") from exc
    if not isinstance(state, dict) or not {"sizes", "weights", "biases", "cost"} <= state.keys():
        raise ValueError(f"{where}: expected a JSON object with sizes, weights, biases and cost")
    if not isinstance(state["cost"], str) or state["cost"] not in COSTS:
        raise ValueError(f"{where}: unknown cost {state['cost']!r}, expected one of {', '.join(COSTS)}")
    try:
        net = Network(state["sizes"], COSTS[state["cost"]], dtype=state.get("dtype", "float64"))
        weights = [np.array(w, dtype=net.dtype) for w in state["weights"]]
        biases = [np.array(b, dtype=net.dtype) for b in state["biases"]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: malformed network ({exc})") from exc
    if [w.shape for w in weights] != [w.shape for w in net.weights] \
            or [b.shape for b in biases] != [b.shape for b in net.biases]:
        raise ValueError(f"{where}: weight or bias shapes do not match sizes {net.sizes}")
    net.weights, net.biases = weights, biases
    return net


def vectorized_data(X, y, one_hot, num_classes=10):
    """``X`` (N, ...) and int labels ``y`` (N,) as a list of (x (n, 1), label) pairs, the label a
    one-hot (num_classes, 1) column of X's dtype with ``one_hot`` (training data), else an int."""
    X = _float_array("X", X)
    if X.ndim < 1 or len(X) == 0:
        raise ValueError(f"X must be a non-empty (N, ...) array, got shape {X.shape}")
    columns = X.reshape(len(X), -1, 1).copy()
    labels = layers.class_labels("y", y, _check_int("num_classes", num_classes, 1))
    if len(labels) != len(X):
        raise ValueError(f"y has {len(labels)} labels for {len(X)} samples in X")
    if one_hot:
        return list(zip(columns, _one_hot(labels, num_classes, X.dtype).T[:, :, None]))
    return [(column, int(label)) for column, label in zip(columns, labels)]


def digits_data(data):
    """``(training_data, validation_data, test_data)`` with 64 inputs from the ``nn.data.load_digits()``
    dict (images already scaled to [0, 1]): training labels one-hot, the others ints."""
    keys = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
    if not isinstance(data, dict) or not set(keys) <= data.keys():
        raise ValueError(f"data must be the dict of nn.data.load_digits() with {', '.join(keys)}")
    return tuple(vectorized_data(data[f"X_{split}"], data[f"y_{split}"], one_hot=split == "train")
                 for split in ("train", "val", "test"))
