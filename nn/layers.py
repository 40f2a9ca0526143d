"""The CS231n-style functional layers: ``forward(...) -> (out, cache)`` and ``backward(dout, cache)``.

Every layer runs on :mod:`fastconv`'s kernels (layernorm and groupnorm excepted: plain NumPy): the
``*_naive`` conv and pool functions on the ``naive`` backend, everything else on the default backend
(``auto`` = fastest), so a whole training step stays on one team of threads. Sandwich layers fuse
where that saves a pass (conv + bias + ReLU, batchnorm + ReLU in one kernel). Every function computes
in the dtype of its inputs (float32 stays float32). Pass each cache back to the matching backward.
"""
from __future__ import annotations

import numpy as np

import fastconv
from fastconv._validate import as_float_array, same_dtype

__all__ = [
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "conv_forward_naive", "conv_backward_naive", "conv_forward_fast", "conv_backward_fast",
    "max_pool_forward_naive", "max_pool_backward_naive", "max_pool_forward_fast", "max_pool_backward_fast",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "layernorm_forward", "layernorm_backward", "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "sigmoid", "dropout_forward", "dropout_backward", "softmax_loss", "svm_loss",
    "affine_relu_forward", "affine_relu_backward", "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward",
    "affine_bn_relu_forward", "affine_bn_relu_backward", "affine_ln_relu_forward", "affine_ln_relu_backward",
    "affine_relu_dropout_forward", "affine_relu_dropout_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
]


# ----------------------------------------------------------------------------- affine, relu

def affine_forward(x, w, b):
    """Fully connected layer: ``x`` (N, d_1, ..., d_k) is flattened to (N, D), then ``x @ w + b``.

    ``w`` is (D, M), ``b`` is (M,) or None. Returns ``(out, cache)`` with ``out`` of shape (N, M).
    """
    return fastconv.affine_forward(x, w, b)


def affine_backward(dout, cache):
    """Gradients of :func:`affine_forward`: ``(dx, dw, db)`` (``db`` is None when ``b`` was None)."""
    return fastconv.affine_backward(dout, cache)


def relu_forward(x):
    """Rectified linear unit ``max(x, 0)``, any shape. Returns ``(out, cache)``."""
    return fastconv.relu_forward(x)


def relu_backward(dout, cache):
    """Gradient of :func:`relu_forward` (zero where the input was <= 0)."""
    return fastconv.relu_backward(dout, cache)


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


def conv_backward_naive(dout, cache, need_dx=True):
    """Gradients ``(dx, dw, db)`` of :func:`conv_forward_naive` (``dx`` None with ``need_dx=False``)."""
    return fastconv.conv2d_backward(dout, cache, need_dx=need_dx)


def conv_forward_fast(x, w, b, conv_param, backend=None):
    """As :func:`conv_forward_naive`, on ``backend`` (None = the default, ``auto`` = fastest)."""
    return _conv_forward(x, w, b, conv_param, backend)


def conv_backward_fast(dout, cache, need_dx=True):
    """Gradients ``(dx, dw, db)`` of :func:`conv_forward_fast`; ``need_dx=False`` skips ``dx`` (None):
    a network's first layer, whose input needs no gradient."""
    return fastconv.conv2d_backward(dout, cache, need_dx=need_dx)


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


