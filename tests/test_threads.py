"""The thread knob: argument validation, and results that depend neither on the thread count nor on
the calling Python thread."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv import _blas
from fastconv._threads import blas_threads, inner_blas_single_threaded
from fastconv.cases import assert_results_close
from fastconv.testing import CONV_GRID, POOL_GRID, POOL_OPS, conv2d_results, pool2d_results


@pytest.mark.parametrize("bad", (1.0, 2.5, "2", True, False, [2], np.float64(2)), ids=repr)
def test_set_num_threads_rejects_non_integers(bad, restore_num_threads):
    with pytest.raises(TypeError, match=r"n must be a positive int or None"):
        fastconv.set_num_threads(bad)


@pytest.mark.parametrize("bad", (0, -1, np.int64(-4)), ids=repr)
def test_set_num_threads_rejects_counts_below_one(bad, restore_num_threads):
    with pytest.raises(ValueError, match=rf"n must be >= 1, got {bad}"):
        fastconv.set_num_threads(bad)


def test_set_num_threads_round_trip(restore_num_threads):
    fastconv.set_num_threads(np.int64(1))
    assert fastconv.get_num_threads() == 1
    fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() >= 1


def results_with_threads(n, backend, dtype):
    # A batch of 8 so backends that split the batch across threads really do.
    fastconv.set_num_threads(n)
    conv_cfg = next(cfg for cfg in CONV_GRID if cfg.name == "everything")._replace(x_shape=(8, 4, 16, 15))
    results = list(conv2d_results(*conv_cfg.inputs(dtype), backend, **conv_cfg.kwargs()))
    pool_cfg = next(cfg for cfg in POOL_GRID if cfg.name == "k3-s2-p1-odd")._replace(x_shape=(8, 3, 15, 13))
    for op in POOL_OPS:
        results += pool2d_results(op, *pool_cfg.inputs(dtype), backend, **pool_cfg.kwargs())
    return results


def test_results_do_not_depend_on_thread_count(backend, dtype, restore_num_threads):
    assert_results_close(results_with_threads(2, backend, dtype), results_with_threads(1, backend, dtype))


# --- Results and BLAS settings that must not depend on the calling Python thread.

def _calling_thread_workloads(dtype):
    """Conv on the GEMM path (GEMMs big enough for a multi-threaded BLAS to split them), with
    dilation and groups, and on cython's Winograd path (>= 16 channels, 3x3, stride 1); max and
    avg pooling: forward and backward of each, on batches large enough to split across threads."""
    basic = next(cfg for cfg in CONV_GRID if cfg.name == "basic")
    convs = (basic._replace(x_shape=(4, 8, 20, 20), w_shape=(16, 8, 3, 3)),
             next(cfg for cfg in CONV_GRID if cfg.name == "everything")._replace(x_shape=(8, 4, 16, 15)),
             basic._replace(x_shape=(4, 32, 16, 16), w_shape=(32, 32, 3, 3)))
    pool = next(cfg for cfg in POOL_GRID if cfg.name == "k3-s2-p1-odd")._replace(x_shape=(8, 3, 15, 13))
    conv_inputs = [(cfg, cfg.inputs(dtype, seed=i)) for i, cfg in enumerate(convs)]
    pool_inputs = pool.inputs(dtype)

    def run(backend):
        results = []
        for cfg, arrays in conv_inputs:
            results += conv2d_results(*arrays, backend, **cfg.kwargs())
        for op in POOL_OPS:
            results += pool2d_results(op, *pool_inputs, backend, **pool.kwargs())
        return results
    return run


def _in_new_thread(function, *args):
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(function, *args).result()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_calling_thread(fast_backend, dtype, threads, restore_num_threads):
    # Several worker threads are asked for even on a one-core machine: the BLAS under the
    # kernels then has several threads too, so a pin that fails in some Python threads shows.
    fastconv.set_num_threads(threads)
    run = _calling_thread_workloads(dtype)
    from_main = run(fast_backend)
    assert_results_close(_in_new_thread(run, fast_backend), from_main, exact=True)


def test_blas_is_pinned_to_one_thread_from_any_python_thread(restore_num_threads):
    fastconv.set_num_threads(2)
    scipy_libs = _blas.scipy_libraries()
    assert scipy_libs, "scipy's BLAS was not found"

    def pinned_counts():
        with inner_blas_single_threaded():
            return [lib.get_threads() for lib in scipy_libs]

    assert pinned_counts() == [1] * len(scipy_libs)
    assert _in_new_thread(pinned_counts) == [1] * len(scipy_libs)
    assert [lib.get_threads() for lib in scipy_libs] == [2] * len(scipy_libs)  # restored


def test_set_num_threads_reaches_every_blas_from_any_python_thread(restore_num_threads):
    for n in (1, 2):
        _in_new_thread(fastconv.set_num_threads, n)
        assert set(blas_threads().values()) == {n}
