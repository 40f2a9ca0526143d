"""The cython backend: compiled OpenMP kernels (im2col tiles + scipy BLAS GEMM, direct pooling loops).

How it works
------------
Conv forward splits the batch into work items (sample, tile of output rows), or for small
output images (fewer than ``_tuning.CYTHON_SHARED_GEMM_BELOW_POSITIONS`` positions) groups of whole images side by side,
so that each GEMM is long enough to pay for packing the weights; OpenMP threads take items as
they free up, copy the windows into their own slice of a reused column workspace
(``_workspace.scratch``, at most ``FASTCONV_WORKSPACE_MB`` for every thread
together, whatever N is) and multiply with single-threaded BLAS. A 1x1 / stride 1 / no-padding
conv multiplies the image directly. Backward cuts the batch into fixed chunks of consecutive
samples (a few per thread, so a thread slowed by other processes does not hold up the rest);
the thread that takes a chunk rebuilds each sample's (or group of images') columns, adds
``dout @ cols^T`` into the chunk's own dw (and db) partial, and writes dx through
``w^T @ dout`` plus a col2im scatter. The partials are then summed in chunk order, so results are bitwise
reproducible at a fixed thread count.
3x3 / stride 1 / undilated / ungrouped convs with at least ``_tuning.WINOGRAD_MIN_CHANNELS`` channels
and filters take the Winograd F(2x2, 3x3) path (``_cy_winograd.pyx``) instead: 2.25x fewer
multiplications, so these layers run ~1.5-2x faster than their GEMM. Its rounding differs
from the GEMM path's but is as small (measured on vgg-c64 and res-c128, largest error over
largest value: ~1e-15 in float64, ~5e-7 in float32, for the GEMM path in float32 the same);
``FASTCONV_WINOGRAD=0`` in the environment turns the path off.
Pooling runs one (sample, channel) plane per iteration; max-pool keeps the winner's flat
index as int32 for backward.

Threads: ``fastconv.set_num_threads`` sets the OpenMP team size; while the team calls BLAS,
scipy's OpenBLAS is pinned to one thread (``inner_blas_single_threaded``), so cores are never
oversubscribed. With a single work item the kernel runs serially and lets BLAS use the threads.
Calls release the GIL and keep per-Python-thread workspaces, so several Python threads may
call at once.

fork safety and loading the extension (OpenMP wait policy): ``_cy_runtime``.

Build: the kernels live in ``_cy_conv.pyx`` / ``_cy_pool.pyx`` and are compiled by setup.py
(``pip install .`` or ``pip install -e .``). Without them this module raises ImportError and
the registry leaves ``cython`` out of ``available_backends()``.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np

from .. import _tuning
from .._threads import get_num_threads, inner_blas_single_threaded
from . import _cy_runtime, _workspace
from ._compiled_step import CompiledStepKernels


_cy_conv, _cy_pool, _cy_winograd = _cy_runtime._cy_conv, _cy_runtime._cy_pool, _cy_runtime._cy_winograd
_run = _cy_runtime.run

_INT32_MAX = 2**31 - 1

def build_info() -> dict:
    """How the extension was compiled and runs (see _cy_runtime.build_info), and the Winograd path's setting."""
    winograd = _tuning.WINOGRAD_MIN_CHANNELS if WINOGRAD_ENABLED else "off"
    return {**_cy_runtime.build_info(), "winograd_min_channels": winograd}


_threads = _cy_runtime.team


def _blas_guard(threads: int):
    """Pin BLAS to one thread while an OpenMP team calls it; leave it alone for serial calls."""
    return inner_blas_single_threaded() if threads > 1 else nullcontext()


def _empty(dtype) -> np.ndarray:
    return np.empty(0, dtype)


# ----------------------------------------------------------------------------------- conv2d
def supports(op: str, signature: tuple) -> bool:
    """Whether this backend takes a call (the front hands it to another backend otherwise): its
    kernels index an image's planes and columns with int32."""
    if op == "conv2d":
        (_, c, h, width), (f, c_group, kh, kw), _, p, _ = signature
        return max(c * h * width, f * p.out_h * p.out_w, c_group * kh * kw * p.out_w * p.out_h) <= _INT32_MAX
    if op in ("max_pool2d", "avg_pool2d"):
        x_shape = signature[0]
        return x_shape[2] * x_shape[3] <= _INT32_MAX
    return True


