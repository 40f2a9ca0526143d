"""The cython backend: read-only inputs, tiling and chunking, determinism, threads, fork, build facts."""
import multiprocessing
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _registry, _tuning
from fastconv.cases import CONV_SMALL, POOL_SMALL, ConvCase, assert_results_close
from fastconv.testing import (DTYPES, POOL_OPS, assert_same_from_python_threads, case_id, conv2d_results,
                              naive_results, pool2d_results)

pytestmark = pytest.mark.skipif("cython" not in fastconv.available_backends(),
                                reason="cython extension not built")


def cython_results(case, x, w, b, dout):
    """(out, dx, dw, db) of ``case`` on cython for these arrays."""
    return conv2d_results(x, w, b, dout, "cython", **case.kwargs())


def pool_any(op, x, backend, case=POOL_SMALL[1]):
    """Forward + backward of a pooling op on any x, with a fixed gradient of the output's shape."""
    out, cache = getattr(fastconv, op + "_forward")(x, **case.kwargs(), backend=backend)
    dout = np.linspace(-1, 1, out.size, dtype=x.dtype).reshape(out.shape)
    return out, getattr(fastconv, op + "_backward")(dout, cache)


@pytest.mark.parametrize("case", CONV_SMALL, ids=case_id)
def test_conv_read_only_inputs_match_naive(case, dtype):
    x, w, b, dout = case.inputs(dtype)
    for a in (x, w, b, dout):
        a.flags.writeable = False
    assert_results_close(cython_results(case, x, w, b, dout), naive_results(case, dtype))


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("case", POOL_SMALL, ids=case_id)
def test_pool_read_only_inputs_match_naive(op, case, dtype):
    x, dout = case.inputs(dtype)
    x.flags.writeable = dout.flags.writeable = False
    assert_results_close(pool2d_results(op, x, dout, "cython", **case.kwargs()), naive_results(case, dtype, op=op))


@pytest.mark.parametrize("case", POOL_SMALL, ids=case_id)
def test_max_pool_ties_and_nan_route_exactly_like_naive(case):
    x, dout = case.inputs()
    x[:, :, ::2, :] = 1.0  # runs of equal maxima: the first in row-major order must win
    x[0, 0, 3, 3] = x[1, 2, 0, 1] = x[1, 2, 0, 0] = np.nan
    x[2, 1] = -np.inf
    assert_results_close(pool2d_results("max_pool2d", x, dout, "cython", **case.kwargs()),
                         pool2d_results("max_pool2d", x, dout, "naive", **case.kwargs()), exact=True)


def test_tiles_and_chunks_within_a_small_workspace(monkeypatch, dtype):
    """Many row tiles per sample and many backward chunks still give naive's answer, in bounds."""
    from fastconv.backends import _workspace
    limit = 64 * 1024
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", limit)
    monkeypatch.setattr(_tuning, "CYTHON_COL_TILE_BYTES", 1000)
    _workspace.release()
    for case in CONV_SMALL:
        assert_results_close(cython_results(case, *case.inputs(dtype)), naive_results(case, dtype))
    used = sum(buf.nbytes for slot, buf in _workspace._local.buffers.items() if slot.startswith("cython."))
    assert used <= limit


def test_backward_is_bitwise_deterministic(restore_num_threads):
    fastconv.set_num_threads(2)
    case = CONV_SMALL[1]
    x, w, b, dout = case.inputs(np.float32)
    first = cython_results(case, x, w, b, dout)
    for _ in range(3):
        assert_results_close(cython_results(case, x, w, b, dout), first, exact=True)


@pytest.mark.parametrize("case", CONV_SMALL, ids=case_id)
def test_one_and_two_threads_agree(case, dtype, restore_num_threads):
    x, w, b, dout = case.inputs(dtype)
    fastconv.set_num_threads(1)
    serial = cython_results(case, x, w, b, dout) + pool_any("max_pool2d", x, "cython")
    fastconv.set_num_threads(2)
    parallel = cython_results(case, x, w, b, dout) + pool_any("max_pool2d", x, "cython")
    assert_results_close(parallel, serial)


def test_concurrent_python_threads_match_serial_calls():
    inputs = [(case, case.inputs(dtype, seed=seed))
              for seed, (case, dtype) in enumerate([(c, d) for c in CONV_SMALL for d in DTYPES])]

    def work(item):
        case, arrays = item
        return cython_results(case, *arrays) + pool_any("max_pool2d", arrays[0], "cython")

    assert_same_from_python_threads(work, inputs)


def _child_computes(queue):
    case = CONV_SMALL[0]
    x, w, b, dout = case.inputs()
    out = cython_results(case, x, w, b, dout)
    queue.put([a.tolist() for a in out + pool_any("max_pool2d", x, "cython")])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method with GNU OpenMP")
def test_fork_child_after_openmp_call_computes_and_does_not_hang(restore_num_threads):
    fastconv.set_num_threads(2)
    case = CONV_SMALL[0]
    x, w, b, dout = case.inputs()
    expected = cython_results(case, x, w, b, dout)  # the parent's OpenMP pool now exists
    expected += pool_any("max_pool2d", x, "cython")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_computes, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert_results_close([np.asarray(a, e.dtype) for a, e in zip(got, expected)], expected, exact=True)


