"""The `auto` backend: valid choices, one measurement per signature, fallbacks, correct results."""
import time

import numpy as np
import pytest

import fastconv
from fastconv import _auto, _registry, _timing
from fastconv._params import ConvParams, PoolParams
from fastconv.testing import CONV_SMALL, assert_close, conv_inputs

BIG_CONV = ((8, 16, 32, 32), (16, 16, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 32, 32), "f")
SMALL_CONV = ((1, 1, 4, 4), (1, 1, 2, 2), False, ConvParams(1, 1, 0, 0, 1, 1, 1, 3, 3), "d")
BIG_POOL = ((8, 16, 64, 64), PoolParams(2, 2, 2, 2, 0, 0, 32, 32), "f")


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    monkeypatch.setattr(_timing, "SETTLE_SECONDS", 0.0)  # one settling call per visit: fast tests
    _auto.clear()
    yield
    _auto.clear()


@pytest.fixture
def fake_timings(monkeypatch):
    """Replace measuring by a table of times; record every measurement made."""
    calls = []
    table = {}

    def fake(names, op, signature):
        calls.append((tuple(names), op, signature))
        return {name: table.get(name, 1.0) for name in names}

    monkeypatch.setattr(_auto, "_measure", fake)
    return table, calls


def only_backends(monkeypatch, names):
    monkeypatch.setattr(_registry, "available_backends", lambda: tuple(names))


def test_choice_is_an_available_backend_and_not_the_reference():
    for op, sig in (("conv2d", SMALL_CONV), ("max_pool2d", BIG_POOL)):
        name = _auto.choose(op, sig)
        assert name in fastconv.available_backends()
        if len(fastconv.available_backends()) > 1:
            assert name != "naive"


def test_big_signature_is_measured_once_and_the_fastest_is_cached(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "im2col", "naive"])
    table, calls = fake_timings
    table.update(cython=3.0, numba=1.0, im2col=2.0)
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert calls[0][0] == ("cython", "numba", "im2col")  # never naive
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert len(calls) == 1
    assert _auto.decisions()[("conv2d", BIG_CONV)] == "numba"
    other = BIG_CONV[:4] + ("d",)  # another dtype is another signature
    _auto.choose("conv2d", other)
    assert len(calls) == 2


def test_a_near_tie_keeps_the_earlier_candidate(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "naive"])
    table, _ = fake_timings
    table.update(cython=1.0, numba=1.0 - _auto.SWITCH_MARGIN / 2)
    assert _auto.choose("conv2d", BIG_CONV) == "cython"
    _auto.clear()
    table.update(numba=1.0 - 2 * _auto.SWITCH_MARGIN)
    assert _auto.choose("conv2d", BIG_CONV) == "numba"


def test_small_signature_takes_first_candidate_without_measuring(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["numba", "im2col", "naive"])
    _, calls = fake_timings
    assert _auto.choose("conv2d", SMALL_CONV) == "numba"
    assert calls == []


def test_autotune_can_be_switched_off(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    table, calls = fake_timings
    table.update(cython=5.0, im2col=1.0)
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    assert _auto.choose("max_pool2d", BIG_POOL) == "cython"
    assert calls == []


def test_falls_back_when_backends_are_unavailable(monkeypatch, fake_timings):
    table, _ = fake_timings
    table.update(cython=1.0, im2col=2.0)
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    assert _auto.choose("conv2d", BIG_CONV) == "cython"
    only_backends(monkeypatch, ["im2col", "naive"])  # the cached winner is gone
    assert _auto.choose("conv2d", BIG_CONV) == "im2col"
    only_backends(monkeypatch, ["naive"])
    assert _auto.choose("conv2d", BIG_CONV) == "naive"


def test_a_failing_candidate_is_never_picked(monkeypatch):
    if "numba" not in fastconv.available_backends():
        pytest.skip("needs numba")
    only_backends(monkeypatch, ["cython", "numba", "naive"])
    real = _registry.get_module

    def broken(name):
        if name == "cython":
            raise RuntimeError("simulated failure")
        return real(name)

    monkeypatch.setattr(_registry, "get_module", broken)
    monkeypatch.setattr(_auto, "MEASURE_SAMPLES", 1)
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)
    seconds = _auto._measure(["cython", "numba"], "conv2d", SMALL_CONV)
    assert seconds["cython"] == float("inf") and np.isfinite(seconds["numba"])
    assert _auto.choose("conv2d", SMALL_CONV) == "numba"


