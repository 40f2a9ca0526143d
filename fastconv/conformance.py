"""check_backend: the project's correctness grid (fastconv.testing) run against one backend, as a report."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
from dataclasses import dataclass, field

import numpy as np

from . import _api, _plugins, _registry
from .cases import assert_results_close, max_abs_error
from .testing import (CONV_GRID, DTYPES, LAYOUTS, MAX_POOL_SPECIAL_KINDS, POOL_GRID, POOL_OPS, conv2d_results,
                      max_pool_special_inputs, naive_results, pool2d_results, repeated_backward_results,
                      torch_conv2d_results, torch_pool2d_results)

# The grid check_backend runs with quick=True: the cases that exercise every argument at once.
QUICK_CONV = ("basic", "everything", "groups-no-bias", "winograd-pads")
QUICK_POOL = ("k3-s2-p1-odd", "pairs-overlapping", "pairs-stride-none")
QUICK_KINDS = ("ties", "nan-and-inf")
QUICK_LAYOUTS = ("read-only", "everything-at-once")
# The cases the layout, N = 0, untouched-input and repeated-backward checks run on.
LAYOUT_CONV = next(case for case in CONV_GRID if case.name == "everything")
LAYOUT_POOL = next(case for case in POOL_GRID if case.name == "pairs-overlapping")
OTHER_CONV = next(case for case in CONV_GRID if case.name == "basic")
OTHER_POOL = next(case for case in POOL_GRID if case.name == "k3-s2-p1-odd")


@dataclass(frozen=True)
class Failure:
    """One failed check: which (``check``: the reference or property), on what, and what went wrong."""

    check: str
    op: str
    dtype: str
    arguments: dict
    error: str

    def __str__(self) -> str:
        arguments = " ".join(f"{key}={value}" for key, value in self.arguments.items())
        return f"{self.op} {self.dtype} [{self.check}] {arguments}: {self.error}"


@dataclass
class ConformanceReport:
    """What check_backend found: ``ok`` only when every check passed; ``failures`` each failed one;
    ``worst_error[op][dtype]``: the largest absolute difference from the references (``references``)."""

    backend: str
    references: tuple
    quick: bool
    checks: int = 0
    failures: list = field(default_factory=list)
    worst_error: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.checks > 0 and not self.failures

    def __str__(self) -> str:
        grid = "quick grid" if self.quick else "full grid"
        verdict = (f"ok: all {self.checks} checks passed" if self.ok
                   else f"FAILED: {len(self.failures)} of {self.checks} checks")
        lines = [f"check_backend({self.backend!r}), {grid} against {' and '.join(self.references)}: {verdict}",
                 "worst max abs error vs the references:"]
        for op, by_dtype in self.worst_error.items():
            lines.append(f"  {op:<11} " + "  ".join(f"{dtype} {error:.1e}" for dtype, error in by_dtype.items()))
        shown = 25
        lines += [f"  FAIL {failure}" for failure in self.failures[:shown]]
        if len(self.failures) > shown:
            lines.append(f"  ... and {len(self.failures) - shown} more (report.failures has them all)")
        return "\n".join(lines)


def check_backend(backend, *, quick: bool = False, torch: bool | None = None,
                  fallback: str = "im2col") -> ConformanceReport:
    """Run the project's correctness grid against one backend and report, never raising for a failure.

    ``backend``: a backend name (built in or registered), a path ``variant.py[:attr]``, or a module or
    object with kernel functions (registered for the check, its missing kernels ``fallback``'s).
    Checked in float32 and float64: every case of CONV_GRID (forward and backward, need_dx=False
    too) and POOL_GRID (max and average) against the naive reference and, when installed (or
    ``torch=True``), PyTorch; max-pool ties, NaN and infinities exactly; every layout of LAYOUTS;
    N = 0; inputs left unchanged; backward twice. ``quick=True`` runs a few cases of each kind.
    """
    use_torch = importlib.util.find_spec("torch") is not None if torch is None else torch
    with _registered_for_check(backend, fallback) as name:
        report = ConformanceReport(name, ("naive", "torch") if use_torch else ("naive",), quick)
        run = functools.partial(_check, report)
        module = _registry.get_module(name)
        conv_cases = [case for case in CONV_GRID if not quick or case.name in QUICK_CONV]
        pool_cases = [case for case in POOL_GRID if not quick or case.name in QUICK_POOL]
        for dtype in DTYPES:
            for case in conv_cases:
                _check_conv_case(run, name, module, case, dtype, use_torch)
            for op in POOL_OPS:
                for case in pool_cases:
                    _check_pool_case(run, name, op, case, dtype, use_torch)
            for kind in MAX_POOL_SPECIAL_KINDS if not quick else QUICK_KINDS:
                for case in pool_cases:
                    _check_max_pool_special(run, name, kind, case, dtype, use_torch)
            _check_call_semantics(run, name, dtype, LAYOUTS if not quick else QUICK_LAYOUTS)
    return report


def _check_conv_case(run, name, module, case, dtype, use_torch) -> None:
    inputs, kwargs = case.inputs(dtype), case.kwargs()
    run("naive", "conv2d", dtype, case, lambda: (conv2d_results(*inputs, name, **kwargs), naive_results(case, dtype)))
    if use_torch:
        on_seed_1 = case.inputs(dtype, 1)
        run("torch", "conv2d", dtype, case, lambda: (
            conv2d_results(*on_seed_1, name, **kwargs), torch_conv2d_results(*on_seed_1, **kwargs)))

    def without_dx():  # need_dx=False skips dx only: dw and db the same bits as with it
        out, cache = _api.conv2d_forward(*inputs[:3], backend=name, **kwargs)
        _, dw, db = _api.conv2d_backward(inputs[3], cache)
        return _api.conv2d_backward(inputs[3], cache, need_dx=False), (None, dw, db)
    run("need_dx=False", "conv2d", dtype, case, without_dx, exact=True)
    if getattr(module, "conv2d_relu_forward", None) is not None:  # its own fused conv + ReLU
        run("naive", "conv2d", dtype, case, lambda: (
            conv2d_results(*inputs, name, activation="relu", **kwargs),
            conv2d_results(*inputs, "naive", activation="relu", **kwargs)), activation="relu")


def _check_pool_case(run, name, op, case, dtype, use_torch) -> None:
    inputs, kwargs = case.inputs(dtype), case.kwargs()
    run("naive", op, dtype, case, lambda: (pool2d_results(op, *inputs, name, **kwargs),
                                           naive_results(case, dtype, op=op)))
    if use_torch:
        on_seed_1 = case.inputs(dtype, 1)
        run("torch", op, dtype, case, lambda: (
            pool2d_results(op, *on_seed_1, name, **kwargs), torch_pool2d_results(op, *on_seed_1, **kwargs)))


def _check_max_pool_special(run, name, kind, case, dtype, use_torch) -> None:
    x, dout = max_pool_special_inputs(kind, case, dtype)
    run("naive", "max_pool2d", dtype, case, lambda: (
        pool2d_results("max_pool2d", x, dout, name, **case.kwargs()),
        pool2d_results("max_pool2d", x, dout, "naive", **case.kwargs())), exact=True, inputs=kind)
    if use_torch:
        run("torch", "max_pool2d", dtype, case, lambda: (
            pool2d_results("max_pool2d", x, dout, name, **case.kwargs()),
            torch_pool2d_results("max_pool2d", x, dout, **case.kwargs())), exact=True, inputs=kind)


def _check_call_semantics(run, name, dtype, layouts) -> None:
    """Layouts, the empty batch, untouched inputs and a repeated backward, on one case per op."""
    def each_op():
        yield "conv2d", LAYOUT_CONV, OTHER_CONV, conv2d_results, naive_results(LAYOUT_CONV, dtype)
        for op in POOL_OPS:
            yield op, LAYOUT_POOL, OTHER_POOL, functools.partial(pool2d_results, op), \
                naive_results(LAYOUT_POOL, dtype, op=op)

    for op, case, other, results, expected in each_op():
        inputs = case.inputs(dtype)
        for layout in layouts:
            change = LAYOUTS[layout]
            run(f"layout {layout}", op, dtype, case, lambda: (
                results(*(None if a is None else change(a) for a in inputs), name, **case.kwargs()), expected))
        empty = case._replace(x_shape=(0, *case.x_shape[1:]))
        run("N = 0", op, dtype, empty, lambda: (
            results(*empty.inputs(dtype), name, **case.kwargs()),
            results(*empty.inputs(dtype), _registry.REFERENCE, **case.kwargs())), exact=True)

        def untouched():
            arrays = case.inputs(dtype)
            copies = tuple(None if a is None else a.copy() for a in arrays)
            results(*arrays, name, **case.kwargs())
            return arrays, copies
        run("inputs unchanged", op, dtype, case, untouched, exact=True)
        run("backward twice", op, dtype, case, lambda: repeated_backward_results(op, case, other, dtype, name),
            exact=True)


def _check(report: ConformanceReport, check: str, op: str, dtype, case, results, exact=False, **extra) -> None:
    """One check: ``results()`` gives (actual, expected); a mismatch or an exception is a Failure."""
    dtype = np.dtype(dtype).name
    report.checks += 1
    try:
        actual, expected = results()
        if check in report.references:
            with np.errstate(invalid="ignore"):  # inf - inf where both have an infinity: no error there
                error = max_abs_error(actual, expected)
            by_dtype = report.worst_error.setdefault(op, {})
            by_dtype[dtype] = max(by_dtype.get(dtype, 0.0), error)
        assert_results_close(actual, expected, dtype=dtype, exact=exact)
    except Exception as exc:  # the grid goes on: the report lists every failed case
        arguments = {("case" if key == "name" else key): value for key, value in case._asdict().items()}
        report.failures.append(Failure(check, op, dtype, {**arguments, **extra}, _one_line(exc)))


def _one_line(exc: Exception) -> str:
    """The gist of an exception on one line: of numpy's assertion text, which result differs, in how many
    elements and by how much (not the arrays)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not isinstance(exc, AssertionError):
        return f"{type(exc).__name__}: {'; '.join(lines)}"
    if any(line.startswith("Not equal") for line in lines):
        gist = ("result", "Mismatched elements", "Max absolute difference", "Mismatch at", "x and y nan")
        lines = [line.rstrip(":") for line in lines if line.startswith(gist)]
    return "; ".join(lines)


@contextlib.contextmanager
def _registered_for_check(backend, fallback: str):
    """The name to check ``backend`` under: a name as it is; a path or an object registered until the end."""
    if isinstance(backend, str) and not (backend.endswith(".py") or ".py:" in backend):
        if _registry.check_backend_name(backend) == _registry.AUTO:
            raise ValueError("check_backend needs a concrete backend, not 'auto' (which picks one per call)")
        yield backend
        return
    if isinstance(backend, str):
        name, source = _plugins.load_from_path(backend)
    else:
        module_name = getattr(backend, "__name__", type(backend).__name__).rsplit(".", 1)[-1]
        name, source = re.sub(r"\W", "_", module_name.removeprefix(_plugins.MODULE_PREFIX)), backend
    taken = set(_registry.BACKEND_MODULES) | set(_registry.available_backends()) | _registry.RESERVED_NAMES
    unique, count = name, 1
    while unique in taken:  # a variant of a registered backend, say: checked beside it under its own name
        count += 1
        unique = f"{name}_{count}"
    _registry.register_backend(unique, source, fallback)
    try:
        yield unique
    finally:
        _registry.unregister_backend(unique)