def test_build_info_reports_openmp_and_flags():
    from fastconv import info
    from fastconv.backends import cython as cy
    facts = cy.build_info()
    assert isinstance(facts["openmp"], bool) and isinstance(facts["native"], bool)
    assert facts["threads"] == fastconv.get_num_threads()
    assert info.collect()["cython_build"]["openmp"] == facts["openmp"]


def test_sizes_beyond_int32_indexing_are_handed_to_another_backend(monkeypatch):
    from fastconv.backends import cython as cy
    monkeypatch.setattr(cy, "_INT32_MAX", 10)
    case = CONV_SMALL[0]
    x, w, b, dout = case.inputs()
    _, cache = fastconv.conv2d_forward(x, w, b, **case.kwargs(), backend="cython")
    assert cache.backend not in ("cython", "naive")  # the front asked, cython declined
    _, pool_cache = fastconv.max_pool2d_forward(x, 2, backend="cython")
    assert pool_cache.backend not in ("cython", "naive")
    assert_results_close(cython_results(case, x, w, b, dout), naive_results(case))
    for op in POOL_OPS:
        assert_results_close(pool_any(op, x, "cython"), pool_any(op, x, "naive"))


def test_malformed_input_is_rejected_before_compiled_code(kernel_calls):
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="channel|group|C"):
        fastconv.conv2d_forward(x, np.zeros((4, 2, 3, 3), np.float32), backend="cython")
    with pytest.raises(TypeError):
        fastconv.max_pool2d_forward(x.astype(np.int32), 2, backend="cython")
    assert kernel_calls == []


def test_missing_extension_leaves_backend_out_with_build_hint(monkeypatch):
    # Simulate an unbuilt checkout: the compiled module cannot be imported.
    import fastconv.backends
    monkeypatch.setitem(sys.modules, "fastconv.backends._cy_conv", None)
    monkeypatch.delattr(fastconv.backends, "_cy_conv")
    for module in ("cython", "_cy_runtime"):  # loaded again, from scratch
        monkeypatch.delitem(sys.modules, f"fastconv.backends.{module}")
        monkeypatch.delattr(fastconv.backends, module)
    monkeypatch.setattr(_registry, "_loaded", {k: v for k, v in _registry._loaded.items() if k != "cython"})
    monkeypatch.setattr(_registry, "_failed", {})
    assert "cython" not in fastconv.available_backends()
    with pytest.raises(fastconv.BackendUnavailableError, match="pip install"):
        fastconv.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), backend="cython")
    out, cache = fastconv.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)))
    assert cache.backend != "cython" and np.all(out == 4)


@pytest.mark.parametrize("padding, dilation, stride", [((3, 3), (3, 3), 1), ((1, 4), (1, 1), (1, 2)),
                                                       ((2, 5), (2, 3), (2, 1)), ((0, 6), (1, 2), 3)])
