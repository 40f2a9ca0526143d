"""The CS231n-style functional layers: ``forward(...) -> (out, cache)`` and ``backward(dout, cache)``.

Convolution and pooling go through :mod:`fastconv`: the ``*_naive`` functions use the ``naive``
backend, the ``*_fast`` ones (and the sandwich layers) the default backend (``auto`` = fastest).
Every function computes in the dtype of its inputs (float32 stays float32).
"""
from __future__ import annotations

import numpy as np

import fastconv

__all__ = [
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "conv_forward_naive", "conv_backward_naive", "conv_forward_fast", "conv_backward_fast",
    "max_pool_forward_naive", "max_pool_backward_naive", "max_pool_forward_fast", "max_pool_backward_fast",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "dropout_forward", "dropout_backward", "softmax_loss", "svm_loss",
    "affine_relu_forward", "affine_relu_backward", "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward",
]


# ----------------------------------------------------------------------------- affine, relu

def affine_forward(x, w, b):
    """Fully connected layer: ``x`` (N, d_1, ..., d_k) is flattened to (N, D), then ``x @ w + b``.

    ``w`` is (D, M), ``b`` is (M,) or None. Returns ``(out, cache)`` with ``out`` of shape (N, M).
    """
    out = x.reshape(x.shape[0], -1) @ w
    if b is not None:
        out += b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Gradients of :func:`affine_forward`: ``(dx, dw, db)`` (``db`` is None when ``b`` was None)."""
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0) if b is not None else None
    return dx, dw, db


def relu_forward(x):
    """Rectified linear unit ``max(x, 0)``, any shape. Returns ``(out, cache)``."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """Gradient of :func:`relu_forward` (zero where the input was <= 0)."""
    return dout * (cache > 0)


# ----------------------------------------------------------------------------- conv, pool

def _conv_forward(x, w, b, conv_param, backend):
    return fastconv.conv2d_forward(x, w, b, stride=conv_param.get("stride", 1),
                                   padding=conv_param.get("pad", 0), backend=backend)


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation) on the ``naive`` reference backend.

    ``x`` (N, C, H, W), ``w`` (F, C, HH, WW), ``b`` (F,), ``conv_param = {'stride': s, 'pad': p}``.
    Output (N, F, H', W') with ``H' = 1 + (H + 2 * pad - HH) // stride`` (likewise W').
    Returns ``(out, cache)``.
    """
    return _conv_forward(x, w, b, conv_param, "naive")


