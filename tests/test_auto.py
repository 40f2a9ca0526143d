"""The `auto` backend: valid choices, one measurement per signature, fallbacks, correct results,
decisions kept on disk, and no call waiting for a JIT compiler."""
import json
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import _auto, _registry, _timing, _tuning_store
from fastconv._params import ConvParams, PoolParams
from fastconv.cases import CONV_SMALL, assert_results_close
from fastconv.testing import case_id, naive_results

BIG_CONV = ((8, 16, 32, 32), (16, 16, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 32, 32, 3, 3), "f")
SMALL_CONV = ((1, 1, 4, 4), (1, 1, 2, 2), False, ConvParams(1, 1, 0, 0, 1, 1, 1, 3, 3, 2, 2), "d")
BIG_POOL = ((8, 16, 64, 64), PoolParams(2, 2, 2, 2, 0, 0, 32, 32), "f")


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch, tmp_path):
    monkeypatch.setattr(_timing, "SETTLE_SECONDS", 0.0)  # one settling call per visit: fast tests
    monkeypatch.setenv(_tuning_store.ENV_PATH, str(tmp_path / "autotune.json"))
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


def only_backends(monkeypatch, names, ready=None):
    """Pretend these backends are installed; those in ``ready`` (default: all) are warm."""
    monkeypatch.setattr(_registry, "installed_backends", lambda: tuple(names))
    monkeypatch.setattr(_auto, "_loads", lambda name: name in names)
    ready = set(names if ready is None else ready)
    monkeypatch.setattr(_auto, "is_ready", lambda name, op, signature: name in ready)


def decision(op, signature):
    return _auto.decisions()[(op, signature, fastconv.get_num_threads())]


def test_choice_is_an_available_backend_and_not_the_reference():
    for op, sig in (("conv2d", SMALL_CONV), ("max_pool2d", BIG_POOL)):
        name = _auto.choose(op, sig)
        assert name in fastconv.available_backends()
        if len(fastconv.available_backends()) > 1:
            assert name != "naive"


def test_big_signature_is_measured_once_and_the_fastest_is_cached(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "im2col", "naive"])
    table, calls = fake_timings
    table.update(cython=3.0, numba=1.0, im2col=0.5)
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert calls[0][0] == ("cython", "numba")  # never naive; im2col only without compiled backends
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert len(calls) == 1
    assert decision("conv2d", BIG_CONV) == "numba"
    other = BIG_CONV[:4] + ("d",)  # another dtype is another signature
    _auto.choose("conv2d", other)
    assert len(calls) == 2


def test_a_near_tie_keeps_the_earlier_candidate(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "naive"])
    table, _ = fake_timings
    table.update(cython=1.0, numba=1.0 - _auto.SWITCH_MARGIN / 2)
    assert _auto.choose("conv2d", BIG_CONV) == "cython"
    _auto.clear()
    _tuning_store.clear()
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
    monkeypatch.setattr(_auto, "is_ready", lambda name, op, signature: True)
    monkeypatch.setattr(_auto, "MEASURE_SAMPLES", 1)
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)
    seconds = _auto._measure(["cython", "numba"], "conv2d", SMALL_CONV)
    assert seconds["cython"] == float("inf") and np.isfinite(seconds["numba"])
    assert _auto.choose("conv2d", SMALL_CONV) == "numba"


def test_real_measurement_returns_finite_times():
    tiny_conv = ((2, 3, 8, 8), (4, 3, 3, 3), True, ConvParams(1, 1, 1, 1, 1, 1, 1, 8, 8, 3, 3), "d")
    tiny_pool = ((2, 3, 8, 8), PoolParams(2, 2, 2, 2, 0, 0, 4, 4), "f")
    names = _auto.candidates()
    for op, signature in (("conv2d", tiny_conv), ("avg_pool2d", tiny_pool)):
        seconds = _auto._measure(names, op, signature)
        assert sorted(seconds) == sorted(names)
        assert all(np.isfinite(t) and t > 0 for t in seconds.values())


@pytest.mark.parametrize("case", CONV_SMALL, ids=case_id)
def test_auto_results_match_naive(case, dtype, monkeypatch):
    monkeypatch.setattr(_auto, "MEASURE_MIN_FLOPS", 0.0)  # force the measured path
    monkeypatch.setattr(_auto, "MEASURE_SAMPLES", 1)
    x, w, b, dout = case.inputs(dtype)
    out, cache = fastconv.conv2d_forward(x, w, b, **case.kwargs(), backend="auto")
    assert cache.backend in fastconv.available_backends()
    assert_results_close((out, *fastconv.conv2d_backward(dout, cache)), naive_results(case, dtype))


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


