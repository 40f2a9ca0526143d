"""Public functions for the rest of a training step: ReLU, affine, batch norm, softmax cross-entropy, optimizer updates.

Same front as the convolutions: arguments are validated once here, `auto` (or the named
backend) is resolved, and the backend's kernel runs on clean arrays. A backend without one of
these kernels runs the reference's (``_registry.kernel``), so every backend gives every answer.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _registry, _validate
from ._api import resolve

def _kernel(backend: str, function: str):
    return _registry.kernel(backend, function)


# ------------------------------------------------------------------------------------ ReLU
class ReluCache(NamedTuple):
    """What relu_backward needs: the backend and the forward output (its sign is the mask)."""

    backend: str
    out: np.ndarray


def relu_forward(x, backend=None):
    """``max(x, 0)`` elementwise, any shape. Returns ``(out, cache)``.

    Backward uses ``out`` (as PyTorch does): do not modify it in place before the backward.
    """
    x = _validate.as_float_array("x", x)
    name = resolve(backend, "relu", (x.size, x.dtype.char))
    out = _kernel(name, "relu_forward")(x)
    return out, ReluCache(name, out)


def relu_backward(dout, cache):
    """Gradient of :func:`relu_forward`: ``dout`` where the output was positive, else 0."""
    if not isinstance(cache, ReluCache):
        raise TypeError(f"cache must be the cache returned by relu_forward, got {type(cache).__name__}")
    dout = _validate.dout_arg(dout, cache.out.shape, cache.out.dtype)
    return _kernel(cache.backend, "relu_backward")(dout, cache.out)


# ---------------------------------------------------------------------------------- affine
class AffineCache(NamedTuple):
    backend: str
    x_shape: tuple
    x2: np.ndarray
    w: np.ndarray
    has_bias: bool


def affine_forward(x, w, b=None, backend=None):
    """Fully connected layer: ``x`` (N, d_1, ..., d_k) flattened to (N, D), then ``x @ w + b``.

    ``w`` is (D, M) (a transposed (M, D) array, as ``torch.nn.Linear`` keeps its weight, is used
    without a copy); ``b`` is (M,) or None. Returns ``(out, cache)`` with ``out`` (N, M).
    """
    x = _validate.as_float_array("x", x)
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension, got a 0-D array")
    w = _validate.as_matrix("w", w)
    b = None if b is None else _validate.as_float_array("b", b, 1)
    _validate.same_dtype("x", x, w=w, b=b)
    n = x.shape[0]
    depth = int(np.prod(x.shape[1:], dtype=np.int64))
    if w.shape[0] != depth:
        raise ValueError(f"w must have shape (D, M) with D = {depth} (x.shape[1:] = {x.shape[1:]} "
                         f"flattened), got {w.shape}")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape (M,) = ({w.shape[1]},), got {b.shape}")
    x2 = x.reshape(n, depth)
    name = resolve(backend, "affine", (x2.shape, w.shape[1], x.dtype.char))
    out = _kernel(name, "affine_forward")(x2, w, b)
    return out, AffineCache(name, x.shape, x2, w, b is not None)


def affine_backward(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`affine_forward`; ``db`` is None without a bias.

    ``dw`` has ``w``'s memory order (so ``dw.T`` of a transposed weight is C-contiguous).
    """
    if not isinstance(cache, AffineCache):
        raise TypeError(f"cache must be the cache returned by affine_forward, got {type(cache).__name__}")
    dout = _validate.dout_arg(dout, (cache.x2.shape[0], cache.w.shape[1]), cache.x2.dtype)
    dx2, dw, db = _kernel(cache.backend, "affine_backward")(dout, cache.x2, cache.w, cache.has_bias)
    return dx2.reshape(cache.x_shape), dw, db


# ------------------------------------------------------------------------------ batch norm
class BatchNormCache(NamedTuple):
    """What batch_norm_backward needs. ``mean`` and ``var`` are the statistics that normalized x
    (the batch's, with the biased variance, in training; the running ones in evaluation)."""

    backend: str
    shape: tuple
    x3: np.ndarray
    gamma: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    training: bool
    relu_out: np.ndarray | None
    has_affine: bool