def _tile_rows(w_shape, p, itemsize: int, threads: int, buffers: int) -> int:
    """Output rows per column tile: near CYTHON_COL_TILE_BYTES, at least CYTHON_MIN_TILE_POSITIONS
    positions (see fastconv._tuning), within the workspace limit."""
    row_bytes = max(1, w_shape[1] * w_shape[2] * w_shape[3] * p.out_w * itemsize)
    share = _workspace.WORKSPACE_LIMIT_BYTES // (buffers * threads)
    by_bytes = min(_tuning.CYTHON_COL_TILE_BYTES, share) // row_bytes
    # A quarter share at most, leaving the rest of the workspace to the dw partials.
    by_positions = min(-(-_tuning.CYTHON_MIN_TILE_POSITIONS // p.out_w), share // (4 * row_bytes))
    return max(1, min(p.out_h, max(by_bytes, by_positions)))




def _samples_per_item(n: int, w_shape, p, itemsize: int, threads: int, buffers: int) -> int:
    """Whole images per work item (1: an item is a tile of one image's output rows)."""
    positions = p.out_h * p.out_w
    if positions >= _tuning.CYTHON_SHARED_GEMM_BELOW_POSITIONS or p.is_pointwise:  # pointwise: no copies
        return 1
    depth = w_shape[1] * w_shape[2] * w_shape[3]
    per_image = (buffers * depth + w_shape[0] // p.groups) * positions * itemsize
    # Half the workspace at most, leaving the rest to the dw partials.
    fits = _workspace.WORKSPACE_LIMIT_BYTES // (2 * threads * per_image)
    near_cache = _tuning.CYTHON_SAMPLE_GROUP_BYTES // (depth * positions * itemsize)
    return max(1, min(-(-_tuning.CYTHON_SHARED_GEMM_BELOW_POSITIONS // positions), near_cache, -(-n // threads), fits))


class _Layout(NamedTuple):
    """How a conv call splits its work: whole images per item (1: tiles of output rows), rows
    per tile, and each thread's scratch sizes (columns; GEMM result or output gradients)."""

    samples: int
    rows: int
    col_size: int
    product_size: int


def _layout(n: int, w_shape, p, itemsize: int, threads: int, buffers: int) -> _Layout:
    depth, positions = w_shape[1] * w_shape[2] * w_shape[3], p.out_h * p.out_w
    samples = _samples_per_item(n, w_shape, p, itemsize, threads, buffers)
    if samples > 1:
        return _Layout(samples, p.out_h, depth * samples * positions, w_shape[0] // p.groups * samples * positions)
    rows = _tile_rows(w_shape, p, itemsize, threads, buffers)
    if n < threads:  # split images into more row tiles so every thread gets work
        rows = min(rows, -(-p.out_h // -(-threads // n)))
    return _Layout(1, rows, 1 if p.is_pointwise else depth * rows * p.out_w, 1)


# ------------------------------------------------------------------- conv2d, Winograd path
# Convs the Winograd path computes (3x3, stride 1, >= _tuning.WINOGRAD_MIN_CHANNELS channels
# and filters) take it unless FASTCONV_WINOGRAD=0.
WINOGRAD_ENABLED = os.environ.get("FASTCONV_WINOGRAD", "1").strip() != "0"


class _Winograd(NamedTuple):
    """How a Winograd call is laid out: tiles per block and the per-thread scratch sizes."""

    block: int
    in_size: int
    out_size: int


def _winograd_plan(x, w, p, threads: int) -> _Winograd | None:
    """The Winograd layout of a conv, or None when the call is not one it computes (or well)."""
    f, c, kh, kw = w.shape
    if (not WINOGRAD_ENABLED or (kh, kw, p.stride_h, p.stride_w, p.dil_h, p.dil_w, p.groups) != (3, 3, 1, 1, 1, 1, 1)
            or min(c, f) < _tuning.WINOGRAD_MIN_CHANNELS):
        return None
    itemsize = x.dtype.itemsize
    block = max(8, min(256, _tuning.WINOGRAD_BLOCK_BYTES // (16 * (c + f) * itemsize)))
    in_size, out_size = _cy_winograd.scratch_sizes(c, f, block)
    # u, and per thread: v, dv, p and the dw accumulator du.
    needed = (16 * f * c * (1 + threads) + threads * (2 * in_size + out_size)) * itemsize
    return _Winograd(block, in_size, out_size) if needed <= _workspace.WORKSPACE_LIMIT_BYTES else None


def _winograd_weights(w, threads: int) -> np.ndarray:
    u = _workspace.scratch("cython.winograd.u", (16, w.shape[0], w.shape[1]), w.dtype)
    _run(_cy_winograd.transform_weights, w, u, threads)
    return u


def _winograd_forward(x, w, b, p, plan: _Winograd, relu: bool):
    n, f = x.shape[0], w.shape[0]
    tiles = n * -(-p.out_h // 2) * -(-p.out_w // 2)
    threads = _threads(-(-tiles // plan.block))
    u = _winograd_weights(w, threads)
    v = _workspace.scratch("cython.col", (threads, plan.in_size), x.dtype)
    m = _workspace.scratch("cython.product", (threads, plan.out_size), x.dtype)
    out = np.empty((n, f, p.out_h, p.out_w), x.dtype)
    with _blas_guard(threads):
        _run(_cy_winograd.conv2d_forward, x, u, _empty(x.dtype) if b is None else b, out, v, m,
             p.pad_h, p.pad_w, plan.block, relu, threads)
    return out, None


def _winograd_backward(dout, x, w, p, has_bias, plan: _Winograd, dx):
    n, f, c = x.shape[0], w.shape[0], w.shape[1]
    threads = _threads(n)
    u = _winograd_weights(w, threads)
    chunks = _backward_chunks(n, threads, w.size * x.dtype.itemsize)
    v = _workspace.scratch("cython.col", (threads, plan.in_size), x.dtype)
    dv = _workspace.scratch("cython.dcol", (threads, plan.in_size), x.dtype)
    grads = _workspace.scratch("cython.product", (threads, plan.out_size), x.dtype)
    du = _workspace.scratch("cython.winograd.du", (threads, 16 * f * c), x.dtype)
    dw_parts = _workspace.scratch("cython.dw", (chunks, w.size), x.dtype)
    db_parts = _workspace.scratch("cython.db", (chunks, f if has_bias else 0), x.dtype)
    with _blas_guard(threads):
        _run(_cy_winograd.conv2d_backward, dout, x, u, dx, dw_parts, db_parts, v, grads, dv, du,
             p.pad_h, p.pad_w, plan.block, threads)
    return dw_parts, db_parts


# ----------------------------------------------------------------------- conv2d, entry points
def conv2d_forward(x, w, b, p, relu: bool = False):
    plan = _winograd_plan(x, w, p, _threads(get_num_threads()))
    if plan is not None:
        return _winograd_forward(x, w, b, p, plan, relu)
    n = x.shape[0]
    layout = _layout(n, w.shape, p, x.dtype.itemsize, _threads(get_num_threads()), 1)
    items = -(-n // layout.samples) if layout.samples > 1 else n * -(-p.out_h // layout.rows)
    threads = _threads(items)
    col = _workspace.scratch("cython.col", (threads, layout.col_size), x.dtype)
    product = _workspace.scratch("cython.product", (threads, layout.product_size), x.dtype)
    out = np.empty((n, w.shape[0], p.out_h, p.out_w), x.dtype)
    bias = _empty(x.dtype) if b is None else b
    with _blas_guard(threads):
        _run(_cy_conv.conv2d_forward, x, w, bias, out, col, product, p.geometry, p.is_pointwise, layout.rows,
             layout.samples, relu, threads)
    return out, None


def conv2d_relu_forward(x, w, b, p):
    """relu(conv(x, w) + b), the ReLU applied to each output tile as it is written."""
    return conv2d_forward(x, w, b, p, relu=True)


def _backward_chunks(n: int, threads: int, part_bytes: int) -> int:
    """Fixed chunks of the batch, each with its own dw partial: several per thread so a thread
    slowed by other processes does not hold up the rest, fewer when the partials are large."""
    budget = max(threads, _workspace.WORKSPACE_LIMIT_BYTES // (4 * max(1, part_bytes)))
    return max(1, min(n, _tuning.WORK_ITEMS_PER_THREAD * threads, budget))


def conv2d_backward(dout, x, w, ctx, p, has_bias, need_dx=True):
    # Without need_dx the kernels get a dx with no images and write none.
    dx = np.empty_like(x) if need_dx else np.empty((0, *x.shape[1:]), x.dtype)
    plan = _winograd_plan(x, w, p, _threads(x.shape[0]))
    if plan is not None:
        dw_parts, db_parts = _winograd_backward(dout, x, w, p, has_bias, plan, dx)
    else:
        dw_parts, db_parts = _gemm_backward(dout, x, w, p, has_bias, dx)
    # Fixed-order reduction of the chunk partials: same thread count, same bits.
    dw = dw_parts[0].copy()
    for part in dw_parts[1:]:
        dw += part
    db = None
    if has_bias:
        db = db_parts[0].copy()
        for part in db_parts[1:]:
            db += part
    return dx if need_dx else None, dw.reshape(w.shape), db


def _gemm_backward(dout, x, w, p, has_bias, dx):
    n = x.shape[0]
    threads = _threads(n)
    layout = _layout(n, w.shape, p, x.dtype.itemsize, threads, 2)
    col = _workspace.scratch("cython.col", (threads, layout.col_size), x.dtype)
    dcol = _workspace.scratch("cython.dcol", (threads, layout.col_size), x.dtype)
    grads = _workspace.scratch("cython.product", (threads, layout.product_size), x.dtype)
    # Chunks of at least `samples` images, so each can fill its GEMMs.
    chunks = min(_backward_chunks(n, threads, w.size * x.dtype.itemsize), max(1, n // layout.samples))
    dw_parts = _workspace.scratch("cython.dw", (chunks, w.size), x.dtype)
    db_parts = _workspace.scratch("cython.db", (chunks, w.shape[0] if has_bias else 0), x.dtype)
    dw_parts.fill(0)
    db_parts.fill(0)
    with _blas_guard(threads):
        _run(_cy_conv.conv2d_backward, dout, x, w, dx, dw_parts, db_parts, col, dcol, grads, p.geometry, p.is_pointwise,
             layout.rows, layout.samples, threads)
    return dw_parts, db_parts


# ---------------------------------------------------------------------------------- pooling
def _planes(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def max_pool2d_forward(x, p):
    out = np.empty((x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    argmax = np.empty(out.shape, np.int32)
    _run(_cy_pool.max_pool2d_forward, _planes(x), _planes(out), _planes(argmax), p.geometry,
                                _threads(x.shape[0] * x.shape[1]))
    return out, argmax


def max_pool2d_backward(dout, x, argmax, p):
    dx = np.empty_like(x)
    _run(_cy_pool.max_pool2d_backward, _planes(dout), _planes(argmax), _planes(dx),
                                 _threads(x.shape[0] * x.shape[1]))
    return dx


def avg_pool2d_forward(x, p):
    out = np.empty((x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    _run(_cy_pool.avg_pool2d_forward, _planes(x), _planes(out), p.geometry, _threads(x.shape[0] * x.shape[1]))
    return out, None


def avg_pool2d_backward(dout, x, ctx, p):
    dx = np.empty_like(x)
    _run(_cy_pool.avg_pool2d_backward, _planes(dout), _planes(dx), p.geometry, _threads(x.shape[0] * x.shape[1]))
    return dx


# ------------------------------------------------------------- the rest of a training step
CompiledStepKernels(_cy_runtime._cy_layers, lambda kernel, threads, *args: _run(kernel, *args, threads),
                    _cy_runtime.team_for).export(globals())
