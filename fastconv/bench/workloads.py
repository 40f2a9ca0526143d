"""What `fastconv bench` measures: workloads (case x op x dtype), one callable per backend, references."""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv
from fastconv import _api
from fastconv.cases import CONV_SMALL, CONV_SUITE, POOL_SMALL, POOL_SUITE, ConvCase, assert_results_close

TORCH = "torch"
# Peer row on conv forward: numpy's matrix product of the conv's GEMM size (same flop count),
# the yardstick for how much of the BLAS speed a conv backend reaches.
GEMM = "gemm"
# fastconv's default: its warm-up call is where it measures the candidates and picks one.
AUTO = "auto"
CONV_OPS = ("conv_fwd", "conv_fwd_bwd")
POOL_OPS = ("maxpool_fwd_bwd", "avgpool_fwd_bwd")
DTYPES = ("float32", "float64")


@functools.lru_cache(maxsize=1)
def families() -> dict:
    """Workload families other packages add (entry point group ``fastconv.workloads``; nn adds its
    training steps, op "train_step"), by op. A family is a module (or object) defining ``OP``,
    ``CASES`` (objects with a ``name``), ``REFERENCES`` (backends to check against, the first one
    present), ``flops(case)``, ``describe(case)``, ``make_call(case, dtype, backend, torch_name)``
    (a callable whose first call returns the outputs to check) and ``agrees(outputs, expected,
    dtype)``. One that fails to load is left out. Loaded on first use, not when this module is."""
    from importlib.metadata import entry_points
    found = {}
    for point in entry_points(group="fastconv.workloads"):
        try:
            family = point.load()
            found[family.OP] = family
        except Exception:  # a broken plug-in must not break the kernel benchmarks
            continue
    return found


TRAIN_STEP = "train_step"  # nn's training steps, the headline workloads when nn is installed
KERNEL_OPS = CONV_OPS + POOL_OPS

CONV_CASES = CONV_SMALL + CONV_SUITE
POOL_CASES = POOL_SMALL + POOL_SUITE


def all_ops() -> tuple[str, ...]:
    """Every op there are workloads for: the families' first (the whole-network yardsticks)."""
    return tuple(families()) + KERNEL_OPS


def cases_by_name() -> dict:
    """Every case by name, the families' included."""
    found = {case.name: case for family in families().values() for case in family.CASES}
    found.update({case.name: case for case in CONV_CASES + POOL_CASES})
    return found
# `naive` is the reference here and is too slow for anything bigger.
SMALL_CASES = frozenset(case.name for case in CONV_SMALL + POOL_SMALL)

# --quick: the naive reference on small cases, two training steps beside PyTorch, then headline
# kernel shapes, kept cheap enough for a minute on a fresh install, Numba compiling included
# (float32 only: every dtype is a second set of Numba kernels to compile).
QUICK = (
    ("small-s2", "conv_fwd_bwd", "float32"),
    ("small-pool2", "maxpool_fwd_bwd", "float32"),
    ("digits", "train_step", "float32"),
    ("cs231n", "train_step", "float32"),
    ("cs231n-s2", "conv_fwd_bwd", "float32"),
    ("vgg-c64", "conv_fwd", "float32"),
    ("pool2-s2", "maxpool_fwd_bwd", "float32"),
    ("pool2-s2", "avgpool_fwd_bwd", "float32"),
)


@dataclass(frozen=True)
class Workload:
    """One table of the report: a shape case, an operation and a dtype."""

    case: object  # cases.ConvCase, cases.PoolCase, or a case of a workload family
    op: str
    dtype: str

    @property
    def family(self):
        """The workload family this belongs to (see _families), or None for a kernel workload."""
        return families().get(self.op)

    @property
    def key(self) -> tuple:
        return (self.case.name, self.op, self.dtype)

    @property
    def label(self) -> str:
        return " ".join(self.key)

    @property
    def small(self) -> bool:
        return self.case.name in SMALL_CASES

    def flops(self) -> float:
        """Floating-point operations of one call.

        Conv: 2 x multiply-adds of the forward pass; the backward (dx and dw) costs twice that.
        Pooling: one operation per window element and pass (a compare or an add).
        A family's workload: what the family says.
        """
        if self.family is not None:
            return self.family.flops(self.case)
        if self.op in CONV_OPS:
            return self.case.flops() * (3 if self.op == "conv_fwd_bwd" else 1)
        return 2 * self.case.flops()

    def describe(self) -> str:
        c = self.case
        if self.family is not None:
            return self.family.describe(c)
        if self.op in CONV_OPS:
            extra = "".join(f" {k} {getattr(c, k)}" for k in ("dilation", "groups") if getattr(c, k) != 1)
            return f"x {_dims(c.x_shape)}  w {_dims(c.w_shape)}  stride {c.stride}  pad {c.padding}{extra}"
        return f"x {_dims(c.x_shape)}  kernel {c.kernel_size}  stride {c.stride}  pad {c.padding}"

    def inputs(self, seed: int = 0) -> dict:
        dtype = np.dtype(self.dtype)
        if self.family is not None:
            return {}  # a family's call makes its own inputs
        names = ("x", "w", "b", "dout") if self.op in CONV_OPS else ("x", "dout")
        return dict(zip(names, self.case.inputs(dtype, seed)))


def _dims(shape) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def all_workloads() -> list[Workload]:
    """The whole suite, grouped by op, then case, then dtype."""
    out = []
    for op in all_ops():
        chosen = families()[op].CASES if op in families() else CONV_CASES if op in CONV_OPS else POOL_CASES
        for case in chosen:
            out.extend(Workload(case, op, dtype) for dtype in DTYPES)
    return out


