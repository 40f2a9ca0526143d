"""The thread knob: argument validation, and results that do not depend on the thread count."""
import numpy as np
import pytest

import fastconv
from fastconv.testing import (CONV_GRID, POOL_GRID, assert_close, config_conv_inputs, config_pool_inputs,
                              conv2d_results, pool2d_results)


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
    results = list(conv2d_results(*config_conv_inputs(conv_cfg, dtype), backend, **conv_cfg.kwargs()))
    pool_cfg = next(cfg for cfg in POOL_GRID if cfg.name == "k3-s2-p1-odd")._replace(x_shape=(8, 3, 15, 13))
    for op in ("max_pool2d", "avg_pool2d"):
        results += pool2d_results(op, *config_pool_inputs(pool_cfg, dtype), backend, **pool_cfg.kwargs())
    return results


def test_results_do_not_depend_on_thread_count(backend, dtype, restore_num_threads):
    one, two = results_with_threads(1, backend, dtype), results_with_threads(2, backend, dtype)
    for index, (got, want) in enumerate(zip(two, one)):
        assert_close(got, want, err_msg=f"result {index}")
