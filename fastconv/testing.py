"""Test tools: argument grids, layouts, naive and PyTorch reference results, numeric gradients, max-pool special
inputs; check_backend (fastconv.conformance), the grid run against any backend as a report."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _api, _registry
from .cases import ConvCase, PoolCase, assert_results_close, pair

DTYPES = (np.float32, np.float64)
POOL_OPS = ("max_pool2d", "avg_pool2d")


def fast_backends() -> tuple:
    """The available backends but naive, the reference they are compared with (naive against
    itself proves nothing)."""
    return tuple(name for name in _registry.available_backends() if name != _registry.REFERENCE)


def case_id(case) -> str:
    """A case's name as its pytest id: ``parametrize("case", CASES, ids=case_id)``."""
    return case.name


# Argument grids for correctness tests: tiny shapes (the naive reference runs them), every
# argument of the interface, ints or (h, w) pairs.
CONV_GRID = (
    ConvCase("basic", (2, 3, 7, 7), (4, 3, 3, 3), 1, 1),
    ConvCase("pairs", (2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (1, 0), (1, 2)),
    ConvCase("groups", (2, 6, 7, 7), (4, 3, 3, 3), 1, 1, groups=2),
    ConvCase("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), 1, 1, groups=4),
    ConvCase("depthwise-multiplier", (1, 3, 5, 5), (6, 1, 2, 2), 1, 0, groups=3),
    ConvCase("no-bias", (2, 3, 6, 5), (2, 3, 3, 3), 1, 1, bias=False),
    ConvCase("odd-sizes", (3, 3, 11, 13), (5, 3, 5, 3), (3, 2), (2, 1)),
    ConvCase("batch1-1x1", (1, 2, 5, 5), (3, 2, 1, 1)),
    ConvCase("kernel-is-input", (2, 3, 5, 6), (4, 3, 5, 6)),
    ConvCase("stride-over-kernel", (2, 2, 9, 9), (3, 2, 2, 2), 4),
    ConvCase("large-padding", (1, 2, 3, 3), (2, 2, 3, 3), 1, 4),
    ConvCase("kernel-over-input", (1, 1, 2, 2), (1, 1, 4, 4), 1, 1),
    ConvCase("dilation", (2, 2, 9, 9), (2, 2, 3, 3), 1, 2, 3),
    ConvCase("everything", (2, 4, 8, 7), (6, 2, 3, 2), (2, 3), (2, 1), (2, 1), groups=2),
    ConvCase("groups-no-bias", (1, 4, 5, 5), (2, 2, 2, 3), (1, 2), (0, 1), groups=2, bias=False),
    # Dilated kernel wider than the input: its last column of taps only ever reads padding.
    ConvCase("taps-only-in-padding", (1, 2, 7, 5), (1, 2, 2, 4), 1, 3, 3, bias=False),
    # 3x3 / stride 1 with >= 16 channels and filters: cython's Winograd path, odd tile edges.
    ConvCase("winograd", (2, 16, 7, 6), (16, 16, 3, 3), 1, 1),
    ConvCase("winograd-pads", (3, 17, 5, 9), (18, 17, 3, 3), 1, (0, 2), bias=False),
)

POOL_GRID = (
    PoolCase("k2", (2, 3, 8, 8), 2),
    PoolCase("k3-s2-p1-odd", (2, 2, 9, 7), 3, 2, 1),
    PoolCase("pairs-overlapping", (2, 2, 7, 8), (2, 3), (1, 2), (1, 1)),
    PoolCase("k3-s1-p1", (1, 3, 6, 5), 3, 1, 1),
    PoolCase("kernel-is-input", (1, 2, 5, 6), (5, 6)),
    PoolCase("stride-over-kernel", (2, 2, 9, 9), 2, 3),
    PoolCase("leftover-rows", (1, 2, 7, 5), 2),
    PoolCase("k1", (1, 2, 3, 4), 1),
    PoolCase("k4-p2", (1, 1, 6, 6), 4, None, 2),
    PoolCase("pairs-stride-none", (3, 1, 7, 9), (3, 2), None, (1, 0)),
)


# Memory layouts an input may come in (each keeps the values and changes the memory): the front
# must hand every backend C-contiguous native arrays, or read-only ones as they are.
def strided_view(arr):
    """The same values inside a twice-as-large buffer, every other element (non-contiguous)."""
    big = np.zeros(tuple(2 * s for s in arr.shape), arr.dtype)
    view = big[tuple(slice(None, None, 2) for _ in arr.shape)]
    view[...] = arr
    return view


def reversed_view(arr):
    """Negative strides on every axis."""
    return np.flip(np.flip(arr).copy())


def channels_last(arr):
    """Transposed to put axis 0 last, copied, and transposed back: a permuted-stride view."""
    return np.moveaxis(np.moveaxis(arr, 0, -1).copy(), -1, 0)


def read_only(arr):
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


def swapped_byte_order(arr):
    return arr.astype(arr.dtype.newbyteorder("S"))


def everything_at_once(arr):
    return read_only(strided_view(swapped_byte_order(arr)))


LAYOUTS = {"strided-view": strided_view, "negative-strides": reversed_view, "channels-last": channels_last,
           "fortran": np.asfortranarray, "read-only": read_only, "non-native-byte-order": swapped_byte_order,
           "everything-at-once": everything_at_once}


def conv2d_results(x, w, b, dout, backend=None, **kwargs):
    """(out, dx, dw, db) of one conv2d forward + backward on ``backend``."""
    out, cache = _api.conv2d_forward(x, w, b, backend=backend, **kwargs)
    return (out, *_api.conv2d_backward(dout, cache))


def pool2d_results(op, x, dout, backend=None, **kwargs):
    """(out, dx) of one ``op`` ("max_pool2d" or "avg_pool2d") forward + backward on ``backend``."""
    out, cache = getattr(_api, op + "_forward")(x, backend=backend, **kwargs)
    return out, getattr(_api, op + "_backward")(dout, cache)


@functools.lru_cache(maxsize=None)
def naive_results(case, dtype=np.float64, seed=0, op=None) -> tuple:
    """The naive reference's results for ``case.inputs(dtype, seed)`` (``op``: which pooling, for a
    PoolCase), computed once per process and read-only: several tests compare with the same ones."""
    if isinstance(case, ConvCase):
        results = conv2d_results(*case.inputs(dtype, seed), "naive", **case.kwargs())
    else:
        results = pool2d_results(op, *case.inputs(dtype, seed), "naive", **case.kwargs())
    for array in results:
        if array is not None:
            array.flags.writeable = False
    return results


def assert_same_from_python_threads(work, items, workers=4, rounds=3):
    """``work(item)`` for every item, from ``workers`` Python threads at once and ``rounds`` times over,
    gives exactly its results called one at a time."""
    expected = [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        got = list(pool.map(work, list(items) * rounds))
    for result, want in zip(got, expected * rounds, strict=True):
        assert_results_close(result, want, exact=True)


def torch_conv2d_results(x, w, b, dout, stride=1, padding=0, dilation=1, groups=1):
    """(out, dx, dw, db) computed by PyTorch's autograd: the independent oracle (needs torch)."""
    import torch
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    out = torch.nn.functional.conv2d(tx, tw, tb, pair(stride), pair(padding), pair(dilation), groups)
    out.backward(torch.tensor(dout))
    db = None if tb is None else tb.grad.numpy()
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), db


def torch_pool2d_results(op, x, dout, kernel_size, stride=None, padding=0):
    """(out, dx) of PyTorch's ``max_pool2d`` / ``avg_pool2d`` (count_include_pad=True)."""
    import torch
    tx = torch.tensor(x, requires_grad=True)
    stride = kernel_size if stride is None else stride
    out = getattr(torch.nn.functional, op)(tx, pair(kernel_size), pair(stride), pair(padding))
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy()


MAX_POOL_SPECIAL_KINDS = ("ties", "constant-planes", "nan", "neg-inf", "nan-and-inf")


def max_pool_special_inputs(kind: str, case: PoolCase, dtype=np.float64, seed=0):
    """(x, dout) that exercise max-pool's tie rule and NaN/inf handling.

    ``dout`` holds small integers, so gradient sums are exact in any order and backends can
    be compared bit for bit.
    """
    rng = np.random.default_rng(seed)
    shape = case.x_shape
    if kind == "ties":
        x = rng.integers(-1, 2, shape).astype(dtype)
    elif kind == "constant-planes":
        x = np.broadcast_to(rng.integers(-3, 4, shape[:2])[:, :, None, None], shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
        if kind in ("nan", "nan-and-inf"):
            x[rng.random(shape) < 0.2] = np.nan
        if kind in ("neg-inf", "nan-and-inf"):
            x[rng.random(shape) < 0.4] = -np.inf
            x[0, 0] = -np.inf  # a whole plane of -inf: every window's first cell must win
        if kind == "nan-and-inf":
            x[rng.random(shape) < 0.1] = np.inf
    dout = rng.integers(-3, 4, case.out_shape()).astype(dtype)
    return x, dout


def numeric_gradient(f, x, dout, h=1e-6):
    """Central-difference gradient of ``sum(f(x) * dout)`` with respect to ``x`` (float64)."""
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = np.sum(f(x) * dout)
        flat_x[i] = old - h
        minus = np.sum(f(x) * dout)
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * h)
    return grad


def repeated_backward_results(op: str, case, other, dtype, backend) -> tuple:
    """(actual, expected) for ``op``'s forward on ``case``, a forward on ``other``, ``case``'s backward,
    ``other``'s, then ``case``'s backward again: ``case``'s output and first gradients unchanged by the
    later calls (no result lives in memory a later call reuses, no cache on scratch another call
    overwrites), the second backward equal to the first, ``other``'s results those of a fresh run."""
    forward, backward = getattr(_api, op + "_forward"), getattr(_api, op + "_backward")

    def run(which, seed):
        *arrays, dout = which.inputs(dtype, seed)
        out, cache = forward(*arrays, backend=backend, **which.kwargs())
        return out, cache, dout

    def grads(dout, cache):
        found = backward(dout, cache)
        return found if isinstance(found, tuple) else (found,)

    out, cache, dout = run(case, 0)
    out_copy = out.copy()
    other_out, other_cache, other_dout = run(other, 1)
    first = grads(dout, cache)
    first_copies = tuple(None if g is None else g.copy() for g in first)
    other_grads = grads(other_dout, other_cache)
    second = grads(dout, cache)
    fresh_out, fresh_cache, _ = run(other, 1)
    fresh = (fresh_out, *grads(other_dout, fresh_cache))
    return (out, *first, *second, other_out, *other_grads), (out_copy, *first_copies, *first_copies, *fresh)


def __getattr__(name: str):
    # check_backend and its report live in fastconv.conformance, which is built on this module.
    if name in ("check_backend", "ConformanceReport", "Failure"):
        from . import conformance
        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
