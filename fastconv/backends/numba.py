"""The numba backend: parallel JIT kernels (im2col + BLAS GEMM, direct loops for thin convolutions).

Importing this module imports Numba but compiles nothing; each kernel compiles on its first
call and is cached on disk (see ``_numba_runtime``). Numba's thread count follows
``fastconv.set_num_threads`` on every call, and scipy's BLAS, which Numba's ``np.dot`` calls
from inside our parallel loops, is pinned to one thread meanwhile.
"""
from __future__ import annotations

import sys

import numpy as np

from .. import _tuning
from .._threads import inner_blas_single_threaded, threads_for
from . import _numba_conv, _numba_pool, _numba_runtime, _numba_step
from ._compiled_step import CompiledStepKernels
from ._workspace import batch_chunk, scratch

build_info = _numba_runtime.build_info


def uses_direct_loops(w_shape, groups) -> bool:
    """Direct loops when the GEMMs would be skinny (depthwise and kin): few filters per group,
    or few weights per filter."""
    n_filters, c_group, kh, kw = w_shape
    return n_filters // groups < 4 or c_group * kh * kw < 4


def conv2d_forward(x, w, b, p):
    threads = _numba_runtime.use_threads()
    n_batch, channels = x.shape[:2]
    out = np.empty((n_batch, w.shape[0], p.out_h, p.out_w), x.dtype)
    bias = np.zeros(0, x.dtype) if b is None else b
    if uses_direct_loops(w.shape, p.groups):
        with _numba_runtime.parallel_region():
            _numba_conv.conv_forward_direct(x, w, bias, b is not None, p.geometry, out)
        return out, None
    k_all = channels * w.shape[2] * w.shape[3]
    workspace = scratch("numba.cols", (threads * k_all * p.out_h * p.out_w,), x.dtype)
    with inner_blas_single_threaded(), _numba_runtime.parallel_region():
        _numba_conv.conv_forward_gemm(x, w, bias, b is not None, p.geometry, p.is_pointwise, out, workspace)
    return out, None


