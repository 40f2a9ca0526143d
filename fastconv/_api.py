"""Public kernel functions: validate once, pick a backend, call it, and keep an opaque cache."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _auto, _registry, _validate
from ._params import ConvParams, PoolParams


class ConvCache(NamedTuple):
    """Opaque: what conv2d_backward needs. Only the matching backward reads it."""

    backend: str
    x: np.ndarray
    w: np.ndarray
    has_bias: bool
    params: ConvParams
    ctx: object
    relu_out: np.ndarray | None = None  # the output of a conv with activation="relu": its mask


class PoolCache(NamedTuple):
    """Opaque: what a pooling backward needs."""

    op: str
    backend: str
    x: np.ndarray
    params: PoolParams
    ctx: object


def conv2d_signature(x, w, b, p: ConvParams) -> tuple:
    """What `auto` decides a conv2d call by (validated arrays and parameters)."""
    return (x.shape, w.shape, b is not None, p, x.dtype.char)


def pool2d_signature(x, p: PoolParams) -> tuple:
    """What `auto` decides a pooling call by."""
    return (x.shape, p, x.dtype.char)


def resolve(backend, op: str, signature: tuple) -> str:
    """The backend that runs a call: the one asked for (None: the default; "auto": auto's pick),
    or the next that takes the call if that one declines it (see ``_registry.taking``)."""
    name = _registry.get_backend() if backend is None else _registry.check_backend_name(backend)
    name = _auto.choose(op, signature) if name == _registry.AUTO else name
    return _registry.taking(name, op, signature)


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, backend=None, *, activation=None):
    """2-D cross-correlation over a batch of images (PyTorch's ``conv2d`` semantics).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (F, C // groups, KH, KW), same dtype
    b : ndarray, shape (F,), or None
    stride, padding, dilation : int or (h, w) pair
    groups : int, dividing both C and F
    backend : str or None (None = the default set by ``set_backend``)
    activation : None or "relu" (keyword only): ``relu(conv + b)`` in the same pass where the
        backend can; backward then takes the gradient through the ReLU too

    Returns
    -------
    out : ndarray, shape (N, F, OH, OW) with
        ``OH = floor((H + 2*pad_h - dil_h*(KH-1) - 1) / stride_h) + 1`` (likewise OW)
    cache : opaque object for :func:`conv2d_backward`
    """
    x, w, b, p = _validate.conv2d_args(x, w, b, stride, padding, dilation, groups)
    relu = _validate.activation_arg(activation)
    name = resolve(backend, "conv2d", conv2d_signature(x, w, b, p))
    n, f = x.shape[0], w.shape[0]
    if n == 0:
        out, ctx = np.zeros((0, f, p.out_h, p.out_w), x.dtype), None
    else:
        module = _registry.get_module(name)
        fused = getattr(module, "conv2d_relu_forward", None) if relu else None
        if fused is not None:
            out, ctx = fused(x, w, b, p)
        else:
            out, ctx = module.conv2d_forward(x, w, b, p)
            if relu:
                out = _registry.kernel(name, "relu_forward")(out)
    return out, ConvCache(name, x, w, b is not None, p, ctx, out if relu else None)


def conv2d_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`conv2d_forward`: returns ``(dx, dw, db)``; ``db`` is None without bias.

    ``need_dx=False`` skips the input gradient (``dx`` comes back None), as PyTorch does for an
    input that needs no gradient: a network's first layer, whose dx would cost as much as its
    forward pass.
    """
    if not isinstance(cache, ConvCache):
        raise TypeError(f"cache must be the cache returned by conv2d_forward, got {type(cache).__name__}")
    need_dx = _validate.flag_arg("need_dx", need_dx)
    x, w, p = cache.x, cache.w, cache.params
    dout = _validate.dout_arg(dout, (x.shape[0], w.shape[0], p.out_h, p.out_w), x.dtype)
    if x.shape[0] == 0:
        db = np.zeros(w.shape[0], x.dtype) if cache.has_bias else None
        return np.zeros_like(x) if need_dx else None, np.zeros_like(w), db
    if cache.relu_out is not None:
        dout = _registry.kernel(cache.backend, "relu_backward")(dout, cache.relu_out)
    return _registry.get_module(cache.backend).conv2d_backward(dout, x, w, cache.ctx, p, cache.has_bias, need_dx)


def _pool_forward(op: str, x, kernel_size, stride, padding, backend):
    x, p = _validate.pool2d_args(x, kernel_size, stride, padding)
    name = resolve(backend, op, pool2d_signature(x, p))
    if x.shape[0] == 0:
        out, ctx = np.zeros((0, x.shape[1], p.out_h, p.out_w), x.dtype), None
    else:
        out, ctx = getattr(_registry.get_module(name), op + "_forward")(x, p)
    return out, PoolCache(op, name, x, p, ctx)


def _pool_backward(op: str, dout, cache):
    if not isinstance(cache, PoolCache) or cache.op != op:
        raise TypeError(f"cache must be the cache returned by {op}_forward, got {type(cache).__name__}")
    x, p = cache.x, cache.params
    dout = _validate.dout_arg(dout, (x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    if x.shape[0] == 0:
        return np.zeros_like(x)
    return getattr(_registry.get_module(cache.backend), op + "_backward")(dout, x, cache.ctx, p)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, backend=None):
    """2-D max pooling (PyTorch semantics: -inf padding, first maximum wins ties, NaN propagates).

    ``stride=None`` means stride = kernel_size; padding must be at most kernel_size / 2.
    Output shape (N, C, OH, OW) with ``OH = floor((H + 2*pad_h - KH) / stride_h) + 1``.
    Returns ``(out, cache)``.
    """
    return _pool_forward("max_pool2d", x, kernel_size, stride, padding, backend)


def max_pool2d_backward(dout, cache):
    """Gradient of :func:`max_pool2d_forward` with respect to x."""
    return _pool_backward("max_pool2d", dout, cache)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, backend=None):
    """2-D average pooling; padded cells count in the divisor (``count_include_pad=True``).

    Output shape as for :func:`max_pool2d_forward`. Returns ``(out, cache)``.
    """
    return _pool_forward("avg_pool2d", x, kernel_size, stride, padding, backend)


def avg_pool2d_backward(dout, cache):
    """Gradient of :func:`avg_pool2d_forward` with respect to x."""
    return _pool_backward("avg_pool2d", dout, cache)


def call_op(op: str, arrays: dict, options: dict, backend, backward: bool = True):
    """A no-argument callable running ``op`` ("conv2d", "max_pool2d", "avg_pool2d") forward, and
    backward unless told not to, on ``backend``; it returns every output, (out, dx, dw, db) for a
    conv. ``arrays``: x (and w, b for a conv) and dout; ``options``: the forward's keyword
    arguments. What `auto` times its candidates with and `fastconv bench` times backends with."""
    forward, backward_of = {"conv2d": (conv2d_forward, conv2d_backward),
                            "max_pool2d": (max_pool2d_forward, max_pool2d_backward),
                            "avg_pool2d": (avg_pool2d_forward, avg_pool2d_backward)}[op]
    inputs = (arrays["x"], arrays["w"], arrays["b"]) if op == "conv2d" else (arrays["x"],)
    dout = arrays["dout"]

    def run() -> tuple:
        out, cache = forward(*inputs, backend=backend, **options)
        if not backward:
            return (out,)
        grads = backward_of(dout, cache)
        return (out, *grads) if isinstance(grads, tuple) else (out, grads)
    return run