# --- Decisions kept on disk -----------------------------------------------------------------

def test_a_decision_is_stored_and_a_new_process_reuses_it_without_measuring(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "im2col", "naive"])
    table, calls = fake_timings
    table.update(cython=2.0, numba=1.0)
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    entries = _tuning_store.load()
    (key, entry), = entries.items()
    assert entry["backend"] == "numba" and entry["threads"] == fastconv.get_num_threads()
    assert _auto.describe("conv2d", BIG_CONV) in key
    assert entry["backends"] == ["cython", "numba", "im2col", "naive"] and entry["fastconv"] == fastconv.__version__
    _auto.clear()  # as a new process: nothing in memory
    table.update(cython=0.1)  # would win now, were it measured
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert len(calls) == 1


def test_the_thread_count_and_the_backend_set_are_part_of_the_key(monkeypatch, fake_timings, restore_num_threads):
    only_backends(monkeypatch, ["cython", "numba", "naive"])
    _, calls = fake_timings
    fastconv.set_num_threads(1)
    _auto.choose("conv2d", BIG_CONV)
    fastconv.set_num_threads(2)
    _auto.choose("conv2d", BIG_CONV)
    assert len(calls) == 2
    _auto.clear()
    only_backends(monkeypatch, ["cython", "numba", "im2col", "naive"])  # another installation
    _auto.choose("conv2d", BIG_CONV)
    assert len(calls) == 3
    assert len(_tuning_store.load()) == 3


@pytest.mark.parametrize("content, replaced", [
    (b"{not json", True),
    (b"\xff\xfe\x00garbage", True),
    (json.dumps({"something": "else"}).encode(), False),
    (json.dumps({"schema": "fastconv-autotune/0", "entries": {}}).encode(), False),
], ids=["invalid-json", "binary", "foreign-json", "other-schema"])
def test_a_broken_or_foreign_file_is_ignored_with_a_warning(monkeypatch, fake_timings, content, replaced):
    only_backends(monkeypatch, ["cython", "numba", "naive"])
    file = _tuning_store.path()
    with open(file, "wb") as fh:
        fh.write(content)
    with pytest.warns(RuntimeWarning, match="ignoring the autotune cache"):
        assert _auto.choose("conv2d", BIG_CONV) == "cython"
    with open(file, "rb") as fh:
        after = fh.read()
    if replaced:  # ours and useless: the next write replaces it with a good file
        assert json.loads(after)["schema"] == _tuning_store.SCHEMA
    else:  # not ours: never written over
        assert after == content


def test_an_unreadable_or_unwritable_location_never_breaks_a_call(monkeypatch, fake_timings, tmp_path):
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    blocked = tmp_path / "a-directory-where-the-file-should-be"
    blocked.mkdir()
    monkeypatch.setenv(_tuning_store.ENV_PATH, str(blocked))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _auto.choose("conv2d", BIG_CONV) == "cython"


def test_an_empty_location_keeps_decisions_in_memory(monkeypatch, fake_timings, tmp_path):
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    monkeypatch.setenv(_tuning_store.ENV_PATH, "")
    monkeypatch.chdir(tmp_path)
    assert _tuning_store.path() is None
    _auto.choose("conv2d", BIG_CONV)
    assert list(tmp_path.iterdir()) == []


def test_autotune_off_neither_reads_nor_writes_the_file(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    _tuning_store.save({"x": {"backend": "im2col"}})
    before = open(_tuning_store.path()).read()
    assert _auto.choose("conv2d", BIG_CONV) == "cython"
    assert open(_tuning_store.path()).read() == before


_WRITER = """
import sys
from fastconv import _tuning_store
for i in range(25):
    _tuning_store.save({f"{sys.argv[1]}-{i}": {"backend": "im2col"}})
"""


def test_processes_writing_at_once_keep_every_entry_and_a_valid_file(tmp_path):
    env = {**__import__("os").environ, _tuning_store.ENV_PATH: str(tmp_path / "shared.json")}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, f"p{n}"], env=env) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    doc = json.loads((tmp_path / "shared.json").read_text())
    assert doc["schema"] == _tuning_store.SCHEMA
    assert sorted(doc["entries"]) == sorted(f"p{n}-{i}" for n in range(4) for i in range(25))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- Never waiting for a compiler -------------------------------------------------------------