def backward_step(n_batch, positions, bytes_per_sample, threads) -> int:
    """Samples per GEMM in conv backward: enough columns, all blocks within the workspace limit."""
    wanted = -(-_tuning.NUMBA_BACKWARD_MIN_GEMM_COLUMNS // positions)
    return max(1, min(wanted, batch_chunk(n_batch, threads * bytes_per_sample)))


def conv2d_backward(dout, x, w, ctx, p, has_bias, need_dx=True):
    threads = _numba_runtime.use_threads()
    n_batch, channels = x.shape[:2]
    n_filters = w.shape[0]
    # Without need_dx an empty dx of the same type: the same compiled kernel, nothing written.
    dx = np.empty_like(x) if need_dx else np.empty((0, *x.shape[1:]), x.dtype)
    geom = p.geometry
    if uses_direct_loops(w.shape, p.groups):
        dw = np.empty_like(w)
        db = np.empty(n_filters, x.dtype)
        with _numba_runtime.parallel_region():
            if need_dx:
                _numba_conv.conv_backward_input_direct(dout, w, geom, dx)
            _numba_conv.conv_backward_params_direct(x, dout, geom, dw, db)
        return dx if need_dx else None, dw, db if has_bias else None

    positions = p.out_h * p.out_w
    k_all = channels * w.shape[2] * w.shape[3]
    blocks = min(n_batch, _tuning.WORK_ITEMS_PER_THREAD * threads)
    pointwise = p.is_pointwise
    step = 1 if pointwise else backward_step(n_batch, positions, (k_all + n_filters) * positions * x.itemsize, threads)
    cols_space = scratch("numba.cols", (threads * k_all * step * positions,), x.dtype)
    dout_space = scratch("numba.dout", (threads * n_filters * step * positions,), x.dtype)
    # Per-block partial sums, reduced in block order: deterministic for a given thread count.
    dw_parts = scratch("numba.dw", (blocks, n_filters, w[0].size), x.dtype)
    db_parts = scratch("numba.db", (blocks, n_filters), x.dtype)
    with inner_blas_single_threaded(), _numba_runtime.parallel_region():
        _numba_conv.conv_backward_gemm(x, w, dout, geom, pointwise, blocks, step, need_dx, dx, dw_parts, db_parts,
                                       cols_space, dout_space)
    dw = dw_parts.sum(axis=0).reshape(w.shape)
    return dx if need_dx else None, dw, db_parts.sum(axis=0) if has_bias else None


# The jitted kernels (in _numba_step) behind each op of the rest of a training step.
STEP_OP_KERNELS = {
    "relu": ("relu_forward", "relu_backward"),
    "affine": ("affine_forward", "affine_backward"),
    "batch_norm": ("batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_backward"),
    **{op: (op,) for op in ("softmax_cross_entropy", "sgd_update", "sgd_momentum_update", "rmsprop_update",
                            "adam_update")},
}


def _kernels(op: str, signature: tuple) -> tuple:
    """The jitted entry points a call of ``op`` on ``signature`` (fastconv._auto's form) runs."""
    if op == "conv2d":
        w_shape, p = signature[1], signature[3]
        if uses_direct_loops(w_shape, p.groups):
            return (_numba_conv.conv_forward_direct, _numba_conv.conv_backward_input_direct,
                    _numba_conv.conv_backward_params_direct)
        return _numba_conv.conv_forward_gemm, _numba_conv.conv_backward_gemm
    if op == "max_pool2d":
        return _numba_pool.max_pool_forward, _numba_pool.max_pool_backward
    if op in STEP_OP_KERNELS:
        return tuple(getattr(_numba_step, name) for name in STEP_OP_KERNELS[op])
    return _numba_pool.avg_pool_forward, _numba_pool.avg_pool_backward


def is_warm(op: str, signature: tuple) -> bool:
    """Whether this process has compiled (or loaded from the disk cache) the kernels of ``op`` for
    the signature's dtype: `auto` times this backend only then, so no call waits for the JIT."""
    dtype = np.dtype(signature[-1]).name
    return all(any(str(getattr(types[0], "dtype", "")) == dtype for types in kernel.signatures)
               for kernel in _kernels(op, signature))


# Kernel sets precompile() knows, with the seconds each took to compile here for one dtype (to
# share the work between processes): the convolutions, the pools, and each op of STEP_OP_KERNELS.
COMPILE_SECONDS = {"conv_forward": 6, "conv_backward": 12, "max_pool": 2, "avg_pool": 1, "relu": 1, "affine": 2.5,
                   "batch_norm": 4, "softmax_cross_entropy": 1, "sgd_update": 1, "sgd_momentum_update": 1,
                   "rmsprop_update": 1, "adam_update": 1}


def precompile(parts, direct: bool = False) -> None:
    """Compile (or load from the disk cache) kernels on tiny inputs: ``parts`` are (part, dtype)
    pairs, part from COMPILE_SECONDS; ``direct`` adds the direct-loop conv kernels. Each kernel's
    cache entry is written by the process that compiles it: give another process other parts."""
    from .._params import ConvParams, PoolParams
    from ._step_probe import step_kernels_call
    pool = PoolParams(2, 2, 1, 1, 0, 0, 2, 2)
    module = sys.modules[__name__]
    for part, dtype in parts:
        x = np.zeros((1, 4, 3, 3), dtype)
        if part in ("conv_forward", "conv_backward"):
            for w_shape in ((4, 4, 2, 2),) + (((4, 1, 2, 2),) if direct else ()):
                w, p = np.zeros(w_shape, dtype), ConvParams(1, 1, 0, 0, 1, 1, 4 // w_shape[1], 2, 2, 2, 2)
                if part == "conv_forward":
                    conv2d_forward(x, w, None, p)
                else:
                    conv2d_backward(np.zeros((1, 4, 2, 2), dtype), x, w, None, p, False)
        elif part in STEP_OP_KERNELS:  # as auto warms them
            step_kernels_call(module, part, np.dtype(dtype).char)()
        else:
            op = "max_pool2d" if part == "max_pool" else "avg_pool2d"
            out, ctx = globals()[op + "_forward"](x, pool)
            globals()[op + "_backward"](out, x, ctx, pool)


def split_compile_work(parts, bins: int) -> list[list]:
    """``parts`` shared among ``bins`` lists of about equal compile time (longest first)."""
    loads = [[0.0, []] for _ in range(bins)]
    for part in sorted(parts, key=lambda pair: -COMPILE_SECONDS[pair[0]]):
        lightest = min(loads, key=lambda load: load[0])
        lightest[0] += COMPILE_SECONDS[part[0]]
        lightest[1].append(part)
    return [job for _, job in loads if job]


def _argmax_dtype(height, width):
    return np.int32 if height * width < 2**31 else np.int64


def max_pool2d_forward(x, p):
    _numba_runtime.use_threads()
    shape = (x.shape[0], x.shape[1], p.out_h, p.out_w)
    out = np.empty(shape, x.dtype)
    argmax = np.empty(shape, _argmax_dtype(*x.shape[2:]))
    with _numba_runtime.parallel_region():
        _numba_pool.max_pool_forward(x, p.geometry, out, argmax)
    return out, argmax


def max_pool2d_backward(dout, x, argmax, p):
    _numba_runtime.use_threads()
    dx = np.empty_like(x)
    with _numba_runtime.parallel_region():
        _numba_pool.max_pool_backward(dout, argmax, dx)
    return dx


def avg_pool2d_forward(x, p):
    _numba_runtime.use_threads()
    out = np.empty((x.shape[0], x.shape[1], p.out_h, p.out_w), x.dtype)
    with _numba_runtime.parallel_region():
        _numba_pool.avg_pool_forward(x, p.geometry, out)
    return out, None


def avg_pool2d_backward(dout, x, ctx, p):
    _numba_runtime.use_threads()
    dx = np.empty_like(x)
    with _numba_runtime.parallel_region():
        _numba_pool.avg_pool_backward(dout, p.geometry, dx)
    return dx


# ------------------------------------------------------------ the rest of a training step
def _run_step(kernel, threads: int, *args) -> None:
    _numba_step.use_threads(threads)  # small calls leave the pool asleep
    with _numba_runtime.parallel_region():
        kernel(*args)


CompiledStepKernels(_numba_step, _run_step, threads_for).export(globals())
