"""Speedup floors: ratios measured side by side in one run (interleaved rounds, medians), generous minimums.

A benchmark, not a unit test (the unit tests in tests/ never time anything): run it with
`python -m pytest benchmarks/`. The quick mode (the default) checks a small case against naive and two suite shapes
against im2col (shapes where the compiled backends lead by 1.4x or more on a quiet machine, so
the check is about regressions, not noise); FASTCONV_FULL_SPEEDUPS=1 checks the whole 8-shape
suite in both dtypes with more repeats. The floors are far below the measured speedups so that a
busy 2-core machine does not fail them; a ratio under its floor is measured once more before the
test fails.
"""
import os
from functools import lru_cache

import pytest

import fastconv
from fastconv import _registry
from fastconv.cases import CONV_SMALL, CONV_SUITE
from fastconv.bench import runner
from fastconv.bench import workloads as wl

FULL = os.environ.get("FASTCONV_FULL_SPEEDUPS") == "1"
# fastconv's own backends: the floors are about them, not about a registered variant's speed.
BACKENDS = tuple(name for name in fastconv.available_backends() if not _registry.is_registered(name))
COMPILED = [name for name in BACKENDS if name not in ("naive", "im2col")]
OVER_NAIVE = {"im2col": 20.0, **{name: 20.0 for name in COMPILED}}  # measured: hundreds to thousands
OVER_IM2COL = 0.8  # compiled backends are meant to beat im2col; 0.8 leaves room for noise

SMALL = wl.Workload(CONV_SMALL[0], "conv_fwd_bwd", "float64")  # x (10,3,31,31), stride 2, pad 1
LARGE = [wl.Workload(case, "conv_fwd_bwd", dtype) for case in CONV_SUITE for dtype in wl.DTYPES] if FULL \
    else [wl.Workload(wl.cases_by_name()["cs231n-s2"], "conv_fwd_bwd", "float64"),
          wl.Workload(wl.cases_by_name()["lenet-c1"], "conv_fwd_bwd", "float32")]
# naive takes about a second per call on SMALL: a few rounds show a 20x gap plainly.
NAIVE_SETTINGS = runner.Settings(min_repeats=3, max_repeats=3, budget_s=0.0)
LARGE_SETTINGS = runner.Settings(min_repeats=15, max_repeats=40, budget_s=3.0) if FULL \
    else runner.Settings(min_repeats=7, max_repeats=15, budget_s=1.0)


@lru_cache(maxsize=None)
def first_medians(workload: wl.Workload, backends: tuple, settings: runner.Settings) -> dict:
    """One side-by-side measurement per workload, shared by the tests of every backend on it."""
    return runner.medians(workload, backends, settings)


def speedup(workload, fast, slow, backends, settings, floor) -> float:
    """median(slow) / median(fast), measured again (the pair alone) when the first try is under ``floor``."""
    found = first_medians(workload, backends, settings)
    ratio = found[slow] / found[fast]
    if ratio < floor:
        again = runner.medians(workload, (slow, fast), settings)
        ratio = max(ratio, again[slow] / again[fast])
    return ratio


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "naive"])
def test_fast_backend_beats_naive_on_a_small_case(backend):
    backends = tuple(name for name in BACKENDS if name in OVER_NAIVE or name == "naive")
    ratio = speedup(SMALL, backend, "naive", backends, NAIVE_SETTINGS, OVER_NAIVE[backend])
    assert ratio >= OVER_NAIVE[backend], f"{backend} only {ratio:.1f}x naive on {SMALL.label}"


@pytest.mark.skipif("im2col" not in BACKENDS, reason="im2col is not available")
@pytest.mark.parametrize("workload", LARGE, ids=lambda w: f"{w.case.name}-{w.dtype}")
@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_backend_keeps_up_with_im2col_on_large_shapes(backend, workload):
    ratio = speedup(workload, backend, "im2col", ("im2col", *COMPILED), LARGE_SETTINGS, OVER_IM2COL)
    assert ratio >= OVER_IM2COL, f"{backend} runs at {ratio:.2f}x im2col on {workload.label}"