def test_a_cold_jit_candidate_is_not_timed(monkeypatch, fake_timings):
    only_backends(monkeypatch, ["cython", "numba", "jax", "naive"], ready=["cython", "jax"])
    _, calls = fake_timings
    warmed = []
    monkeypatch.setattr(_auto, "_warm_in_background", lambda *job: warmed.append(job))
    _auto.choose("conv2d", BIG_CONV)
    assert calls[0][0] == ("cython", "jax")
    assert warmed == []  # not the preferred candidate: it waits until something else warms it
    assert len(_tuning_store.load()) == 1


def test_a_backend_on_numpys_blas_threads_is_a_candidate_only_without_compiled_ones(monkeypatch, fake_timings):
    table, calls = fake_timings
    table.update(cython=2.0, im2col=1.0)
    only_backends(monkeypatch, ["cython", "im2col", "naive"])
    assert _auto.choose("conv2d", BIG_CONV) == "cython"  # faster alone, im2col is not timed
    assert calls == []
    _auto.clear()
    _tuning_store.clear()
    only_backends(monkeypatch, ["im2col", "naive"])
    assert _auto.choose("conv2d", BIG_CONV) == "im2col"


def test_a_cold_preferred_candidate_warms_in_the_background_and_is_decided_again(monkeypatch, fake_timings):
    ready = {"jax"}
    only_backends(monkeypatch, ["numba", "jax", "naive"])
    monkeypatch.setattr(_auto, "is_ready", lambda name, op, signature: name in ready)
    table, calls = fake_timings
    table.update(numba=0.5, jax=1.0)
    warmed = []
    monkeypatch.setattr(_auto, "_warm_in_background", lambda *job: warmed.append(job))
    assert _auto.choose("conv2d", BIG_CONV) == "jax"
    assert _auto.choose("conv2d", BIG_CONV) == "jax"  # provisional, not measured again
    assert warmed[0] == ("numba", "conv2d", BIG_CONV)
    assert _tuning_store.load() == {}  # provisional decisions stay in memory
    ready.add("numba")  # the background compilation finished
    assert _auto.choose("conv2d", BIG_CONV) == "numba"
    assert calls[-1][0] == ("numba", "jax")
    assert len(_tuning_store.load()) == 1


def test_the_background_warmer_compiles_each_job_once_and_then_stops(monkeypatch):
    ran, release = [], threading.Event()

    def runner(module, op, signature):
        def run():
            release.wait(10)
            ran.append(module)
        return run

    monkeypatch.setattr(_registry, "get_module", lambda name: name)
    monkeypatch.setattr(_auto, "_runner", runner)
    _auto._warm_in_background("numba", "conv2d", BIG_CONV)
    _auto._warm_in_background("numba", "conv2d", BIG_CONV)  # still compiling: not queued twice
    assert _auto.warming()
    release.set()
    deadline = time.monotonic() + 10
    while _auto.warming() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == ["numba"] and not _auto.warming()


_FIRST_CALL = """
import sys, time
import numpy as np
from nn.layers import conv_forward_fast, conv_backward_fast, max_pool_forward_fast, max_pool_backward_fast
x = np.random.randn(16, 3, 32, 32).astype(np.float32)
w = np.random.randn(25, 3, 3, 3).astype(np.float32)
out, cache = conv_forward_fast(x, w, np.zeros(25, np.float32), {"stride": 1, "pad": 1})
conv_backward_fast(np.ones_like(out), cache)
p, pcache = max_pool_forward_fast(out, {"pool_height": 2, "pool_width": 2, "stride": 2})
max_pool_backward_fast(np.ones_like(p), pcache)
print(cache.backend, pcache.backend, "numba" in sys.modules)
"""


@pytest.mark.skipif("cython" not in fastconv.available_backends(), reason="needs the compiled cython backend")
def test_first_calls_in_a_fresh_process_do_not_import_or_compile_numba(tmp_path):
    env = {**__import__("os").environ, _tuning_store.ENV_PATH: str(tmp_path / "decisions.json"),
           "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    runs = [subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.split() for run in runs)
    assert first[2] == "False"  # numba neither imported nor compiled to time it
    assert first == second  # the second process reads the first one's decisions
    assert not (tmp_path / "numba-cache").exists() or not any((tmp_path / "numba-cache").rglob("*.nbi"))
