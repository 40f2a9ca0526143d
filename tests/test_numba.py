"""What is specific to the numba backend: batch steps, determinism, threads, fork, JIT cache."""
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _tuning
from fastconv.cases import ConvCase, assert_results_close
from fastconv.testing import DTYPES, assert_same_from_python_threads, conv2d_results, naive_results

pytest.importorskip("numba")
if "numba" not in fastconv.available_backends():
    pytest.skip("the numba backend is not available here", allow_module_level=True)

from fastconv.backends import _numba_runtime, _workspace  # noqa: E402
from fastconv.backends import numba as numba_backend  # noqa: E402


def square_case(n=7, c=4, f=6, groups=2, size=6) -> ConvCase:
    """A 3x3 conv, padding 1, on n images of c channels, size x size."""
    return ConvCase("numba", (n, c, size, size), (f, c // groups, 3, 3), 1, 1, groups=groups)


def numba_results(case, dtype=np.float64, seed=0):
    return conv2d_results(*case.inputs(dtype, seed), "numba", **case.kwargs())


@pytest.fixture
def two_threads(restore_num_threads):
    fastconv.set_num_threads(2)


@pytest.mark.parametrize("limit_bytes, min_columns, step", [(1, 10**6, 1), (50_000, 10**6, 2), (10**9, 100, 3)])
def test_batch_steps_that_do_not_divide_the_batch(monkeypatch, two_threads, limit_bytes, min_columns, step):
    # 7 samples of 36 positions over 2 blocks (4 + 3): steps of 2 or 3 samples leave partial
    # steps, and groups=2 splits every GEMM of a step.
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", limit_bytes)
    monkeypatch.setattr(_tuning, "NUMBA_BACKWARD_MIN_GEMM_COLUMNS", min_columns)
    case = square_case()
    bytes_per_sample = (case.x_shape[1] * 9 + case.w_shape[0]) * 36 * 8
    assert numba_backend.backward_step(7, 36, bytes_per_sample, 2) == step
    assert_results_close(numba_results(case), naive_results(case))


def test_backward_step_respects_the_workspace_limit(monkeypatch):
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", 10_000)
    assert numba_backend.backward_step(100, 4, 1000, 2) == 5  # wanted 64, the limit allows 5 per block
    assert numba_backend.backward_step(100, 4, 10**6, 2) == 1  # one sample always fits
    assert numba_backend.backward_step(100, 1024, 10, 2) == 1  # wide images need no stacking


@pytest.mark.parametrize("dtype", DTYPES)
def test_repeated_calls_are_bitwise_identical(two_threads, dtype):
    case = square_case(n=9, c=6, f=8, groups=1, size=9)
    first = numba_results(case, dtype)
    for _ in range(3):
        assert_results_close(numba_results(case, dtype), first, exact=True)


def test_thread_counts_agree(restore_num_threads):
    case = square_case(n=9, groups=1)
    fastconv.set_num_threads(1)
    one = numba_results(case)
    fastconv.set_num_threads(2)
    assert_results_close(numba_results(case), one)


def test_thread_setting_holds_in_other_python_threads(restore_num_threads):
    import numba
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    seen = []

    def call():
        fastconv.max_pool2d_forward(x, 2, backend="numba")
        seen.append(numba.get_num_threads())

    for n in (1, 2):
        fastconv.set_num_threads(n)
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
    assert seen == [1, min(2, numba.config.NUMBA_NUM_THREADS)]


def test_concurrent_calls_from_python_threads(two_threads):
    case = square_case(n=5)
    assert_same_from_python_threads(lambda seed: numba_results(case, seed=seed), range(6), rounds=2)


def _child_conv(queue):
    queue.put(numba_results(square_case(), seed=3)[0])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_after_a_parallel_call(two_threads):
    expected = numba_results(square_case(), seed=3)[0]
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
    dilation = (1, 2) if w_shape[2] > 1 else 1
    case = ConvCase("numba-paths", (3, 6, 9, 8), w_shape, (2, 1), (1, 0), dilation, groups, bias=False)
    assert_results_close(numba_results(case, seed=5), naive_results(case, seed=5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_conv_uses_x_as_its_own_columns(two_threads, dtype):
    case = ConvCase("pointwise", (5, 8, 5, 7), (6, 4, 1, 1), groups=2)
    results = numba_results(case, dtype, seed=6)
    assert all(result.dtype == dtype for result in results)
    assert_results_close(results, naive_results(case, dtype, seed=6))


def test_build_info():
    info = numba_backend.build_info()
    assert {"numba", "threading_layer", "cache", "tbb"} <= set(info)
