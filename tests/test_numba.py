"""What is specific to the numba backend: batch steps, determinism, threads, fork, JIT cache."""
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv import _tuning
from fastconv.testing import assert_close

pytest.importorskip("numba")
if "numba" not in fastconv.available_backends():
    pytest.skip("the numba backend is not available here", allow_module_level=True)

from fastconv.backends import _numba_runtime, _workspace  # noqa: E402
from fastconv.backends import numba as numba_backend  # noqa: E402


def _conv_inputs(n=7, c=4, f=6, groups=2, size=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    w = rng.standard_normal((f, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    dout = rng.standard_normal((n, f, size, size)).astype(dtype)
    return x, w, b, dout


def _conv_both(x, w, b, dout, backend, **kw):
    out, cache = fastconv.conv2d_forward(x, w, b, padding=1, backend=backend, **kw)
    return (out, *fastconv.conv2d_backward(dout, cache))


@pytest.fixture
def two_threads():
    fastconv.set_num_threads(2)
    yield
    fastconv.set_num_threads(None)


@pytest.mark.parametrize("limit_bytes, min_columns, step", [(1, 10**6, 1), (50_000, 10**6, 2), (10**9, 100, 3)])
def test_batch_steps_that_do_not_divide_the_batch(monkeypatch, two_threads, limit_bytes, min_columns, step):
    # 7 samples of 36 positions over 2 blocks (4 + 3): steps of 2 or 3 samples leave partial
    # steps, and groups=2 splits every GEMM of a step.
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", limit_bytes)
    monkeypatch.setattr(_tuning, "NUMBA_BACKWARD_MIN_GEMM_COLUMNS", min_columns)
    x, w, b, dout = _conv_inputs()
    bytes_per_sample = (x.shape[1] * 9 + w.shape[0]) * 36 * 8
    assert numba_backend.backward_step(7, 36, bytes_per_sample, 2) == step
    for got, want in zip(_conv_both(x, w, b, dout, "numba", groups=2), _conv_both(x, w, b, dout, "naive", groups=2)):
        assert_close(got, want)


def test_backward_step_respects_the_workspace_limit(monkeypatch):
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", 10_000)
    assert numba_backend.backward_step(100, 4, 1000, 2) == 5  # wanted 64, the limit allows 5 per block
    assert numba_backend.backward_step(100, 4, 10**6, 2) == 1  # one sample always fits
    assert numba_backend.backward_step(100, 1024, 10, 2) == 1  # wide images need no stacking


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_calls_are_bitwise_identical(two_threads, dtype):
    x, w, b, dout = _conv_inputs(n=9, c=6, f=8, groups=1, size=9, dtype=dtype)
    first = _conv_both(x, w, b, dout, "numba")
    for _ in range(3):
        for got, want in zip(_conv_both(x, w, b, dout, "numba"), first):
            np.testing.assert_array_equal(got, want)


def test_thread_counts_agree():
    x, w, b, dout = _conv_inputs(n=9, groups=1)
    try:
        fastconv.set_num_threads(1)
        one = _conv_both(x, w, b, dout, "numba")
        fastconv.set_num_threads(2)
        two = _conv_both(x, w, b, dout, "numba")
    finally:
        fastconv.set_num_threads(None)
    for got, want in zip(two, one):
        assert_close(got, want)


def test_thread_setting_holds_in_other_python_threads():
    import numba
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    seen = []

    def call():
        fastconv.max_pool2d_forward(x, 2, backend="numba")
        seen.append(numba.get_num_threads())

    try:
        for n in (1, 2):
            fastconv.set_num_threads(n)
            worker = threading.Thread(target=call)
            worker.start()
            worker.join()
    finally:
        fastconv.set_num_threads(None)
    assert seen == [1, min(2, numba.config.NUMBA_NUM_THREADS)]


def test_concurrent_calls_from_python_threads(two_threads):
    inputs = [_conv_inputs(n=5, seed=seed) for seed in range(6)]
    expected = [_conv_both(*args, "numba", groups=2) for args in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: _conv_both(*args, "numba", groups=2), inputs * 2))
    for got_all, want_all in zip(results, expected * 2):
        for got, want in zip(got_all, want_all):
            np.testing.assert_array_equal(got, want)


def _child_conv(queue):
    x, w, b, dout = _conv_inputs(seed=3)
    queue.put(_conv_both(x, w, b, dout, "numba", groups=2)[0])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_after_a_parallel_call(two_threads):
    x, w, b, dout = _conv_inputs(seed=3)
    expected = _conv_both(x, w, b, dout, "numba", groups=2)[0]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_conv, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)


def test_threading_layer_is_tbb_when_available():
    fastconv.max_pool2d_forward(np.ones((1, 2, 4, 4)), 2, backend="numba")
    layer = numba_backend.build_info()["threading_layer"]
    if _numba_runtime.USER_CHOSE_LAYER:
        pytest.skip("NUMBA_THREADING_LAYER chosen by the user")
    assert layer == ("tbb" if _numba_runtime.TBB_PATH else "workqueue")


def _run(code, env=None):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_fastconv_does_not_import_numba():
    assert _run("import sys, fastconv; print('numba' in sys.modules)") == "False"


_CACHE_PROBE = """
import numpy as np, fastconv
from fastconv.backends import _numba_pool
fastconv.avg_pool2d_forward(np.ones((1, 1, 4, 4)), 2, backend="numba")
stats = _numba_pool.avg_pool_forward.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_second_process_loads_kernels_from_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    assert _run(_CACHE_PROBE, env).split()[0] == "0"  # compiled: nothing to load yet
    index_files = list(tmp_path.rglob("*avg_pool_forward*.nbi"))
    assert index_files and list(tmp_path.rglob("*avg_pool_forward*.nbc"))
    hits, misses = _run(_CACHE_PROBE, env).split()
    assert int(hits) >= 1 and misses == "0"


def test_cache_dir_falls_back_when_the_package_is_read_only(tmp_path):
    user_cache = tmp_path / "xdg"
    writable = lambda d: not d.startswith("/read-only")  # noqa: E731
    env = {"XDG_CACHE_HOME": str(user_cache)}
    assert _numba_runtime.choose_cache_dir(env, "/read-only/pkg/__pycache__", writable) == (
        True, str(user_cache / "fastconv" / "numba"))
    assert _numba_runtime.choose_cache_dir(env, str(tmp_path), writable) == (True, None)
    assert _numba_runtime.choose_cache_dir({"NUMBA_CACHE_DIR": "/x"}, "/read-only/p", writable) == (True, None)
    assert _numba_runtime.choose_cache_dir(env, "/read-only/p", lambda d: False) == (False, None)


def test_direct_loops_only_for_skinny_gemms():
    assert numba_backend.uses_direct_loops((16, 1, 3, 3), groups=16)  # depthwise
    assert numba_backend.uses_direct_loops((8, 4, 1, 1), groups=8)  # one filter per group
    assert not numba_backend.uses_direct_loops((20, 1, 5, 5), groups=1)  # lenet's first layer
    assert not numba_backend.uses_direct_loops((64, 64, 3, 3), groups=1)


@pytest.mark.parametrize("groups, w_shape", [(6, (6, 1, 3, 3)), (3, (6, 2, 1, 1)), (1, (6, 6, 3, 3))])
def test_direct_and_gemm_paths_match_naive(two_threads, groups, w_shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 9, 8))
    w = rng.standard_normal(w_shape)
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2) if w_shape[2] > 1 else 1, groups=groups)
    got, got_cache = fastconv.conv2d_forward(x, w, None, backend="numba", **kw)
    want, want_cache = fastconv.conv2d_forward(x, w, None, backend="naive", **kw)
    assert_close(got, want)
    dout = rng.standard_normal(got.shape)
    for g, e in zip(fastconv.conv2d_backward(dout, got_cache), fastconv.conv2d_backward(dout, want_cache)):
        assert (g is None) == (e is None)
        if g is not None:
            assert_close(g, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_conv_uses_x_as_its_own_columns(two_threads, dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 8, 5, 7)).astype(dtype)
    w = rng.standard_normal((6, 4, 1, 1)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    got, got_cache = fastconv.conv2d_forward(x, w, b, groups=2, backend="numba")
    want, want_cache = fastconv.conv2d_forward(x, w, b, groups=2, backend="naive")
    assert_close(got, want)
    dout = rng.standard_normal(got.shape).astype(dtype)
    for g, e in zip(fastconv.conv2d_backward(dout, got_cache), fastconv.conv2d_backward(dout, want_cache)):
        assert g.dtype == dtype
        assert_close(g, e)


def test_build_info():
    info = numba_backend.build_info()
    assert {"numba", "threading_layer", "cache", "tbb"} <= set(info)
