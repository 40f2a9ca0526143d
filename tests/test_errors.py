"""The error contract: every malformed input gets a ValueError/TypeError naming the argument, before any
backend runs (so on every backend alike)."""
import numpy as np
import pytest

import fastconv

# The front validates before a backend runs, so any one backend speaks for all of them.
ANY_BACKEND = fastconv.available_backends()[0]

BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64, np.complex128, object]
if np.dtype(np.longdouble).itemsize > 8:  # float80/float128 where the platform has it
    BAD_DTYPES.append(np.longdouble)


def conv_args():
    """Valid conv2d arguments (groups=2) that each case below breaks in one place."""
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((2, 4, 6, 6)), w=rng.standard_normal((6, 2, 3, 3)),
                b=rng.standard_normal(6), stride=1, padding=1, dilation=1, groups=2)


def pool_args():
    return dict(x=np.random.default_rng(0).standard_normal((2, 3, 6, 6)), kernel_size=2, stride=None, padding=0)


CONV_CASES = {
    # shapes and values -> ValueError
    "x-3d": (dict(x=np.zeros((4, 6, 6))), ValueError, r"x must be 4-D, got 3-D"),
    "x-5d": (dict(x=np.zeros((1, 2, 4, 6, 6))), ValueError, r"x must be 4-D, got 5-D"),
    "w-3d": (dict(w=np.zeros((6, 2, 3))), ValueError, r"w must be 4-D, got 3-D"),
    "x-no-channels": (dict(x=np.zeros((2, 0, 6, 6))), ValueError, r"x must have C, H, W >= 1"),
    "x-no-rows": (dict(x=np.zeros((2, 4, 0, 6))), ValueError, r"x must have C, H, W >= 1"),
    "w-no-filters": (dict(w=np.zeros((0, 2, 3, 3))), ValueError, r"w must have every dimension >= 1"),
    "channel-mismatch": (dict(w=np.zeros((6, 3, 3, 3))), ValueError, r"w must have shape \(F, C // groups"),
    "channels-not-divisible-by-groups": (dict(groups=3), ValueError, r"x channels \(4\).*groups \(3\)"),
    "filters-not-divisible-by-groups": (dict(groups=4, w=np.zeros((6, 1, 3, 3))), ValueError,
                                        r"w filters \(6\).*groups \(4\)"),
    "groups-zero": (dict(groups=0), ValueError, r"groups must be >= 1, got 0"),
    "bias-length": (dict(b=np.zeros(5)), ValueError, r"b must have shape \(F,\) = \(6,\), got \(5,\)"),
    "bias-2d": (dict(b=np.zeros((6, 1))), ValueError, r"b must have shape \(F,\)"),
    "stride-zero": (dict(stride=0), ValueError, r"stride must be >= 1, got 0"),
    "stride-pair-zero": (dict(stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    "stride-three-values": (dict(stride=(1, 1, 1)), ValueError, r"stride must be an int or a pair"),
    "dilation-zero": (dict(dilation=0), ValueError, r"dilation must be >= 1, got 0"),
    "dilation-negative": (dict(dilation=(2, -1)), ValueError, r"dilation must be >= 1"),
    "padding-negative": (dict(padding=-1), ValueError, r"padding must be >= 0, got -1"),
    "padding-pair-negative": (dict(padding=(0, -2)), ValueError, r"padding must be >= 0"),
    "kernel-over-padded-input": (dict(w=np.zeros((6, 2, 9, 3))), ValueError,
                                 r"kernel .* larger than the padded input \(8x8\)"),
    "dilated-kernel-over-padded-input": (dict(dilation=4), ValueError, r"kernel \(dilated extent 9x9\)"),
    # types -> TypeError
    "x-list": (dict(x=np.zeros((2, 4, 6, 6)).tolist()), TypeError, r"x must be a numpy.ndarray, got list"),
    "w-list": (dict(w=np.zeros((6, 2, 3, 3)).tolist()), TypeError, r"w must be a numpy.ndarray, got list"),
    "b-list": (dict(b=[0.0] * 6), TypeError, r"b must be a numpy.ndarray, got list"),
    "x-scalar": (dict(x=1.0), TypeError, r"x must be a numpy.ndarray, got float"),
    "w-float32-x-float64": (dict(w=np.zeros((6, 2, 3, 3), np.float32)), TypeError,
                            r"w has dtype float32 but x has dtype float64"),
    "b-float32-x-float64": (dict(b=np.zeros(6, np.float32)), TypeError, r"b has dtype float32 but x"),
    "stride-float": (dict(stride=1.0), TypeError, r"stride must be an int or a pair of ints, got 1.0"),
    "stride-bool": (dict(stride=True), TypeError, r"stride must be an int"),
    "stride-str": (dict(stride="1"), TypeError, r"stride must be an int"),
    "stride-none": (dict(stride=None), TypeError, r"stride must be an int"),
    "stride-pair-with-float": (dict(stride=(1, 1.5)), TypeError, r"stride must be an int"),
    "stride-numpy-float": (dict(stride=np.float64(2)), TypeError, r"stride must be an int"),
    "padding-float": (dict(padding=0.5), TypeError, r"padding must be an int"),
    "padding-bool": (dict(padding=False), TypeError, r"padding must be an int"),
    "dilation-float": (dict(dilation=(1.0, 1)), TypeError, r"dilation must be an int"),
    "groups-float": (dict(groups=2.0), TypeError, r"groups must be an int"),
    "groups-bool": (dict(groups=True), TypeError, r"groups must be an int"),
}

POOL_CASES = {
    "x-3d": (dict(x=np.zeros((3, 6, 6))), ValueError, r"x must be 4-D, got 3-D"),
    "x-no-columns": (dict(x=np.zeros((2, 3, 6, 0))), ValueError, r"x must have C, H, W >= 1"),
    "kernel-zero": (dict(kernel_size=0), ValueError, r"kernel_size must be >= 1, got 0"),
    "kernel-three-values": (dict(kernel_size=(2, 2, 2)), ValueError, r"kernel_size must be an int or a pair"),
    "stride-zero": (dict(stride=0), ValueError, r"stride must be >= 1, got 0"),
    "stride-pair-zero": (dict(stride=(0, 2)), ValueError, r"stride must be >= 1"),
    "padding-negative": (dict(padding=-1), ValueError, r"padding must be >= 0, got -1"),
    "padding-over-half-kernel": (dict(kernel_size=3, padding=2), ValueError,
                                 r"padding must be at most half of kernel_size \(3, 3\), got \(2, 2\)"),
    "padding-pair-over-half-kernel": (dict(kernel_size=(2, 3), padding=(1, 2)), ValueError,
                                      r"padding must be at most half of kernel_size"),
    "kernel-over-padded-input": (dict(kernel_size=(7, 2)), ValueError,
                                 r"kernel_size \(7, 2\) is larger than the padded input \(6x6\)"),
    "x-list": (dict(x=np.zeros((2, 3, 6, 6)).tolist()), TypeError, r"x must be a numpy.ndarray, got list"),
    "kernel-float": (dict(kernel_size=2.0), TypeError, r"kernel_size must be an int"),
    "kernel-none": (dict(kernel_size=None), TypeError, r"kernel_size must be an int"),
    "kernel-bool": (dict(kernel_size=True), TypeError, r"kernel_size must be an int"),
    "stride-float": (dict(stride=(2, 2.0)), TypeError, r"stride must be an int"),
    "stride-bool": (dict(stride=True), TypeError, r"stride must be an int"),
    "padding-float": (dict(padding=1.0), TypeError, r"padding must be an int"),
}

POOL_FORWARDS = {"max_pool2d": fastconv.max_pool2d_forward, "avg_pool2d": fastconv.avg_pool2d_forward}
POOL_BACKWARDS = {"max_pool2d": fastconv.max_pool2d_backward, "avg_pool2d": fastconv.avg_pool2d_backward}


# Validation runs in the front, before a backend is chosen or called: each rejection below is
# checked once, with the kernel_calls spy showing that no backend kernel ran.

@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_rejects(kernel_calls, case):
    overrides, error, match = CONV_CASES[case]
    with pytest.raises(error, match=match):
        fastconv.conv2d_forward(**{**conv_args(), **overrides}, backend=ANY_BACKEND)
    assert kernel_calls == []


@pytest.mark.parametrize("op", POOL_FORWARDS)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool2d_forward_rejects(kernel_calls, op, case):
    overrides, error, match = POOL_CASES[case]
    with pytest.raises(error, match=match):
        POOL_FORWARDS[op](**{**pool_args(), **overrides}, backend=ANY_BACKEND)
    assert kernel_calls == []


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ("x", "w", "b"))
def test_conv2d_rejects_non_float_dtypes(kernel_calls, name, bad):
    args = conv_args()
    args[name] = args[name].astype(bad)
    with pytest.raises(TypeError, match=rf"{name} must have dtype float32 or float64, got {np.dtype(bad)}"):
        fastconv.conv2d_forward(**args, backend=ANY_BACKEND)
    assert kernel_calls == []


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", POOL_FORWARDS)
def test_pool2d_rejects_non_float_dtypes(kernel_calls, op, bad):
    x = pool_args()["x"].astype(bad)
    with pytest.raises(TypeError, match=rf"x must have dtype float32 or float64, got {np.dtype(bad)}"):
        POOL_FORWARDS[op](x, 2, backend=ANY_BACKEND)
    assert kernel_calls == []


def test_structured_and_non_native_integer_dtypes_rejected(kernel_calls):
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        fastconv.max_pool2d_forward(np.zeros((1, 1, 2, 2), dtype=[("a", "f8")]), 2)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        fastconv.max_pool2d_forward(np.zeros((1, 1, 2, 2), ">i4"), 2)
    assert kernel_calls == []


def bad_douts(out_shape, dtype):
    """(dout, error, match) that no backward may accept for a forward output of ``out_shape``."""
    n, c, h, w = out_shape
    return [
        (np.zeros((n, c, h, w + 1), dtype), ValueError, r"dout must have the forward output's shape"),
        (np.zeros((n + 1, c, h, w), dtype), ValueError, r"dout must have the forward output's shape"),
        (np.zeros((n, c, h * w), dtype), ValueError, r"dout must be 4-D, got 3-D"),
        (np.zeros(out_shape, np.float32), TypeError, r"dout has dtype float32 but the forward pass used float64"),
        (np.zeros(out_shape, np.int64), TypeError, r"dout must have dtype float32 or float64, got int64"),
        (np.zeros(out_shape).tolist(), TypeError, r"dout must be a numpy.ndarray, got list"),
        (None, TypeError, r"dout must be a numpy.ndarray, got NoneType"),
    ]


def test_conv2d_backward_rejects_bad_dout(kernel_calls):
    out, cache = fastconv.conv2d_forward(**conv_args(), backend=ANY_BACKEND)
    kernel_calls.clear()
    for dout, error, match in bad_douts(out.shape, out.dtype):
        with pytest.raises(error, match=match):
            fastconv.conv2d_backward(dout, cache)
    assert kernel_calls == []


def test_conv2d_backward_need_dx_is_a_bool(kernel_calls):
    out, cache = fastconv.conv2d_forward(**conv_args(), backend=ANY_BACKEND)
    kernel_calls.clear()
    for bad in (1, 0, "no", None, np.array([True])):
        with pytest.raises(TypeError, match=r"need_dx must be True or False"):
            fastconv.conv2d_backward(np.ones_like(out), cache, need_dx=bad)
    assert kernel_calls == []


def test_conv2d_backward_without_dx_on_an_empty_batch():
    args = conv_args()
    args["x"] = args["x"][:0]
    out, cache = fastconv.conv2d_forward(**args, backend=ANY_BACKEND)
    dx, dw, db = fastconv.conv2d_backward(out, cache, need_dx=False)
    assert dx is None and not dw.any() and dw.shape == args["w"].shape


@pytest.mark.parametrize("op", POOL_FORWARDS)
def test_pool2d_backward_rejects_bad_dout(kernel_calls, op):
    out, cache = POOL_FORWARDS[op](**pool_args(), backend=ANY_BACKEND)
    kernel_calls.clear()
    for dout, error, match in bad_douts(out.shape, out.dtype):
        with pytest.raises(error, match=match):
            POOL_BACKWARDS[op](dout, cache)
    assert kernel_calls == []


def test_backward_rejects_wrong_cache(kernel_calls):
    conv_out, conv_cache = fastconv.conv2d_forward(**conv_args(), backend=ANY_BACKEND)
    max_out, max_cache = fastconv.max_pool2d_forward(**pool_args(), backend=ANY_BACKEND)
    avg_out, avg_cache = fastconv.avg_pool2d_forward(**pool_args(), backend=ANY_BACKEND)
    kernel_calls.clear()
    wrong = [
        (fastconv.conv2d_backward, conv_out, max_cache, "conv2d_forward"),
        (fastconv.conv2d_backward, conv_out, tuple(conv_cache), "conv2d_forward"),
        (fastconv.conv2d_backward, conv_out, None, "conv2d_forward"),
        (fastconv.max_pool2d_backward, max_out, avg_cache, "max_pool2d_forward"),
        (fastconv.max_pool2d_backward, max_out, conv_cache, "max_pool2d_forward"),
        (fastconv.avg_pool2d_backward, avg_out, max_cache, "avg_pool2d_forward"),
        (fastconv.avg_pool2d_backward, avg_out, {"x": 1}, "avg_pool2d_forward"),
    ]
    for backward, dout, cache, producer in wrong:
        with pytest.raises(TypeError, match=rf"cache must be the cache returned by {producer}"):
            backward(dout, cache)
    assert kernel_calls == []


def enter_backend(name):
    with fastconv.use_backend(name):
        pass


def test_unknown_backend_rejected_by_every_function():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 2, 2))
    calls = [lambda name: fastconv.conv2d_forward(x, w, backend=name),
             lambda name: fastconv.max_pool2d_forward(x, 2, backend=name),
             lambda name: fastconv.avg_pool2d_forward(x, 2, backend=name),
             fastconv.set_backend, enter_backend]
    for call in calls:
        with pytest.raises(ValueError, match=r"backend must be one of .*got 'nope'"):
            call("nope")
        with pytest.raises(TypeError, match=r"backend must be a str, got int"):
            call(3)
    assert fastconv.get_backend() == "auto"


def test_numpy_integer_arguments_accepted(kernel_calls):
    # numpy integers are integers: only floats and bools are refused; the backends get plain ints.
    args = {**conv_args(), "stride": np.int64(1), "padding": (np.int32(1), 1), "groups": np.int16(2)}
    out, _ = fastconv.conv2d_forward(**args, backend=ANY_BACKEND)
    assert out.shape == (2, 6, 6, 6)
    out, _ = fastconv.max_pool2d_forward(pool_args()["x"], np.array([2, 3]), stride=np.int8(1), backend=ANY_BACKEND)
    assert out.shape == (2, 3, 5, 4)
    assert [kernel for kernel, _ in kernel_calls] == ["conv2d_forward", "max_pool2d_forward"]
    for _, arguments in kernel_calls:
        assert all(type(value) is int for value in arguments["p"]), arguments["p"]