def test_kernel_columns_that_only_read_padding(padding, dilation, stride):
    """Whole kernel columns land in the padding for some outputs: no out-of-row writes."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 2, 7, 5)), rng.standard_normal((3, 2, 2, 4))
    case = ConvCase("padding-columns", (2, 2, 7, 5), (3, 2, 2, 4), stride, padding, dilation, bias=False)
    x, w, b, dout = case.inputs(seed=3)
    assert_results_close(cython_results(case, x, w, b, dout), naive_results(case, seed=3))


@pytest.mark.parametrize("min_columns", [1, 20, 10**6])
def test_several_images_per_work_item(monkeypatch, restore_num_threads, dtype, min_columns):
    """Groups of whole images per GEMM (3 per item for 7 images of 9 positions at 20 columns,
    the whole batch at 10**6) give naive's answer, with and without bias and groups."""
    monkeypatch.setattr(_tuning, "CYTHON_SHARED_GEMM_BELOW_POSITIONS", min_columns)
    fastconv.set_num_threads(2)
    for groups, bias in ((1, True), (2, False)):
        case = ConvCase("images-per-item", (7, 4, 5, 5), (6, 4 // groups, 3, 3), 2, 1, groups=groups, bias=bias)
        x, w, b, dout = case.inputs(dtype, seed=3)
        assert_results_close(cython_results(case, x, w, b, dout), naive_results(case, dtype, seed=3))


# Winograd F(2x2, 3x3) path: odd and even sizes, every padding, tile rows split across blocks
# and segments, images smaller than a tile.
WINOGRAD_SHAPES = [  # (x shape, filters, padding)
    ((2, 3, 7, 8), 4, 1), ((2, 3, 6, 5), 4, 0), ((1, 2, 5, 5), 3, 2), ((3, 4, 9, 9), 5, (1, 0)),
    ((5, 6, 3, 4), 7, (0, 3)), ((4, 8, 1, 1), 3, 1), ((4, 8, 1, 1), 3, (4, 1)), ((2, 2, 5, 140), 3, 1),
    ((3, 5, 12, 12), 6, 1),
]


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Route every 3x3 / stride 1 conv through Winograd, in small blocks; count the calls."""
    from fastconv.backends import cython as cy
    monkeypatch.setattr(_tuning, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(_tuning, "WINOGRAD_BLOCK_BYTES", 1)  # the smallest block: many per call
    calls = []
    kernels = cy._cy_winograd

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(kernels, name)

    monkeypatch.setattr(cy, "_cy_winograd", Counting())
    return calls


@pytest.mark.parametrize("x_shape,filters,padding", WINOGRAD_SHAPES)
def test_winograd_matches_naive(x_shape, filters, padding, dtype, winograd_everywhere):
    case = ConvCase("winograd", x_shape, (filters, x_shape[1], 3, 3), 1, padding)
    for variant in (case, case._replace(bias=False)):
        arrays = variant.inputs(dtype)
        for a in arrays:
            if a is not None:
                a.flags.writeable = False
        winograd_everywhere.clear()
        results = cython_results(variant, *arrays)
        assert_results_close(results, naive_results(variant, dtype))
        assert {"conv2d_forward", "conv2d_backward"} <= set(winograd_everywhere)
        _, cache = fastconv.conv2d_forward(*arrays[:3], backend="cython", **variant.kwargs())
        winograd_everywhere.clear()
        dx, dw, db = fastconv.conv2d_backward(arrays[3], cache, need_dx=False)  # Winograd without dx
        assert dx is None and "conv2d_backward" in winograd_everywhere
        assert_results_close((dw, db), results[2:], exact=True)


def test_winograd_is_bitwise_deterministic_and_thread_count_free(winograd_everywhere, restore_num_threads):
    case = ConvCase("winograd", (6, 5, 12, 12), (6, 5, 3, 3), 1, 1)
    x, w, b, dout = case.inputs(np.float64)
    fastconv.set_num_threads(2)
    first = cython_results(case, x, w, b, dout)
    for _ in range(3):
        assert_results_close(cython_results(case, x, w, b, dout), first, exact=True)
    fastconv.set_num_threads(1)
    assert_results_close(cython_results(case, x, w, b, dout), first)


def test_winograd_only_where_it_computes_the_conv():
    from fastconv._params import ConvParams
    from fastconv.backends import cython as cy
    x = np.zeros((2, 32, 8, 8))

    def plan(w_shape, stride=1, dilation=1, groups=1):
        p = ConvParams(stride, stride, 1, 1, dilation, dilation, groups, 8, 8, 3, 3)  # out size unused
        return cy._winograd_plan(x, np.zeros(w_shape), p, 2)

    assert plan((32, 32, 3, 3)) is not None
    assert plan((32, 32, 3, 3), stride=2) is None
    assert plan((32, 32, 3, 3), dilation=2) is None
    assert plan((32, 16, 3, 3), groups=2) is None
    assert plan((32, 32, 5, 5)) is None
    assert plan((4, 32, 3, 3)) is None  # too few filters to pay for the transforms


def test_winograd_stays_within_the_workspace_limit(monkeypatch):
    from fastconv.backends import _workspace
    from fastconv.backends import cython as cy
    from fastconv._params import ConvParams
    p = ConvParams(1, 1, 1, 1, 1, 1, 1, 8, 8, 3, 3)
    x, w = np.zeros((2, 64, 8, 8)), np.zeros((64, 64, 3, 3))
    assert cy._winograd_plan(x, w, p, 2) is not None
    monkeypatch.setattr(_workspace, "WORKSPACE_LIMIT_BYTES", 16 * 64 * 64 * 8 * 3)  # u and 2 du, no blocks
    assert cy._winograd_plan(x, w, p, 2) is None


def test_winograd_can_be_turned_off_from_the_environment():
    import os
    import subprocess
    code = ("import numpy as np; from fastconv.backends import cython as cy; from fastconv._params import ConvParams;"
            "p = ConvParams(1, 1, 1, 1, 1, 1, 1, 8, 8, 3, 3);"
            "print(cy._winograd_plan(np.zeros((2, 64, 8, 8)), np.zeros((64, 64, 3, 3)), p, 2) is None,"
            " cy.build_info()['winograd_min_channels'])")
    outputs = [subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FASTCONV_WINOGRAD=value),
                              capture_output=True, text=True, check=True).stdout.split() for value in ("0", "1")]
    assert outputs == [["True", "off"], ["False", str(_tuning.WINOGRAD_MIN_CHANNELS)]]


def test_winograd_from_concurrent_python_threads(winograd_everywhere):
    cases = [ConvCase("winograd", x_shape, (f, x_shape[1], 3, 3), 1, pad if isinstance(pad, int) else 1)
             for x_shape, f, pad in WINOGRAD_SHAPES if min(x_shape[2:]) >= 3]
    inputs = [(case, case.inputs(dtype, seed=seed))
              for seed, (case, dtype) in enumerate((c, d) for c in cases for d in DTYPES)]

    def work(item):
        case, arrays = item
        return cython_results(case, *arrays)

    assert_same_from_python_threads(work, inputs)
