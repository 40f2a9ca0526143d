"""Input layouts and call semantics: views, Fortran order, read-only, byte order, dtypes, untouched inputs,
repeated backward, interleaved caches and the empty batch."""
import numpy as np
import pytest

import fastconv
from fastconv.cases import assert_results_close
from fastconv.testing import (CONV_GRID, LAYOUTS, POOL_GRID, POOL_OPS, case_id, conv2d_results, pool2d_results,
                              repeated_backward_results)

CONV_CFG = next(cfg for cfg in CONV_GRID if cfg.name == "everything")
POOL_CFG = next(cfg for cfg in POOL_GRID if cfg.name == "pairs-overlapping")
# The front hands every backend C-contiguous, native-order arrays (see
# test_backends_get_c_contiguous_native_arrays), so one backend speaks for all of them; only
# read-only arrays reach the backends as they are, and every backend gets those.
ANY_BACKEND = fastconv.available_backends()[0]


def test_layouts_keep_values_but_change_memory():
    arr = np.arange(24.0).reshape(2, 3, 2, 2)
    for name, layout in LAYOUTS.items():
        changed = layout(arr)
        np.testing.assert_array_equal(changed, arr, err_msg=name)
        assert not (changed.flags.c_contiguous and changed.flags.writeable and changed.dtype.isnative), name


LAYOUT_RUNS = [pytest.param(layout, ANY_BACKEND, id=f"{layout}-{ANY_BACKEND}") for layout in LAYOUTS
               if layout != "read-only"]
LAYOUT_RUNS += [pytest.param("read-only", name, id=f"read-only-{name}") for name in fastconv.available_backends()]


@pytest.mark.parametrize("layout, backend", LAYOUT_RUNS)
def test_conv2d_any_layout(backend, dtype, layout):
    x, w, b, dout = CONV_CFG.inputs(dtype)
    expected = conv2d_results(x, w, b, dout, backend, **CONV_CFG.kwargs())
    change = LAYOUTS[layout]
    actual = conv2d_results(change(x), change(w), change(b), change(dout), backend, **CONV_CFG.kwargs())
    assert_results_close(actual, expected)


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("layout, backend", LAYOUT_RUNS)
def test_pool2d_any_layout(backend, dtype, op, layout):
    x, dout = POOL_CFG.inputs(dtype)
    expected = pool2d_results(op, x, dout, backend, **POOL_CFG.kwargs())
    change = LAYOUTS[layout]
    actual = pool2d_results(op, change(x), change(dout), backend, **POOL_CFG.kwargs())
    assert_results_close(actual, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backends_get_c_contiguous_native_arrays(kernel_calls, layout):
    change = LAYOUTS[layout]
    x, w, b, dout = (change(a) for a in CONV_CFG.inputs(np.float32))
    conv2d_results(x, w, b, dout, ANY_BACKEND, **CONV_CFG.kwargs())
    x, dout = (change(a) for a in POOL_CFG.inputs(np.float32))
    for op in POOL_OPS:
        pool2d_results(op, x, dout, ANY_BACKEND, **POOL_CFG.kwargs())
    assert [kernel for kernel, _ in kernel_calls] == [
        "conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
        "avg_pool2d_backward"]
    for kernel, arguments in kernel_calls:
        for name in ("x", "w", "b", "dout"):
            array = arguments.get(name)
            if array is not None:
                assert array.flags.c_contiguous and array.dtype.isnative, f"{kernel} got {name} as passed"
                # Copied only when the layout needs it: read-only arrays reach the backends as they are.
                assert array.flags.writeable == (layout != "read-only"), f"{kernel}: {name} writeable"


@pytest.mark.parametrize("bias", (True, False), ids=("bias", "no-bias"))
def test_conv2d_preserves_dtype(backend, dtype, bias):
    x, w, b, dout = CONV_CFG._replace(bias=bias).inputs(dtype)
    out, dx, dw, db = conv2d_results(x, w, b, dout, backend, **CONV_CFG.kwargs())
    assert out.dtype == dx.dtype == dw.dtype == np.dtype(dtype)
    assert db.dtype == np.dtype(dtype) if bias else db is None
    assert (out.shape, dx.shape, dw.shape) == (CONV_CFG.out_shape(), x.shape, w.shape)


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool2d_preserves_dtype(backend, dtype, op):
    x, dout = POOL_CFG.inputs(dtype)
    out, dx = pool2d_results(op, x, dout, backend, **POOL_CFG.kwargs())
    assert out.dtype == dx.dtype == np.dtype(dtype)
    assert (out.shape, dx.shape) == (POOL_CFG.out_shape(), x.shape)


def test_conv2d_inputs_unchanged(backend, dtype):
    inputs = CONV_CFG.inputs(dtype)
    copies = [a.copy() for a in inputs]
    conv2d_results(*inputs, backend, **CONV_CFG.kwargs())
    assert_results_close(inputs, copies, exact=True)


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool2d_inputs_unchanged(backend, dtype, op):
    x, dout = POOL_CFG.inputs(dtype)
    copies = x.copy(), dout.copy()
    pool2d_results(op, x, dout, backend, **POOL_CFG.kwargs())
    assert_results_close((x, dout), copies, exact=True)


def test_conv2d_backward_twice_and_interleaved(backend, dtype):
    # A result must not live in memory a later call reuses, and a cache must not depend on
    # scratch another call overwrites: run A, then B, then A's backward twice.
    other = next(cfg for cfg in CONV_GRID if cfg.name == "basic")
    assert_results_close(*repeated_backward_results("conv2d", CONV_CFG, other, dtype, backend), exact=True)


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool2d_backward_twice_and_interleaved(backend, dtype, op):
    other = next(cfg for cfg in POOL_GRID if cfg.name == "k3-s2-p1-odd")
    assert_results_close(*repeated_backward_results(op, POOL_CFG, other, dtype, backend), exact=True)


# The front answers an empty batch by itself (kernel_calls stays empty): one backend speaks for all.

@pytest.mark.parametrize("cfg", [cfg for cfg in CONV_GRID if cfg.name in ("everything", "groups-no-bias")],
                         ids=case_id)
def test_conv2d_empty_batch(kernel_calls, dtype, cfg):
    cfg = cfg._replace(x_shape=(0, *cfg.x_shape[1:]))
    x, w, b, dout = cfg.inputs(dtype)
    out, dx, dw, db = conv2d_results(x, w, b, dout, ANY_BACKEND, **cfg.kwargs())
    assert kernel_calls == []
    assert out.shape == cfg.out_shape() and out.dtype == np.dtype(dtype)
    assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    assert dw.dtype == np.dtype(dtype)
    if cfg.bias:
        np.testing.assert_array_equal(db, np.zeros_like(b))
        assert db.dtype == np.dtype(dtype)
    else:
        assert db is None


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool2d_empty_batch(kernel_calls, dtype, op):
    cfg = POOL_CFG._replace(x_shape=(0, *POOL_CFG.x_shape[1:]))
    x, dout = cfg.inputs(dtype)
    out, dx = pool2d_results(op, x, dout, ANY_BACKEND, **cfg.kwargs())
    assert kernel_calls == []
    assert out.shape == cfg.out_shape() and out.dtype == np.dtype(dtype)
    assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
