"""What only the im2col backend has: batch chunking, kernel-offset spans, workspace safety, no np.add.at."""
import itertools
import sys

import numpy as np
import pytest

import fastconv
from fastconv.backends import _strided, _workspace
from fastconv.cases import assert_results_close
from fastconv.testing import CONV_GRID, POOL_GRID, POOL_OPS, case_id, conv2d_results, naive_results, pool2d_results

pytestmark = pytest.mark.skipif("im2col" not in fastconv.available_backends(), reason="im2col unavailable")


@pytest.fixture
def chunks_of_two(monkeypatch):
    """Walk every batch in chunks of 2, so a batch of 5 ends with a partial chunk; returns the
    sizes of the batches walked so, in order."""
    walked = []

    def two_at_a_time(n, bytes_per_sample, limit=None):
        walked.append(n)
        return min(n, 2)

    monkeypatch.setattr(_strided, "batch_chunk", two_at_a_time)
    return walked


@pytest.mark.parametrize("cfg", [c for c in CONV_GRID if c.name in ("everything", "depthwise", "no-bias")],
                         ids=case_id)
def test_conv_chunks_match_naive(chunks_of_two, cfg):
    cfg = cfg._replace(x_shape=(5, *cfg.x_shape[1:]))
    actual = conv2d_results(*cfg.inputs(), "im2col", **cfg.kwargs())
    assert chunks_of_two == [5, 5]  # forward and backward each walked the batch in chunks
    assert_results_close(actual, naive_results(cfg))


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool_chunks_match_naive(chunks_of_two, op):
    cfg = POOL_GRID[1]._replace(x_shape=(5, 2, 9, 7))  # k3 s2 p1: overlapping, padded
    x, dout = cfg.inputs()
    x[0, 0, 1, :3] = np.nan
    actual = pool2d_results(op, x, dout, "im2col", **cfg.kwargs())
    assert 5 in chunks_of_two  # the batch was walked in chunks
    assert_results_close(actual, pool2d_results(op, x, dout, "naive", **cfg.kwargs()))


def test_batches_end_with_a_partial_chunk():
    # 10 bytes a sample under a 25-byte limit: chunks of 2.
    assert [(s.start, s.stop) for s in _strided.batches(5, 10, limit=25)] == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("size, out_size, offset, stride, pad", [
    (7, 3, 0, 3, 1), (7, 3, 2, 3, 1), (5, 9, 4, 1, 4), (4, 2, 3, 3, 0), (3, 7, 0, 1, 4), (2, 1, 3, 1, 1)])
def test_axis_span_is_the_in_bounds_cells(size, out_size, offset, stride, pad):
    rows_out, rows_in = _strided._axis_span(size, out_size, offset, stride, pad)
    inputs = [o * stride - pad + offset for o in range(out_size)]
    in_bounds = [o for o, i in enumerate(inputs) if 0 <= i < size]
    assert list(range(out_size))[rows_out] == in_bounds
    assert list(range(size))[rows_in] == [inputs[o] for o in in_bounds]


def test_outside_and_span_tile_the_plane():
    for rows, cols in itertools.product([slice(0, 0), slice(0, 4), slice(1, 3)], [slice(2, 5), slice(0, 5)]):
        plane = np.zeros((4, 5), int)
        plane[rows, cols] += 1
        for r, c in _strided.outside((4, 5), (rows, cols)):
            plane[r, c] += 1
        assert (plane == 1).all()


def test_results_are_not_workspace_views():
    cfg = CONV_GRID[0]
    x, w, b, dout = cfg.inputs()
    out, cache = fastconv.conv2d_forward(x, w, b, **cfg.kwargs(), backend="im2col")
    grads = fastconv.conv2d_backward(dout, cache)
    kept = [a.copy() for a in (out, *grads)]
    x2, w2, b2, dout2 = cfg._replace(x_shape=(4, 3, 9, 9)).inputs(seed=3)
    fastconv.conv2d_backward(dout2, fastconv.conv2d_forward(x2, w2, b2, **cfg.kwargs(), backend="im2col")[1])
    for a in (out, *grads):
        assert not any(np.shares_memory(a, buf) for buf in _workspace._local.buffers.values())
    assert_results_close((out, *grads), kept, exact=True)


def test_max_pool_ctx_is_compact():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _, cache = fastconv.max_pool2d_forward(x, 3, 1, 1, backend="im2col")
    assert cache.ctx.dtype == np.uint8


def ufunc_at_calls(run) -> list:
    """The ufunc ``.at`` methods (np.add.at: unbuffered, slow) that ``run()`` calls."""
    seen = []

    def watch(frame, event, function):
        owner = getattr(function, "__self__", None)
        if event == "c_call" and function.__name__ == "at" and isinstance(owner, np.ufunc):
            seen.append(owner.__name__)

    sys.setprofile(watch)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen


def test_no_ufunc_at_in_any_backward():
    # Overlapping windows are where a scatter-add is tempting: dilated grouped conv, k3/s1 pooling
    # (and k2/s2 pooling, whose max-pool backward takes another path).
    conv = next(cfg for cfg in CONV_GRID if cfg.name == "everything")
    pools = [cfg for cfg in POOL_GRID if cfg.name in ("k3-s1-p1", "k2")]

    def run():
        conv2d_results(*conv.inputs(), "im2col", **conv.kwargs())
        for op, pool in itertools.product(POOL_OPS, pools):
            pool2d_results(op, *pool.inputs(), "im2col", **pool.kwargs())

    assert ufunc_at_calls(lambda: np.add.at(np.zeros(2), [0, 0], 1.0)) == ["add"]  # the watch sees one
    assert ufunc_at_calls(run) == []
