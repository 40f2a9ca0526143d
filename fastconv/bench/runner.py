"""Timing: backends side by side (interleaved visits of back-to-back calls), a warm-up call first, medians."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import fastconv
from fastconv import _timing
from fastconv.cases import max_abs_error

from . import workloads as wl


@dataclass(frozen=True)
class Settings:
    """How long each row (one backend on one workload) is timed."""

    min_repeats: int = 5
    max_repeats: int = 100
    budget_s: float = 0.5  # keep repeating a row until it has used this much time
    timing: str = _timing.LOOP  # or _timing.SETTLED: see fastconv._timing
    samples_per_visit: int = 5


FULL = Settings()
QUICK = Settings(min_repeats=3, max_repeats=30, budget_s=0.3)


def measure(calls: dict[str, Callable], settings: Settings) -> dict[str, list[float]]:
    """Time every call side by side (``fastconv._timing.interleaved``: rotating rounds of visits,
    each timing several calls back to back) until each has ``min_repeats`` samples, and more, up
    to ``max_repeats``, while its visits have taken less than ``budget_s``. No warm-up here:
    callers warm up.
    """
    def wants_more(name: str, samples: list[float], spent: float) -> bool:
        return len(samples) < settings.min_repeats or (
            len(samples) < settings.max_repeats and spent < settings.budget_s)
    return _timing.interleaved(calls, wants_more, settings.timing, settings.samples_per_visit,
                               warm_seconds=_timing.LOOP_WARM_SECONDS)


def medians(workload: wl.Workload, backends, settings: Settings) -> dict[str, float]:
    """Median seconds of each backend on ``workload``, measured side by side (one warm-up call each)."""
    arrays = workload.inputs()
    calls = {name: wl.make_call(workload, name, arrays) for name in backends}
    for call in calls.values():
        call()
    return {name: statistics.median(samples) for name, samples in measure(calls, settings).items()}


def reference_outputs(workload: wl.Workload, usable, arrays: dict) -> tuple:
    """(the reference's name, its outputs) for checking ``workload``; (None, None) without one."""
    reference = wl.reference_backend(workload, usable)
    if reference is None:
        return None, None
    return reference, wl.make_call(workload, reference, arrays)()


def checked_call(workload: wl.Workload, backend: str, arrays: dict, expected) -> tuple:
    """``backend``'s call on ``workload`` after its first call (the warm-up: JIT compilation,
    workspaces) was checked: (call, ok, max abs error); ok is None with nothing to check against
    (no reference, or numpy's GEMM row, which computes no conv). The one check-then-time path of
    `fastconv bench` and the pytest-benchmark suite; a backend that raises raises here."""
    call = wl.make_call(workload, backend, arrays)
    outputs = call()
    if expected is None or backend == wl.GEMM:
        return call, None, None
    return call, wl.agrees(outputs, expected, workload.dtype, workload.op), max_abs_error(outputs, expected)


def run_workload(workload: wl.Workload, backends, usable, settings: Settings) -> list[dict]:
    """Check then time ``backends`` on ``workload``; one result record per backend.

    Every backend's first call is its warm-up and also the result checked against the
    reference (``checked_call``). A backend that raises is reported in its record
    (``error``) rather than stopping the run.
    """
    arrays = workload.inputs()
    try:
        reference, expected = reference_outputs(workload, usable, arrays)
    except Exception:  # reported as "unchecked" (a broken reference row shows its own error)
        reference, expected = None, None
    records = {name: base_record(workload, name, reference) for name in backends}
    calls = {}
    for name in backends:
        try:
            calls[name], ok, error = checked_call(workload, name, arrays, expected)
        except Exception as exc:  # a broken backend must not hide the others' numbers
            records[name].update(error=f"{type(exc).__name__}: {exc}", ok=False)
            continue
        records[name].update(ok=ok, max_abs_error=error)
    del expected
    for name, samples in measure(calls, settings).items():
        median = statistics.median(samples)
        records[name].update(median_s=median, min_s=min(samples), repeats=len(samples),
                             gflops=workload.flops() / median / 1e9)
    add_speedups(list(records.values()))
    return list(records.values())


def remeasure(workload: wl.Workload, backend: str, settings: Settings) -> float:
    """A fresh median for one row, with twice the usual repeats (to confirm a suspected slowdown)."""
    call = wl.make_call(workload, backend, workload.inputs())
    call()
    longer = Settings(2 * settings.min_repeats, 2 * settings.max_repeats, 2 * settings.budget_s)
    return statistics.median(measure({backend: call}, longer)[backend])


def base_record(workload: wl.Workload, backend: str, reference: str | None) -> dict:
    return {
        "case": workload.case.name, "op": workload.op, "dtype": workload.dtype, "backend": backend,
        "shape": workload.describe(), "flops": workload.flops(), "reference": reference,
        "threads": fastconv.get_num_threads(), "median_s": None, "min_s": None, "repeats": 0,
        "gflops": None, "speedup_vs_naive": None, "speedup_vs_torch": None,
        "max_abs_error": None, "ok": None, "error": None,
    }


def add_speedups(records: list[dict]) -> None:
    """Fill speedup_vs_naive / speedup_vs_torch from the rows of one workload."""
    medians = {r["backend"]: r["median_s"] for r in records if r["median_s"]}
    for record in records:
        for peer, field in (("naive", "speedup_vs_naive"), (wl.TORCH, "speedup_vs_torch")):
            if record["median_s"] and peer in medians:
                record[field] = medians[peer] / record["median_s"]