def conv_backward_naive(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`conv_forward_naive`."""
    return fastconv.conv2d_backward(dout, cache)


def conv_forward_fast(x, w, b, conv_param, backend=None):
    """As :func:`conv_forward_naive`, on ``backend`` (None = the default, ``auto`` = fastest)."""
    return _conv_forward(x, w, b, conv_param, backend)


def conv_backward_fast(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`conv_forward_fast`."""
    return fastconv.conv2d_backward(dout, cache)


def _max_pool_forward(x, pool_param, backend):
    kernel = (pool_param.get("pool_height", 2), pool_param.get("pool_width", 2))
    return fastconv.max_pool2d_forward(x, kernel, stride=pool_param.get("stride", kernel), backend=backend)


def max_pool_forward_naive(x, pool_param):
    """Max pooling on the ``naive`` backend.

    ``pool_param = {'pool_height': ph, 'pool_width': pw, 'stride': s}``; output (N, C, H', W') with
    ``H' = 1 + (H - ph) // stride``. Returns ``(out, cache)``.
    """
    return _max_pool_forward(x, pool_param, "naive")


def max_pool_backward_naive(dout, cache):
    """Gradient of :func:`max_pool_forward_naive` with respect to ``x``."""
    return fastconv.max_pool2d_backward(dout, cache)


def max_pool_forward_fast(x, pool_param, backend=None):
    """As :func:`max_pool_forward_naive`, on ``backend`` (None = the default)."""
    return _max_pool_forward(x, pool_param, backend)


def max_pool_backward_fast(dout, cache):
    """Gradient of :func:`max_pool_forward_fast` with respect to ``x``."""
    return fastconv.max_pool2d_backward(dout, cache)


# ----------------------------------------------------------------------------- batchnorm

def _bn_settings(bn_param, num_features, dtype):
    mode = bn_param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    bn_param.setdefault("running_mean", np.zeros(num_features, dtype))
    bn_param.setdefault("running_var", np.zeros(num_features, dtype))
    return mode, bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of ``x`` (N, D) with scale ``gamma`` (D,) and shift ``beta`` (D,).

    ``bn_param``: ``mode`` ('train' | 'test'), ``eps`` (1e-5), ``momentum`` (0.9) and the
    ``running_mean`` / ``running_var`` (created as zeros if absent). In 'train' mode the batch
    statistics (biased variance) normalize ``x`` and the running statistics are updated in the
    dict: ``running = momentum * running + (1 - momentum) * batch``; 'test' mode uses them.
    Returns ``(out, cache)``.
    """
    mode, eps, momentum = _bn_settings(bn_param, x.shape[1], x.dtype)
    if mode == "train":
        mean, var = x.mean(axis=0), x.var(axis=0)
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * mean
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * var
    else:
        mean = bn_param["running_mean"].astype(x.dtype, copy=False)
        var = bn_param["running_var"].astype(x.dtype, copy=False)
    centered = x - mean
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = centered * inv_std
    return gamma * x_hat + beta, (mode, x_hat, centered, inv_std, gamma)


def batchnorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batchnorm_forward`, step by step through its graph."""
    mode, x_hat, centered, inv_std, gamma = cache
    dgamma, dbeta = (dout * x_hat).sum(axis=0), dout.sum(axis=0)
    dx_hat = dout * gamma
    if mode == "test":
        return dx_hat * inv_std, dgamma, dbeta
    n = dout.shape[0]
    # x_hat = centered * inv_std, inv_std = (var + eps) ** -0.5, var = mean(centered ** 2),
    # centered = x - mean(x): walk these back one node at a time.
    dinv_std = (dx_hat * centered).sum(axis=0)
    dvar = -0.5 * inv_std ** 3 * dinv_std
    dcentered = dx_hat * inv_std + 2 * centered * dvar / n
    dmean = -dcentered.sum(axis=0)
    return dcentered + dmean / n, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """As :func:`batchnorm_backward`, with the gradient simplified on paper to one expression."""
    mode, x_hat, _, inv_std, gamma = cache
    dgamma, dbeta = (dout * x_hat).sum(axis=0), dout.sum(axis=0)
    if mode == "test":
        return dout * gamma * inv_std, dgamma, dbeta
    n = dout.shape[0]
    dx = (gamma * inv_std / n) * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def _channels_last(x):
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _channels_first(x2d, shape):
    n, c, h, w = shape
    return x2d.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of ``x`` (N, C, H, W) per channel, over N, H and W (``gamma``, ``beta``: (C,)).

    ``bn_param`` as for :func:`batchnorm_forward`. Returns ``(out, cache)``.
    """
    out2d, cache = batchnorm_forward(_channels_last(x), gamma, beta, bn_param)
    return _channels_first(out2d, x.shape), (cache, x.shape)


def spatial_batchnorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`spatial_batchnorm_forward`."""
    bn_cache, shape = cache
    dx2d, dgamma, dbeta = batchnorm_backward_alt(_channels_last(dout), bn_cache)
    return _channels_first(dx2d, shape), dgamma, dbeta


# ----------------------------------------------------------------------------- dropout

def dropout_forward(x, dropout_param):
    """Inverted dropout: keep each unit with probability ``p`` and scale the kept ones by ``1 / p``.

    ``dropout_param``: ``p`` (KEEP probability, 0 < p <= 1), ``mode`` ('train' | 'test'; 'test'
    is the identity) and optionally ``seed`` (the same seed gives the same mask; without one the
    mask comes from ``np.random``, so ``np.random.seed`` makes runs reproducible).
    Returns ``(out, cache)``.
    """
    p, mode = dropout_param["p"], dropout_param.get("mode", "train")
    if not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] (keep probability) must be in (0, 1], got {p!r}")
    if mode not in ("train", "test"):
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {mode!r}")
    if mode == "test":
        return x, (dropout_param, None)
    seed = dropout_param.get("seed")
    uniform = np.random.default_rng(seed).random(x.shape) if seed is not None else np.random.random_sample(x.shape)
    mask = (uniform < p).astype(x.dtype) / x.dtype.type(p)
    return x * mask, (dropout_param, mask)


def dropout_backward(dout, cache):
    """Gradient of :func:`dropout_forward` with respect to ``x``."""
    _, mask = cache
    return dout if mask is None else dout * mask


# ----------------------------------------------------------------------------- losses

def _check_labels(x, y):
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"scores must be (N, C) and labels (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"labels must be in [0, {x.shape[1]}), got values in [{y.min()}, {y.max()}]")
    return y


def softmax_loss(x, y):
    """Softmax cross-entropy loss averaged over the batch, computed stably (log-sum-exp).

    ``x`` (N, C) class scores, ``y`` (N,) integer labels in [0, C). Returns ``(loss, dx)``.
    """
    y = _check_labels(x, y)
    rows = np.arange(x.shape[0])
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dx = np.exp(log_probs)
    dx[rows, y] -= 1
    dx /= x.shape[0]
    return float(loss), dx


def svm_loss(x, y):
    """Multiclass hinge (SVM) loss with margin 1, averaged over the batch. Returns ``(loss, dx)``."""
    y = _check_labels(x, y)
    rows = np.arange(x.shape[0])
    margins = np.maximum(0, x - x[rows, y][:, None] + 1)
    margins[rows, y] = 0
    positive = (margins > 0).astype(x.dtype)
    dx = positive
    dx[rows, y] -= positive.sum(axis=1)
    dx /= x.shape[0]
    return float(margins.sum() / x.shape[0]), dx


# ----------------------------------------------------------------------------- sandwich layers

def affine_relu_forward(x, w, b):
    """Affine followed by ReLU. Returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`affine_relu_forward`."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param, backend=None):
    """Convolution (default backend) followed by ReLU. Returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param, backend)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`conv_relu_forward`."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param, backend=None):
    """Convolution, ReLU, then max pooling (default backend). Returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param, backend)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param, backend)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`conv_relu_pool_forward`."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)
