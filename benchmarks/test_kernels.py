"""Every backend (and PyTorch) on every workload, training steps included: checked, then timed.

On conv forward, `gemm` (numpy's matrix product of the conv's GEMM size) is timed beside them
as the BLAS yardstick; it computes no conv, so it is not checked.

    python -m pytest benchmarks/                         # the whole suite, grouped by workload
    python -m pytest benchmarks/ -m quick                # the `fastconv bench --quick` workloads
    python -m pytest benchmarks/ --benchmark-autosave    # then --benchmark-compare --benchmark-compare-fail=median:15%
"""
import pytest

import fastconv
from fastconv.bench import runner
from fastconv.bench import workloads as wl

from conftest import USABLE, inputs_and_reference

QUICK = set(wl.QUICK)
CASES = [
    pytest.param(workload, backend, id=f"{workload.label.replace(' ', '-')}-{backend}",
                 marks=[pytest.mark.quick] if workload.key in QUICK else [])
    for workload in wl.all_workloads() for backend in USABLE if wl.runs_on(workload, backend)
]


@pytest.mark.parametrize("workload, backend", CASES)
def test_kernel(benchmark, workload, backend):
    arrays, reference, expected = inputs_and_reference(workload)
    if reference is None:
        pytest.skip("no verified reference for this large case here (needs im2col or torch)")
    call, ok, error = runner.checked_call(workload, backend, arrays, expected)
    assert ok is not False, f"{backend} disagrees with {reference}: max abs error {error:.3g}"
    benchmark.group = workload.label  # backends side by side in one table per workload
    benchmark.extra_info.update(backend=backend, threads=fastconv.get_num_threads(), reference=reference,
                                shape=workload.describe(), flops=workload.flops())
    benchmark(call)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = workload.flops() / benchmark.stats.stats.median / 1e9
