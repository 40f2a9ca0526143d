"""Backends from outside the package: their kernels checked (shape, dtype, errors named), gaps filled by a fallback."""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys

import numpy as np

from ._registry import KERNELS, STEP_KERNELS

# A forward and the backward that reads its ctx.
PAIRS = {"conv2d_forward": "conv2d_backward", "max_pool2d_forward": "max_pool2d_backward",
         "avg_pool2d_forward": "avg_pool2d_backward"}
OPTIONAL = ("conv2d_relu_forward", "supports", "is_warm", "build_info")
CTX = "ctx"  # a result the front does not look into: the backend's own context
# A module loaded from a file is imported under this prefix (a file named like a real module must not shadow it).
MODULE_PREFIX = "fastconv_variant_"


class BackendError(RuntimeError):
    """A registered backend raised, or returned a result of the wrong shape or dtype (the message names it)."""


def _conv_forward(x, w, b, p, *_):
    return [(x.shape[0], w.shape[0], p.out_h, p.out_w), CTX]


# What each kernel must return, from its arguments: a shape per result (a list for several results;
# None: the result must be None; CTX: anything), every array in the first argument's dtype.
# The optimizer updates work in place and return nothing to check.
RESULTS = {
    "conv2d_forward": _conv_forward,
    "conv2d_relu_forward": _conv_forward,
    "conv2d_backward": lambda dout, x, w, ctx, p, has_bias, need_dx: [
        x.shape if need_dx else None, w.shape, (w.shape[0],) if has_bias else None],
    "max_pool2d_forward": lambda x, p: [(*x.shape[:2], p.out_h, p.out_w), CTX],
    "avg_pool2d_forward": lambda x, p: [(*x.shape[:2], p.out_h, p.out_w), CTX],
    "max_pool2d_backward": lambda dout, x, ctx, p: x.shape,
    "avg_pool2d_backward": lambda dout, x, ctx, p: x.shape,
    "relu_forward": lambda x: x.shape,
    "relu_backward": lambda dout, out: dout.shape,
    "affine_forward": lambda x2, w, b: (x2.shape[0], w.shape[1]),
    "affine_backward": lambda dout, x2, w, has_bias: [x2.shape, w.shape, (w.shape[1],) if has_bias else None],
    "batch_norm_train_forward": lambda x3, gamma, beta, eps, relu: [x3.shape, gamma.shape, gamma.shape],
    "batch_norm_eval_forward": lambda x3, scale, shift, relu: x3.shape,
    "batch_norm_backward": lambda dout, x3, relu_out, mean, inv_std, gamma, training: [
        x3.shape, gamma.shape, gamma.shape],
    "softmax_cross_entropy": lambda scores, y: [scores.shape[:1], scores.shape],
}


def _wrong(label: str, got, shape, dtype) -> str | None:
    """What is wrong with one result (None: nothing)."""
    if shape is CTX:
        return None
    if shape is None:
        return None if got is None else f"{label} should be None, got {type(got).__name__}"
    if not isinstance(got, np.ndarray):
        return f"{label} should be an ndarray of shape {shape} and dtype {dtype}, got {type(got).__name__}"
    if got.shape != tuple(shape) or got.dtype != dtype:
        return f"{label} has shape {got.shape} and dtype {got.dtype}, expected shape {tuple(shape)} and dtype {dtype}"
    return None


def _problem(kernel: str, result, args) -> str | None:
    """Why ``result`` of ``kernel(*args)`` cannot be used, or None."""
    expected = RESULTS[kernel](*args)
    dtype = args[0].dtype
    if not isinstance(expected, list):
        return _wrong("its result", result, expected, dtype)
    if not isinstance(result, (tuple, list)) or len(result) != len(expected):
        return f"{type(result).__name__} where a tuple of {len(expected)} results was expected"
    for index, (got, shape) in enumerate(zip(result, expected)):
        wrong = _wrong(f"result {index}", got, shape, dtype)
        if wrong:
            return wrong
    return None


def _checked(backend: str, kernel: str, function):
    """``function`` that raises BackendError naming ``backend`` and ``kernel`` when it fails or
    returns something the front cannot use."""
    @functools.wraps(function)
    def call(*args):
        try:
            result = function(*args)
        except Exception as exc:
            raise BackendError(f"backend {backend!r}: {kernel} raised {type(exc).__name__}: {exc}") from exc
        if kernel == "conv2d_backward" and not args[-1] and isinstance(result, (tuple, list)) and len(result) == 3:
            result = (None, *result[1:])  # a dx nobody asked for (need_dx=False) is dropped, not an error
        if kernel in RESULTS:
            problem = _problem(kernel, result, args)
            if problem:
                raise BackendError(f"backend {backend!r}: {kernel} returned {problem}")
        return result
    return call