def _channel_arg(name: str, arr, channels: int, dtype) -> np.ndarray:
    arr = _validate.as_float_array(name, arr, 1)
    if arr.shape != (channels,):
        raise ValueError(f"{name} must have shape (C,) = ({channels},), got {arr.shape}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but x has dtype {dtype}; they must match")
    return arr


def batch_norm_forward(x, gamma=None, beta=None, running_mean=None, running_var=None, training=True,
                       momentum=0.1, eps=1e-5, activation=None, backend=None):
    """Batch normalization over every axis but the channel axis 1 (PyTorch's ``batch_norm``).

    ``x`` is (N, C), (N, C, L) or (N, C, H, W). ``gamma`` / ``beta`` (C,) scale and shift
    (None: 1 and 0). In training the batch statistics normalize x (biased variance); when
    ``running_mean`` / ``running_var`` (C,) are given they are updated in place as PyTorch
    does: ``running = (1 - momentum) * running + momentum * batch`` with the unbiased batch
    variance. In evaluation (``training=False``) the running statistics normalize x.
    ``activation="relu"`` applies ReLU to the result in the same pass. Returns ``(out, cache)``.
    """
    x = _validate.as_float_array("x", x)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must be 2-D (N, C), 3-D (N, C, L) or 4-D (N, C, H, W), got {x.ndim}-D "
                         f"array of shape {x.shape}")
    n, channels = x.shape[:2]
    if channels < 1:
        raise ValueError(f"x must have at least one channel, got shape {x.shape}")
    relu = _validate.activation_arg(activation)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    momentum = _validate.real_arg("momentum", momentum, 0.0, 1.0)
    eps = _validate.real_arg("eps", eps, 0.0, low_open=True)
    has_affine = gamma is not None or beta is not None
    gamma = np.ones(channels, x.dtype) if gamma is None else _channel_arg("gamma", gamma, channels, x.dtype)
    beta = np.zeros(channels, x.dtype) if beta is None else _channel_arg("beta", beta, channels, x.dtype)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or neither)")
    tracked = running_mean is not None
    if tracked and training:  # updated in place
        running_mean = _validate.in_place_arg("running_mean", running_mean, (channels,), x.dtype)
        running_var = _validate.in_place_arg("running_var", running_var, (channels,), x.dtype)
    elif tracked:
        running_mean = _channel_arg("running_mean", running_mean, channels, x.dtype)
        running_var = _channel_arg("running_var", running_var, channels, x.dtype)
    x3 = x.reshape(n, channels, -1)
    count = n * x3.shape[2]
    if training and count < 1:
        raise ValueError(f"x must hold at least one value per channel in training mode, got shape {x.shape}")
    if training and tracked and count < 2:
        raise ValueError(f"x must hold more than one value per channel to update running_var, got shape {x.shape}")
    if not training and not tracked:
        raise ValueError("evaluation (training=False) needs running_mean and running_var")
    name = resolve(backend, "batch_norm", (x3.shape, x.dtype.char))
    if training:
        out3, mean, var = _kernel(name, "batch_norm_train_forward")(x3, gamma, beta, eps, relu)
        if tracked:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * count / max(count - 1, 1)) * var
    else:
        mean, var = running_mean.copy(), running_var.copy()
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    if not training:
        scale = gamma * inv_std
        out3 = _kernel(name, "batch_norm_eval_forward")(x3, scale, beta - mean * scale, relu)
    cache = BatchNormCache(name, x.shape, x3, gamma, mean, var, inv_std, bool(training),
                           out3 if relu else None, has_affine)
    return out3.reshape(x.shape), cache


