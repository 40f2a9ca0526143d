"""First-order update rules (CS231n ``update(w, dw, config) -> (next_w, config)``) and optimizer classes over them.

The rules are the only place the math lives: they never modify ``w`` or ``dw``, keep their dtype,
and keep per-parameter state (velocity, moments, step count) in ``config``. The classes hold one
config per :class:`~nn.modules.Parameter`, validate hyperparameters and call the same rules.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES", "Optimizer", "SGD", "RMSprop", "Adam"]


def _state(config, key, w):
    """The per-parameter state ``config[key]``, zeros like ``w`` on the first step."""
    return config[key] if key in config else np.zeros_like(w)


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent. config: ``learning_rate`` (1e-2)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum. config: ``learning_rate`` (1e-2), ``momentum`` (0.9), ``velocity`` (zeros)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    velocity = _state(config, "velocity", w)
    velocity = config["momentum"] * velocity - config["learning_rate"] * dw
    config["velocity"] = velocity
    return w + velocity, config


def rmsprop(w, dw, config=None):
    """RMSProp. config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon`` (1e-8), ``cache``."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    decay = config["decay_rate"]
    cache = decay * _state(config, "cache", w) + (1 - decay) * dw * dw
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"]), config


def adam(w, dw, config=None):
    """Adam with bias correction; ``t`` is incremented before use (the first step uses t = 1).

    config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999), ``epsilon`` (1e-8),
    moments ``m`` and ``v`` (zeros) and step count ``t`` (0).
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    beta1, beta2 = config["beta1"], config["beta2"]
    t = config.get("t", 0) + 1
    m = beta1 * _state(config, "m", w) + (1 - beta1) * dw
    v = beta2 * _state(config, "v", w) + (1 - beta2) * dw * dw
    config.update(t=t, m=m, v=v)
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"]), config


UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


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
    """

    def __init__(self, params, rule, defaults: dict):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.rule = rule
        self.defaults = dict(defaults)
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
        """One update of every parameter from its current ``.grad``."""
        for param, config in zip(self.params, self.state):
            param.data, _ = self.rule(param.data, param.grad, config)

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

    def __init__(self, params, lr=1e-2, momentum=0.0):
        momentum = _check_range("momentum", momentum, 0, 1)
        defaults = {"learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True)}
        if momentum > 0:
            defaults["momentum"] = momentum
        super().__init__(params, sgd_momentum if momentum > 0 else sgd, defaults)


class RMSprop(Optimizer):
    """RMSProp (rule ``rmsprop``): ``alpha`` is the decay rate of the squared-gradient average."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(params, rmsprop, {
            "learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True),
            "decay_rate": _check_range("alpha", alpha, 0, 1),
            "epsilon": _check_range("eps", eps, 0, math.inf, low_open=True),
        })


class Adam(Optimizer):
    """Adam (rule ``adam``) with bias-corrected moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, adam, {
            "learning_rate": _check_range("lr", lr, 0, math.inf, low_open=True),
            "beta1": _check_range("betas[0]", betas[0], 0, 1),
            "beta2": _check_range("betas[1]", betas[1], 0, 1),
            "epsilon": _check_range("eps", eps, 0, math.inf, low_open=True),
        })