def test_real_measurement_returns_finite_times():
    tiny_conv = ((2, 3, 8, 8), (4, 3, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 8, 8), "d")
    tiny_pool = ((2, 3, 8, 8), PoolParams(2, 2, 2, 2, 0, 0, 4, 4), "f")
    names = _auto.candidates()
    for op, signature in (("conv2d", tiny_conv), ("avg_pool2d", tiny_pool)):
        seconds = _auto._measure(names, op, signature)
        assert sorted(seconds) == sorted(names)
        assert all(np.isfinite(t) and t > 0 for t in seconds.values())


@pytest.mark.parametrize("case", CONV_SMALL, ids=lambda c: c.name)
def test_auto_results_match_naive(case, dtype, monkeypatch):
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)  # force the measured path
    monkeypatch.setattr(_auto, "MEASURE_SAMPLES", 1)
    x, w, b, dout = conv_inputs(case, dtype)
    args = (case.stride, case.padding, case.dilation, case.groups)
    out, cache = fastconv.conv2d_forward(x, w, b, *args, backend="auto")
    assert cache.backend in fastconv.available_backends()
    got = (out, *fastconv.conv2d_backward(dout, cache))
    ref_out, ref_cache = fastconv.conv2d_forward(x, w, b, *args, backend="naive")
    for a, e in zip(got, (ref_out, *fastconv.conv2d_backward(dout, ref_cache))):
        assert_close(a, e)


def fake_runners(monkeypatch, sleep_by_name):
    """Candidates that sleep for a given time; returns the log of (name) per call, warm-ups included."""
    log = []

    def runner(module, op, signature):
        name = module

        def run():
            log.append(name)
            time.sleep(sleep_by_name[name])
        return run

    monkeypatch.setattr(_registry, "get_module", lambda name: name)
    monkeypatch.setattr(_auto, "_runner", runner)
    return log


def test_candidates_are_timed_in_rotated_interleaved_rounds(monkeypatch):
    log = fake_runners(monkeypatch, {"a": 0.0, "b": 0.0, "c": 0.0})
    monkeypatch.setattr(_auto, "MEASURE_SAMPLES", 2 * _timing.SAMPLES_PER_VISIT)
    monkeypatch.setattr(_auto, "NEAR_TIE_SAMPLES", _auto.MEASURE_SAMPLES)  # equal times: no extra rounds
    _auto._measure(["a", "b", "c"], "conv2d", BIG_CONV)
    visit = {name: name * (1 + _timing.SAMPLES_PER_VISIT) for name in "abc"}  # settle, then timed calls
    assert "".join(log) == "abc" + visit["a"] + visit["b"] + visit["c"] + visit["b"] + visit["c"] + visit["a"]


def test_a_clearly_slower_candidate_is_timed_only_once(monkeypatch):
    log = fake_runners(monkeypatch, {"fast": 0.001, "slow": 0.02})
    seconds = _auto._measure(["fast", "slow"], "conv2d", BIG_CONV)
    assert log.count("slow") == 3  # warm-up, then one visit: settling and a single timed call
    visits = -(-_auto.MEASURE_SAMPLES // _timing.SAMPLES_PER_VISIT)
    assert log.count("fast") == 1 + visits * (1 + _timing.SAMPLES_PER_VISIT)
    assert seconds["slow"] > _auto.SLOW_FACTOR * seconds["fast"]


def test_near_ties_are_timed_longer_and_decided_by_median(monkeypatch):
    """Scripted samples: a clear loser stops early, near-equals are timed on, the median decides."""
    script = {  # per candidate: the samples it would produce, in order
        "a": [1.00] * 12 + [9.0] * 6,  # a terrible spell late on: its median stays 1.0
        "b": [0.98] * 18,              # near-tie with a: timed to NEAR_TIE_SAMPLES
        "c": [5.0] * 18,               # > SLOW_FACTOR x the fastest first sample: one sample only
    }

    def scripted(calls, wants_more):
        samples = {name: [] for name in calls}
        while due := [name for name in calls if wants_more(name, samples[name], 0.0)]:
            for name in due:
                samples[name].append(script[name][len(samples[name])])
        return samples

    monkeypatch.setattr(_timing, "interleaved", scripted)
    monkeypatch.setattr(_auto, "_runner", lambda module, op, signature: lambda: None)
    monkeypatch.setattr(_registry, "get_module", lambda name: None)
    seconds = _auto._measure(["a", "b", "c"], "conv2d", BIG_CONV)
    assert seconds["c"] == 5.0  # dropped after its first sample
    assert seconds["b"] == pytest.approx(0.98)
    assert seconds["a"] == pytest.approx(np.median(script["a"][:_auto.NEAR_TIE_SAMPLES]))
    assert _auto._fastest(["a", "b", "c"], seconds) == "a"  # b is within SWITCH_MARGIN