def _batchnorm(x, gamma, beta, bn_param, activation=None):
    """Batch norm over every axis but 1, CS231n's way: ``running = momentum * running + (1 - momentum)
    * batch`` with the biased batch variance, updated in the dict; 'test' mode uses the running ones."""
    x = np.asarray(x)
    mode, eps, momentum = _bn_settings(bn_param, x.shape[1], x.dtype)
    if mode == "train":
        out, cache = fastconv.batch_norm_forward(x, gamma, beta, training=True, eps=eps, activation=activation)
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * cache.mean
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * cache.var
        return out, cache
    running = [np.asarray(bn_param[key]).astype(x.dtype, copy=False) for key in ("running_mean", "running_var")]
    return fastconv.batch_norm_forward(x, gamma, beta, *running, training=False, eps=eps, activation=activation)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of ``x`` (N, D) with scale ``gamma`` (D,) and shift ``beta`` (D,).

    ``bn_param``: ``mode`` ('train' | 'test'), ``eps`` (1e-5), ``momentum`` (0.9) and the
    ``running_mean`` / ``running_var`` (created as zeros if absent). In 'train' mode the batch
    statistics (biased variance) normalize ``x`` and the running statistics are updated in the
    dict: ``running = momentum * running + (1 - momentum) * batch``; 'test' mode uses them.
    Returns ``(out, cache)``.
    """
    return _batchnorm(x, gamma, beta, bn_param)


def batchnorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batchnorm_forward`, step by step through its graph
    (the compiled :func:`batchnorm_backward_alt` computes the same in one kernel)."""
    x3, mean, inv_std, gamma = cache.x3, cache.mean[:, None], cache.inv_std[:, None], cache.gamma[:, None]
    dout = np.asarray(dout).reshape(x3.shape)
    if cache.relu_out is not None:
        dout = dout * (cache.relu_out > 0)
    centered = x3 - mean
    x_hat = centered * inv_std
    axes = (0, 2)
    dgamma, dbeta = (dout * x_hat).sum(axis=axes), dout.sum(axis=axes)
    dx_hat = dout * gamma
    if not cache.training:
        return (dx_hat * inv_std).reshape(cache.shape), dgamma, dbeta
    n = x3.shape[0] * x3.shape[2]
    # x_hat = centered * inv_std, inv_std = (var + eps) ** -0.5, var = mean(centered ** 2),
    # centered = x - mean(x): walk these back one node at a time.
    dinv_std = (dx_hat * centered).sum(axis=axes, keepdims=True)
    dvar = -0.5 * inv_std ** 3 * dinv_std
    dcentered = dx_hat * inv_std + 2 * centered * dvar / n
    dmean = -dcentered.sum(axis=axes, keepdims=True)
    return (dcentered + dmean / n).reshape(cache.shape), dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """As :func:`batchnorm_backward`, with the gradient simplified on paper to one expression:
    ``dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)``, one compiled kernel."""
    return fastconv.batch_norm_backward(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of ``x`` (N, C, H, W) per channel, over N, H and W (``gamma``, ``beta``: (C,)).

    ``bn_param`` as for :func:`batchnorm_forward`; computed directly on NCHW (no transposes).
    Returns ``(out, cache)``.
    """
    return _batchnorm(x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`spatial_batchnorm_forward`."""
    return fastconv.batch_norm_backward(dout, cache)


# ----------------------------------------------------------------------------- layernorm, groupnorm

def _norm_eps(param_name, param):
    if not isinstance(param, dict):
        raise TypeError(f"{param_name} must be a dict (optional key 'eps'), got {type(param).__name__}")
    eps = param.get("eps", 1e-5)
    if not eps > 0:
        raise ValueError(f"{param_name}['eps'] must be > 0, got {eps!r}")
    return eps


def _checked_affine(x, gamma, beta, shape):
    """``gamma``/``beta`` as float arrays of ``shape`` and of ``x``'s dtype (TypeError/ValueError otherwise)."""
    gamma, beta = as_float_array("gamma", gamma), as_float_array("beta", beta)
    same_dtype("x", x, gamma=gamma, beta=beta)
    for name, value in (("gamma", gamma), ("beta", beta)):
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
    return gamma, beta


def _standardize(x, eps):
    """``x`` standardized along its last axis (biased variance) and the ``1 / std`` used."""
    centered = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    return centered * inv_std, inv_std


def _standardize_backward(dx_hat, x_hat, inv_std):
    """Gradient through :func:`_standardize`, simplified on paper as for batchnorm's alt form."""
    return inv_std * (dx_hat - dx_hat.mean(axis=-1, keepdims=True)
                      - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of ``x`` (N, D): each sample normalized over its D features, then scaled by
    ``gamma`` (D,) and shifted by ``beta`` (D,).

    ``ln_param``: optional ``eps`` (1e-5). Same in training and testing (no running statistics).
    Returns ``(out, cache)``.
    """
    x = as_float_array("x", x, ndim=2)
    gamma, beta = _checked_affine(x, gamma, beta, x.shape[1:])
    x_hat, inv_std = _standardize(x, _norm_eps("ln_param", ln_param))
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)


def layernorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`layernorm_forward`."""
    x_hat, inv_std, gamma = cache
    dout = np.asarray(dout)
    dx = _standardize_backward(dout * gamma, x_hat, inv_std)
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization of ``x`` (N, C, H, W): the C channels split into ``G`` groups of C / G, each
    sample's group normalized over its C / G * H * W values, then per channel scaled by ``gamma`` and
    shifted by ``beta`` (both (1, C, 1, 1)).

    ``gn_param``: optional ``eps`` (1e-5). Returns ``(out, cache)``.
    """
    x = as_float_array("x", x, ndim=4)
    n, c = x.shape[:2]
    if isinstance(G, (bool, np.bool_)) or not isinstance(G, (int, np.integer)):
        raise TypeError(f"G (number of groups) must be an int, got {G!r}")
    if G < 1 or c % G:
        raise ValueError(f"G (number of groups) must be a positive divisor of the {c} channels, got {G}")
    gamma, beta = _checked_affine(x, gamma, beta, (1, c, 1, 1))
    x_hat, inv_std = _standardize(x.reshape(n, G, -1), _norm_eps("gn_param", gn_param))
    x_hat = x_hat.reshape(x.shape)
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)


def spatial_groupnorm_backward(dout, cache):
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`spatial_groupnorm_forward` (dgamma, dbeta: (1, C, 1, 1))."""
    x_hat, inv_std, gamma = cache
    dout = np.asarray(dout)
    n, groups = inv_std.shape[:2]
    dx_hat = (dout * gamma).reshape(n, groups, -1)
    dx = _standardize_backward(dx_hat, x_hat.reshape(n, groups, -1), inv_std).reshape(x_hat.shape)
    axes = (0, 2, 3)
    return dx, (dout * x_hat).sum(axis=axes, keepdims=True), dout.sum(axis=axes, keepdims=True)


# ----------------------------------------------------------------------------- sigmoid

def sigmoid(x):
    """``1 / (1 + exp(-x))`` elementwise for a float array ``x`` (dtype kept), without overflow for large ``|x|``."""
    # exp(-|x|) <= 1 never overflows; for x < 0 the sigmoid is exp(x) / (1 + exp(x))
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


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

def class_labels(name, y, num_classes, num_samples=None):
    """``y`` as an array of integer class labels in [0, num_classes) (any >= 0 with ``num_classes``
    None), one per sample (``num_samples`` of them when given); TypeError/ValueError naming ``name``
    otherwise. Shared by every loss and classifier of nn."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if y.ndim != 1 or (num_samples is not None and len(y) != num_samples):
        wanted = "(N,)" if num_samples is None else f"({num_samples},), one per sample"
        raise ValueError(f"{name}: labels must have shape {wanted}, got {y.shape}")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bound = "..." if num_classes is None else num_classes
        raise ValueError(f"{name}: labels must be in [0, {bound}), got values in [{y.min()}, {y.max()}]")
    return y


def _check_labels(x, y):
    if x.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {x.shape}")
    return class_labels("y", y, x.shape[1], x.shape[0])


def softmax_loss(x, y):
    """Softmax cross-entropy loss averaged over the batch, computed stably (log-sum-exp).

    ``x`` (N, C) class scores, ``y`` (N,) integer labels in [0, C). Returns ``(loss, dx)``.
    """
    return fastconv.softmax_cross_entropy(x, np.asarray(y))


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
    """Convolution (default backend) followed by ReLU, in one kernel where the backend fuses them.

    Returns ``(out, cache)``.
    """
    return fastconv.conv2d_forward(x, w, b, stride=conv_param.get("stride", 1), padding=conv_param.get("pad", 0),
                                   backend=backend, activation="relu")


def conv_relu_backward(dout, cache, need_dx=True):
    """Gradients ``(dx, dw, db)`` of :func:`conv_relu_forward` (``dx`` None with ``need_dx=False``)."""
    return fastconv.conv2d_backward(dout, cache, need_dx=need_dx)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param, backend=None):
    """Convolution with ReLU fused, then max pooling (default backend). Returns ``(out, cache)``."""
    s, conv_cache = conv_relu_forward(x, w, b, conv_param, backend)
    out, pool_cache = max_pool_forward_fast(s, pool_param, backend)
    return out, (conv_cache, pool_cache)


def conv_relu_pool_backward(dout, cache, need_dx=True):
    """Gradients ``(dx, dw, db)`` of :func:`conv_relu_pool_forward` (``dx`` None with ``need_dx=False``)."""
    conv_cache, pool_cache = cache
    return conv_relu_backward(max_pool_backward_fast(dout, pool_cache), conv_cache, need_dx)


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """Affine, batch normalization (as :func:`batchnorm_forward`, ``bn_param`` updated the same way) and
    ReLU, the last two in one pass. Returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, bn_cache = _batchnorm(a, gamma, beta, bn_param, activation="relu")
    return out, (fc_cache, bn_cache)


def affine_bn_relu_backward(dout, cache):
    """Gradients ``(dx, dw, db, dgamma, dbeta)`` of :func:`affine_bn_relu_forward`."""
    fc_cache, bn_cache = cache
    da, dgamma, dbeta = batchnorm_backward_alt(dout, bn_cache)
    return (*affine_backward(da, fc_cache), dgamma, dbeta)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """Affine, layer normalization (:func:`layernorm_forward`) and ReLU. Returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    normalized, ln_cache = layernorm_forward(a, gamma, beta, ln_param)
    out, relu_cache = relu_forward(normalized)
    return out, (fc_cache, ln_cache, relu_cache)


def affine_ln_relu_backward(dout, cache):
    """Gradients ``(dx, dw, db, dgamma, dbeta)`` of :func:`affine_ln_relu_forward`."""
    fc_cache, ln_cache, relu_cache = cache
    da, dgamma, dbeta = layernorm_backward(relu_backward(dout, relu_cache), ln_cache)
    return (*affine_backward(da, fc_cache), dgamma, dbeta)


def affine_relu_dropout_forward(x, w, b, dropout_param):
    """Affine, ReLU and inverted dropout (:func:`dropout_forward`). Returns ``(out, cache)``."""
    hidden, hidden_cache = affine_relu_forward(x, w, b)
    out, dropout_cache = dropout_forward(hidden, dropout_param)
    return out, (hidden_cache, dropout_cache)


def affine_relu_dropout_backward(dout, cache):
    """Gradients ``(dx, dw, db)`` of :func:`affine_relu_dropout_forward`."""
    hidden_cache, dropout_cache = cache
    return affine_relu_backward(dropout_backward(dout, dropout_cache), hidden_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param, backend=None):
    """Convolution (``backend``, None = the default), spatial batch normalization (as
    :func:`spatial_batchnorm_forward`) and ReLU, the last two in one pass. Returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param, backend)
    out, bn_cache = _batchnorm(a, gamma, beta, bn_param, activation="relu")
    return out, (conv_cache, bn_cache)


def conv_bn_relu_backward(dout, cache, need_dx=True):
    """Gradients ``(dx, dw, db, dgamma, dbeta)`` of :func:`conv_bn_relu_forward` (``dx`` None with
    ``need_dx=False``)."""
    conv_cache, bn_cache = cache
    da, dgamma, dbeta = spatial_batchnorm_backward(dout, bn_cache)
    return (*conv_backward_fast(da, conv_cache, need_dx), dgamma, dbeta)