def batch_norm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batch_norm_forward` (through its ReLU, if fused)."""
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"cache must be the cache returned by batch_norm_forward, got {type(cache).__name__}")
    dout = _validate.dout_arg(dout, cache.shape, cache.x3.dtype).reshape(cache.x3.shape)
    dx3, dgamma, dbeta = _kernel(cache.backend, "batch_norm_backward")(
        dout, cache.x3, cache.relu_out, cache.mean, cache.inv_std, cache.gamma, cache.training)
    return dx3.reshape(cache.shape), dgamma, dbeta


# -------------------------------------------------------------------------------- the loss
def softmax_cross_entropy(scores, y, backend=None):
    """Softmax cross-entropy of ``scores`` (N, C) against integer labels ``y`` (N,), averaged over N.

    Computed stably (log-sum-exp), in one pass per row. Returns ``(loss, dscores)``: a Python
    float and the gradient (N, C) of the loss with respect to ``scores``.
    """
    scores = _validate.as_float_array("scores", scores, 2)
    n, classes = scores.shape
    if classes < 1:
        raise ValueError(f"scores must have at least one class column, got shape {scores.shape}")
    y = _validate.labels_arg(y, n, classes)
    name = resolve(backend, "softmax_cross_entropy", (scores.shape, scores.dtype.char))
    losses, dscores = _kernel(name, "softmax_cross_entropy")(scores, y)
    return float(losses.mean()) if n else float("nan"), dscores


# --------------------------------------------------------------------- optimizer updates
def _update_args(w, dw, states: dict):
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w must be a numpy.ndarray, got {type(w).__name__}")
    w = _validate.in_place_arg("w", w, w.shape, w.dtype)
    if w.dtype.kind != "f" or w.dtype.itemsize not in (4, 8):
        raise TypeError(f"w must have dtype float32 or float64, got {w.dtype}")
    dw = _validate.as_float_array("dw", dw)
    if dw.shape != w.shape:
        raise ValueError(f"dw must have w's shape {w.shape}, got {dw.shape}")
    if dw.dtype != w.dtype:
        raise TypeError(f"dw has dtype {dw.dtype} but w has dtype {w.dtype}; they must match")
    flat = {name: _validate.in_place_arg(name, arr, w.shape, w.dtype).reshape(-1) for name, arr in states.items()}
    return w.reshape(-1), dw.reshape(-1), flat


def _run_update(rule: str, backend, w, dw, states: dict, *scalars) -> None:
    w1, dw1, flat = _update_args(w, dw, states)
    if w1.size:
        name = resolve(backend, rule, (w1.size, w1.dtype.char))
        _kernel(name, rule)(w1, dw1, *flat.values(), *scalars)


def sgd_update(w, dw, learning_rate=1e-2, backend=None) -> None:
    """In place: ``w -= learning_rate * dw``."""
    lr = _validate.real_arg("learning_rate", learning_rate, 0.0)
    _run_update("sgd_update", backend, w, dw, {}, lr)


def sgd_momentum_update(w, dw, velocity, learning_rate=1e-2, momentum=0.9, backend=None) -> None:
    """In place: ``velocity = momentum * velocity - learning_rate * dw; w += velocity``."""
    lr = _validate.real_arg("learning_rate", learning_rate, 0.0)
    momentum = _validate.real_arg("momentum", momentum, 0.0, 1.0)
    _run_update("sgd_momentum_update", backend, w, dw, {"velocity": velocity}, lr, momentum)


def rmsprop_update(w, dw, cache, learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8, backend=None) -> None:
    """In place: ``cache = decay * cache + (1 - decay) * dw**2; w -= lr * dw / (sqrt(cache) + eps)``."""
    lr = _validate.real_arg("learning_rate", learning_rate, 0.0)
    decay = _validate.real_arg("decay_rate", decay_rate, 0.0, 1.0)
    eps = _validate.real_arg("epsilon", epsilon, 0.0, low_open=True)
    _run_update("rmsprop_update", backend, w, dw, {"cache": cache}, lr, decay, eps)


def adam_update(w, dw, m, v, t, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, backend=None) -> None:
    """In place, Adam's step number ``t`` (>= 1; the caller counts): ``m = b1*m + (1-b1)*dw;
    v = b2*v + (1-b2)*dw**2; w -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)``."""
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or t < 1:
        raise (TypeError if not isinstance(t, (int, np.integer)) or isinstance(t, (bool, np.bool_))
               else ValueError)(f"t must be an int >= 1 (the step number), got {t!r}")
    lr = _validate.real_arg("learning_rate", learning_rate, 0.0)
    beta1 = _validate.real_arg("beta1", beta1, 0.0, 1.0, high_open=True)
    beta2 = _validate.real_arg("beta2", beta2, 0.0, 1.0, high_open=True)
    eps = _validate.real_arg("epsilon", epsilon, 0.0, low_open=True)
    _run_update("adam_update", backend, w, dw, {"m": m, "v": v}, lr, beta1, beta2, eps,
                1 - beta1 ** int(t), 1 - beta2 ** int(t))