def _backward_with_fallback_context(fallback, backward: str):
    """The fallback's ``backward`` for a variant that gives only the forward: the fallback's context
    (which it may need) comes from running its own forward again."""
    forward = next(f for f, b in PAIRS.items() if b == backward)
    if backward == "conv2d_backward":
        def conv2d_backward(dout, x, w, ctx, p, has_bias, need_dx=True):
            b = np.zeros(w.shape[0], x.dtype) if has_bias else None
            _, own_ctx = fallback.conv2d_forward(x, w, b, p)
            return fallback.conv2d_backward(dout, x, w, own_ctx, p, has_bias, need_dx)
        return conv2d_backward

    def pool_backward(dout, x, ctx, p):
        return getattr(fallback, backward)(dout, x, getattr(fallback, forward)(x, p)[1], p)
    return pool_backward


def _forward_without_context(fallback, forward: str):
    """The fallback's ``forward`` for a variant that gives only the backward: its backward gets ctx None."""
    def forward_call(*args):
        return getattr(fallback, forward)(*args)[0], None
    return forward_call


class CheckedBackend:
    """A registered backend as the front sees it: the protocol's functions, each the variant's own,
    checked, or its fallback's."""

    def __init__(self, name: str, source, fallback_name: str, fallback, auto: bool):
        self.name, self.source, self.fallback, self.auto = name, source, fallback_name, auto
        own = {}
        for kernel in KERNELS + STEP_KERNELS + OPTIONAL:
            function = getattr(source, kernel, None)
            if function is not None and not callable(function):
                raise TypeError(f"backend {name!r}: {kernel} must be a function, got {type(function).__name__}")
            if function is not None:
                own[kernel] = function
        if not any(kernel in own for kernel in KERNELS + STEP_KERNELS + ("conv2d_relu_forward",)):
            raise TypeError(f"backend {name!r}: {source!r} has none of the kernel functions "
                            f"{', '.join(KERNELS)} (see fastconv.backends)")
        self.own = tuple(kernel for kernel in KERNELS + STEP_KERNELS + ("conv2d_relu_forward",) if kernel in own)
        for kernel, function in own.items():
            setattr(self, kernel, _checked(name, kernel, function) if kernel != "build_info" else function)
        for kernel in KERNELS + STEP_KERNELS:
            if kernel not in own and getattr(fallback, kernel, None) is not None:
                setattr(self, kernel, getattr(fallback, kernel))
        for forward, backward in PAIRS.items():
            if forward in own and backward not in own:
                setattr(self, backward, _backward_with_fallback_context(fallback, backward))
            elif backward in own and forward not in own:
                setattr(self, forward, _forward_without_context(fallback, forward))

    def __repr__(self) -> str:
        return (f"<fastconv backend {self.name!r}: {', '.join(self.own)} from {self.source!r}, "
                f"the rest from {self.fallback!r}>")


def load_from_path(spec: str) -> tuple[str, object]:
    """``path/to/variant.py`` or ``path/to/variant.py:attr`` as (backend name, module or attribute):
    named after the attribute, else the file. Raises ValueError saying what is wrong."""
    path, _, attribute = spec.rpartition(":") if ":" in spec and not os.path.exists(spec) else (spec, "", "")
    if not path.endswith(".py") or not os.path.isfile(path):
        raise ValueError(f"backend module {spec!r}: expected path/to/file.py or path/to/file.py:attribute "
                         f"naming an existing Python file")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    stem = stem if stem.isidentifier() else f"v_{stem}"  # 3x3.py: a name must not start with a digit
    module_name = MODULE_PREFIX + stem
    loader_spec = importlib.util.spec_from_file_location(module_name, os.path.abspath(path))
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # what dataclasses and pickling look classes up in
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"backend module {path} cannot be imported: {type(exc).__name__}: {exc}") from exc
    if not attribute:
        return stem, module
    if not hasattr(module, attribute):
        raise ValueError(f"backend module {path} has no attribute {attribute!r}")
    return attribute, getattr(module, attribute)
