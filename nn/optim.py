"""First-order update rules (CS231n ``update(w, dw, config) -> (next_w, config)``) and optimizer classes over them.

The arithmetic is fastconv's fused update kernels (one pass over w, its gradient and its
state). Each rule exists twice over the same kernel: the CS231n function, which leaves ``w``
and ``dw`` alone and returns a new ``next_w``, and an in-place form (``IN_PLACE_RULES``) that
the optimizer classes use. Both keep the dtype of ``w`` and keep per-parameter state
(velocity, moments, step count) in ``config``, whose state arrays are updated in place.
"""
from __future__ import annotations

import math

import numpy as np

import fastconv

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES", "IN_PLACE_RULES", "Optimizer", "SGD",
           "RMSprop", "Adam"]


def _state(config, key, w):
    """The per-parameter state ``config[key]`` as an array the kernels may update in place
    (zeros like ``w`` on the first step; a copy when it has another dtype or layout)."""
    state = config.get(key)
    if not (isinstance(state, np.ndarray) and state.dtype == w.dtype and state.shape == w.shape
            and state.flags.c_contiguous and state.flags.writeable):
        state = np.zeros_like(w) if state is None else np.array(state, dtype=w.dtype, order="C")
        config[key] = state
    return state


def _grad(dw, w):
    return np.asarray(dw, dtype=w.dtype)


def sgd_in_place(w, dw, config):
    config.setdefault("learning_rate", 1e-2)
    fastconv.sgd_update(w, _grad(dw, w), config["learning_rate"])


def sgd_momentum_in_place(w, dw, config):
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    fastconv.sgd_momentum_update(w, _grad(dw, w), _state(config, "velocity", w), config["learning_rate"],
                                 config["momentum"])


def rmsprop_in_place(w, dw, config):
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    fastconv.rmsprop_update(w, _grad(dw, w), _state(config, "cache", w), config["learning_rate"],
                            config["decay_rate"], config["epsilon"])


def adam_in_place(w, dw, config):
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    t = config.get("t", 0) + 1
    m, v = _state(config, "m", w), _state(config, "v", w)
    fastconv.adam_update(w, _grad(dw, w), m, v, t, config["learning_rate"], config["beta1"], config["beta2"],
                         config["epsilon"])
    config["t"] = t


def _functional(in_place, doc):
    def rule(w, dw, config=None):
        config = {} if config is None else config
        next_w = np.array(w, order="C", copy=True)
        in_place(next_w, dw, config)
        return next_w, config
    rule.__name__ = in_place.__name__.replace("_in_place", "")
    rule.__doc__ = doc
    return rule


sgd = _functional(sgd_in_place, "Vanilla stochastic gradient descent. config: ``learning_rate`` (1e-2).")
sgd_momentum = _functional(sgd_momentum_in_place, "SGD with momentum. config: ``learning_rate`` (1e-2), "
                                                  "``momentum`` (0.9), ``velocity`` (zeros).")
rmsprop = _functional(rmsprop_in_place, "RMSProp. config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), "
                                        "``epsilon`` (1e-8), ``cache``.")
adam = _functional(adam_in_place, """Adam with bias correction; ``t`` is incremented before use (first step: t = 1).

    config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999), ``epsilon`` (1e-8),
    moments ``m`` and ``v`` (zeros) and step count ``t`` (0).
    """)

UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}
IN_PLACE_RULES = {"sgd": sgd_in_place, "sgd_momentum": sgd_momentum_in_place, "rmsprop": rmsprop_in_place,
                  "adam": adam_in_place}


def _check_range(name, value, low, high, low_open=False, high_open=True):
    """ValueError unless ``value`` is a finite real number in the interval (ends as flagged)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


class Optimizer:
    """Applies one update rule to a list of parameters (objects with ``.data`` and ``.grad``).

    Subclasses only choose the rule and translate their hyperparameters into its config.
    ``weight_decay`` (>= 0) adds ``weight_decay * data`` to each gradient before the rule.
    """

    def __init__(self, params, rule, defaults: dict, weight_decay=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.rule = rule
        self.defaults = dict(defaults)
        weight_decay = _check_range("weight_decay", weight_decay, 0, math.inf)
        if weight_decay > 0:  # absent when 0, so the state and the update stay as without decay
            self.defaults["weight_decay"] = weight_decay
        self.state = [dict(self.defaults) for _ in self.params]

    @property
    def lr(self) -> float:
        """The learning rate; setting it changes it for every parameter (e.g. for decay)."""
        return self.defaults["learning_rate"]

    @lr.setter
    def lr(self, value) -> None:
        value = _check_range("lr", value, 0, math.inf, low_open=True)
        self.defaults["learning_rate"] = value
        for config in self.state:
            config["learning_rate"] = value

    def step(self) -> None:
        """One update of every parameter from its current ``.grad``, in place.

        With ``weight_decay`` the rule sees ``grad + weight_decay * data`` (L2 as in PyTorch,
        also for Adam); ``.grad`` itself is left as it is.
        """
        for param, config in zip(self.params, self.state):
            if not (param.data.flags.c_contiguous and param.data.flags.writeable):
                param.data = np.array(param.data, order="C")
            weight_decay = config.get("weight_decay", 0)
            grad = param.grad + weight_decay * param.data if weight_decay else param.grad
            self.rule(param.data, grad, config)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad[...] = 0

    def state_dict(self) -> dict:
        """``{str(index): config}`` per parameter, in ``params`` order (for checkpoints)."""
        return {str(i): dict(config) for i, config in enumerate(self.state)}

    def load_state_dict(self, state: dict) -> None:
        if sorted(state, key=int) != [str(i) for i in range(len(self.params))]:
            raise ValueError(f"optimizer state has {len(state)} entries, this optimizer has "
                             f"{len(self.params)} parameters")
        self.state = [dict(state[str(i)]) for i in range(len(self.params))]

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({settings}, params={len(self.params)})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum when ``momentum > 0`` (rules ``sgd`` / ``sgd_momentum``)."""

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        momentum = _check_range("momentum", momentum, 0, 1)
        defaults = {"learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True)}
        if momentum > 0:
            defaults["momentum"] = momentum
        super().__init__(params, sgd_momentum_in_place if momentum > 0 else sgd_in_place, defaults, weight_decay)


class RMSprop(Optimizer):
    """RMSProp (rule ``rmsprop``): ``alpha`` is the decay rate of the squared-gradient average."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, rmsprop_in_place, {
            "learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True),
            "decay_rate": _check_range("alpha", alpha, 0, 1),
            "epsilon": _check_range("eps", eps, 0, math.inf, low_open=True),
        }, weight_decay)


class Adam(Optimizer):
    """Adam (rule ``adam``) with bias-corrected moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, adam_in_place, {
            "learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True),
            "beta1": _check_range("betas[0]", betas[0], 0, 1),
            "beta2": _check_range("betas[1]", betas[1], 0, 1),
            "epsilon": _check_range("eps", eps, 0, math.inf, low_open=True),
        }, weight_decay)