def split_values(values) -> list[str]:
    """``["a,b", "c"]`` (a repeatable, comma-separated option) -> ``["a", "b", "c"]``."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def select(quick: bool = False, cases=None, ops=None, dtypes=None) -> list[Workload]:
    """Workloads to run. ``--quick`` runs QUICK unless cases are named (then they come from the suite).

    Raises ValueError naming the bad value when a filter matches nothing.
    """
    ops, dtypes, patterns = split_values(ops), split_values(dtypes), split_values(cases)
    known_ops, known_cases = all_ops(), cases_by_name()
    for value, allowed, what in [(v, known_ops, "op") for v in ops] + [(v, DTYPES, "dtype") for v in dtypes]:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")
    for pattern in patterns:
        if not fnmatch.filter(known_cases, pattern):
            raise ValueError(f"no case matches {pattern!r}; cases: {', '.join(known_cases)}")
    chosen = all_workloads()
    if quick and not patterns:
        quick_keys = set(QUICK)
        chosen = [wl for wl in chosen if wl.key in quick_keys]
    return [wl for wl in chosen
            if (not ops or wl.op in ops) and (not dtypes or wl.dtype in dtypes)
            and (not patterns or any(fnmatch.fnmatchcase(wl.case.name, p) for p in patterns))]


def torch_module():
    """PyTorch, running on fastconv's thread count, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(fastconv.get_num_threads())
    return torch


def usable_backends() -> tuple[str, ...]:
    """Every row this machine can time: fastconv's backends, `auto`, PyTorch when installed, numpy's GEMM."""
    return fastconv.available_backends() + (AUTO,) + ((TORCH,) if torch_module() is not None else ()) + (GEMM,)


def runs_on(workload: Workload, backend: str) -> bool:
    if backend == "naive":
        return workload.small
    if backend == GEMM:
        return workload.op == "conv_fwd" and workload.case.groups == 1
    return True


def gemm_shape(case: ConvCase) -> tuple:
    """(rows, inner, columns) of the matrix product a conv forward amounts to: (F, C*KH*KW, N*OH*OW)."""
    f, c, kh, kw = case.w_shape
    n, _, out_h, out_w = case.out_shape()
    return f, c * kh * kw, n * out_h * out_w


def reference_backend(workload: Workload, usable) -> str | None:
    """The implementation a workload's results are checked against.

    naive on small cases; on large ones im2col (which the test suite verifies against naive),
    or PyTorch when im2col is missing; a family's workloads: the first of its REFERENCES.
    """
    if workload.family is not None:
        candidates = workload.family.REFERENCES
    else:
        candidates = ("naive",) if workload.small else ("im2col", TORCH)
    return next((name for name in candidates if name in usable), None)


def make_call(workload: Workload, backend: str, arrays: dict) -> Callable[[], tuple]:
    """A no-argument callable running ``workload`` on ``backend``, returning its outputs as arrays."""
    if workload.family is not None:
        if backend == TORCH:
            torch_module()  # PyTorch on fastconv's thread count
        return workload.family.make_call(workload.case, np.dtype(workload.dtype), backend, TORCH)
    if backend == TORCH:
        return _torch_call(workload, arrays, torch_module())
    if backend == GEMM:
        rows, inner, columns = gemm_shape(workload.case)
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal(shape).astype(workload.dtype) for shape in ((rows, inner), (inner, columns)))
        return lambda: (a @ b,)
    op = {"conv_fwd": "conv2d", "conv_fwd_bwd": "conv2d", "maxpool_fwd_bwd": "max_pool2d",
          "avgpool_fwd_bwd": "avg_pool2d"}[workload.op]
    return _api.call_op(op, arrays, workload.case.kwargs(), backend, backward=workload.op != "conv_fwd")


def _torch_call(workload: Workload, arrays: dict, torch) -> Callable[[], tuple]:
    functional = torch.nn.functional
    case = workload.case
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if v is not None}
    dout = tensors.pop("dout")
    if workload.op == "conv_fwd":
        x, w, b = tensors["x"], tensors["w"], tensors.get("b")

        def conv_fwd():
            with torch.no_grad():
                return (functional.conv2d(x, w, b, **case.kwargs()).numpy(),)
        return conv_fwd
    for tensor in tensors.values():
        tensor.requires_grad_()
    inputs = tuple(tensors[k] for k in ("x", "w", "b") if k in tensors)
    if workload.op == "conv_fwd_bwd":
        def forward():
            x, w, b = tensors["x"], tensors["w"], tensors.get("b")
            return functional.conv2d(x, w, b, **case.kwargs())
    elif workload.op == "maxpool_fwd_bwd":
        def forward():
            return functional.max_pool2d(inputs[0], **case.kwargs())
    else:
        def forward():
            return functional.avg_pool2d(inputs[0], **case.kwargs(), count_include_pad=True)

    def fwd_bwd():
        out = forward()
        grads = torch.autograd.grad(out, inputs, dout)
        return (out.detach().numpy(), *(g.numpy() for g in grads))
    return fwd_bwd


def agrees(outputs: tuple, expected: tuple, dtype, op: str | None = None) -> bool:
    """Whether the outputs match the reference's as fastconv.cases.assert_results_close says (the
    per-dtype tolerance); for a family's workload: as the family decides."""
    if op in families():
        return families()[op].agrees(outputs, expected, dtype)
    try:
        assert_results_close(outputs, expected, dtype=dtype)
    except AssertionError:
        return False
    return True
