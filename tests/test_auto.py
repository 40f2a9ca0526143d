"""The `auto` backend: valid choices, one measurement per signature, fallbacks, correct results."""
import numpy as np
import pytest

import fastconv
from fastconv import _auto, _registry
from fastconv._params import ConvParams, PoolParams
from fastconv.testing import CONV_SMALL, assert_close, conv_inputs

BIG_CONV = ((8, 16, 32, 32), (16, 16, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 32, 32), "f")
SMALL_CONV = ((1, 1, 4, 4), (1, 1, 2, 2), False, ConvParams(1, 1, 0, 0, 1, 1, 1, 3, 3), "d")
BIG_POOL = ((8, 16, 64, 64), PoolParams(2, 2, 2, 2, 0, 0, 32, 32), "f")


@pytest.fixture(autouse=True)
def fresh_decisions():
    _auto.clear()
    yield
    _auto.clear()


@pytest.fixture
def fake_timings(monkeypatch):
    """Replace measuring by a table of times; record every measurement made."""
    calls = []
    table = {}

    def fake(name, op, signature, give_up_after=float("inf")):
        calls.append((name, op, signature))
        return table.get(name, 1.0)

    monkeypatch.setattr(_auto, "_time_forward_backward", fake)
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
    assert sorted(name for name, _, _ in calls) == ["cython", "im2col", "numba"]  # never naive
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert len(calls) == 3
    assert _auto.decisions()[("conv2d", BIG_CONV)] == "numba"
    other = BIG_CONV[:4] + ("d",)  # another dtype is another signature
    _auto.choose("conv2d", other)
    assert len(calls) == 6


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
    monkeypatch.setattr(_auto, "MEASURE_REPEATS", 1)
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)
    assert _auto._time_forward_backward("cython", "conv2d", SMALL_CONV) == float("inf")
    assert _auto.choose("conv2d", SMALL_CONV) == "numba"


def test_real_measurement_returns_finite_times():
    tiny_conv = ((2, 3, 8, 8), (4, 3, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 8, 8), "d")
    for name in _auto.candidates():
        assert np.isfinite(_auto._time_forward_backward(name, "conv2d", tiny_conv))
        assert np.isfinite(_auto._time_forward_backward(name, "avg_pool2d",
                                                        ((2, 3, 8, 8), PoolParams(2, 2, 2, 2, 0, 0, 4, 4), "f")))


@pytest.mark.parametrize("case", CONV_SMALL, ids=lambda c: c.name)
def test_auto_results_match_naive(case, dtype, monkeypatch):
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)  # force the measured path
    monkeypatch.setattr(_auto, "MEASURE_REPEATS", 1)
    x, w, b, dout = conv_inputs(case, dtype)
    args = (case.stride, case.padding, case.dilation, case.groups)
    out, cache = fastconv.conv2d_forward(x, w, b, *args, backend="auto")
    assert cache.backend in fastconv.available_backends()
    got = (out, *fastconv.conv2d_backward(dout, cache))
    ref_out, ref_cache = fastconv.conv2d_forward(x, w, b, *args, backend="naive")
    for a, e in zip(got, (ref_out, *fastconv.conv2d_backward(dout, ref_cache))):
        assert_close(a, e)


def test_a_clearly_slower_candidate_is_timed_only_once():
    calls = []
    _auto._best_time(lambda: calls.append(1), give_up_after=-1.0)
    assert len(calls) == 2  # warm-up + one timed run
    calls.clear()
    _auto._best_time(lambda: calls.append(1), give_up_after=float("inf"))
    assert len(calls) == 1 + _auto.MEASURE_REPEATS
