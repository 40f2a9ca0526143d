"""The all-thread GEMM conv path (``_big_gemms``): numba's wide GEMMs forced on every shape, and
the pointwise products both compiled backends use."""
import numpy as np
import pytest

import fastconv
from fastconv.backends import _workspace
from fastconv.testing import assert_close



@pytest.fixture
def two_threads():
    fastconv.set_num_threads(2)
    yield
    fastconv.set_num_threads(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, dilation, padding", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1), (1, 1, 1, 0)])
def test_forced_wide_gemm_path_in_small_steps(monkeypatch, two_threads, dtype, kernel, stride, dilation, padding):
    # At most two samples per step: 7 samples leave a partial step; groups=2 splits every GEMM.
    if "numba" not in fastconv.available_backends():
        pytest.skip("needs numba")
    from fastconv.backends import numba as numba_backend
    backend = "numba"
    monkeypatch.setattr(numba_backend, "uses_all_thread_gemms", lambda *args: True)
    itemsize = np.dtype(dtype).itemsize
    limit = 2 * (4 * kernel * kernel + 6) * 36 * itemsize + 6 * 2 * kernel * kernel * itemsize
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", limit)
    _workspace.release()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4, 6, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(groups=2, stride=stride, dilation=dilation, padding=padding)
    results = {}
    for name in (backend, "naive"):
        out, cache = fastconv.conv2d_forward(x, w, b, backend=name, **kw)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        results[name] = (out, *fastconv.conv2d_backward(dout, cache))
    for got, want in zip(results[backend], results["naive"]):
        assert_close(got, want)
    used = sum(buf.nbytes for slot, buf in _workspace._local.buffers.items() if slot.startswith("big_gemms."))
    assert used <= limit


@pytest.mark.parametrize("backend", [name for name in ("numba", "cython") if name in fastconv.available_backends()])
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_products_in_small_steps(monkeypatch, backend, groups):
    # Pointwise convs take _big_gemms.pointwise_* on both compiled backends; tiny workspace steps.
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", 3 * 8 * 4 * 8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3, 3))
    w = rng.standard_normal((8, 4 // groups, 1, 1))
    b = rng.standard_normal(8)
    results = {}
    for name in (backend, "naive"):
        out, cache = fastconv.conv2d_forward(x, w, b, groups=groups, backend=name)
        results[name] = (out, *fastconv.conv2d_backward(np.cos(out), cache))
    for got, want in zip(results[backend], results["naive"]):
        assert_close(got, want)


def test_cython_routes_only_pointwise_convs_to_all_thread_gemms():
    if "cython" not in fastconv.available_backends():
        pytest.skip("cython backend not built")
    from fastconv._params import ConvParams
    from fastconv.backends import cython

    def params(stride, pad, out):
        return ConvParams(stride, stride, pad, pad, 1, 1, 1, out, out)
    assert cython.uses_all_thread_gemms((64, 256, 1, 1), params(1, 0, 14))           # pointwise
    assert not cython.uses_all_thread_gemms((128, 128, 3, 3), params(1, 1, 16))      # several images per item
    assert not cython.uses_all_thread_gemms((64, 256, 1, 1), params(2, 0, 7))        # strided 1x1: columns needed
    assert not cython.uses_all_thread_gemms((3, 256, 1, 1), params(1, 0, 14))        # too few filters
