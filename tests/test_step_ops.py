"""The rest of a training step (ReLU, affine, batch norm, softmax cross-entropy, optimizer updates) on
every backend: against the naive reference, numeric gradients and PyTorch; layouts, errors, threads."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv.cases import assert_close, assert_results_close, tolerance
from nn.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

BN_SHAPES = [(6, 5), (4, 3, 7), (3, 4, 5, 6), (2, 3, 33, 17)]


def bn_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    return (x, rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype),
            rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype),
            rng.standard_normal(shape).astype(dtype))


def bn_all(backend, x, gamma, beta, rmean, rvar, dout, training, activation):
    rmean, rvar = rmean.copy(), rvar.copy()
    out, cache = fastconv.batch_norm_forward(x, gamma, beta, rmean, rvar, training, momentum=0.2,
                                             activation=activation, backend=backend)
    return (out, *fastconv.batch_norm_backward(dout, cache), rmean, rvar)


def loss_tolerance(dtype) -> float:
    return tolerance(f"loss-{np.dtype(dtype).name}")


# --- every fast backend against the reference -------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 5), (0, 3), (70000,)])
def test_relu_matches_reference(fast_backend, dtype, shape):
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    results = {}
    for name in (fast_backend, "naive"):
        out, cache = fastconv.relu_forward(x, backend=name)
        results[name] = (out, fastconv.relu_backward(dout, cache))
    assert_results_close(results[fast_backend], results["naive"])


def test_relu_keeps_nan_and_zeroes_negative_zero(backend):
    x = np.array([np.nan, -0.0, 0.0, -1.0, 2.0, np.inf, -np.inf])
    out, cache = fastconv.relu_forward(x, backend=backend)
    np.testing.assert_array_equal(out, [np.nan, 0, 0, 0, 2, np.inf, 0])
    assert not np.signbit(out[1])
    np.testing.assert_array_equal(fastconv.relu_backward(np.ones(7), cache), [0, 0, 0, 0, 1, 1, 0])


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_batch_norm_matches_reference(fast_backend, dtype, shape, training, activation):
    inputs = bn_inputs(shape, dtype)
    assert_results_close(bn_all(fast_backend, *inputs, training, activation),
                         bn_all("naive", *inputs, training, activation))


@pytest.mark.parametrize("transposed", [False, True], ids=["w", "w.T-view"])
@pytest.mark.parametrize("shape", [(7, 3, 4, 5), (1, 9), (33, 130)])
def test_affine_matches_reference(fast_backend, dtype, shape, transposed):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    depth = int(np.prod(shape[1:]))
    w = rng.standard_normal((depth, 11)).astype(dtype)
    if transposed:  # the (M, D) weight of nn.Linear, passed as its transpose
        w = np.ascontiguousarray(w.T).T
    b, dout = rng.standard_normal(11).astype(dtype), rng.standard_normal((shape[0], 11)).astype(dtype)
    results = {}
    for name in (fast_backend, "naive"):
        out, cache = fastconv.affine_forward(x, w, b, backend=name)
        results[name] = (out, *fastconv.affine_backward(dout, cache))
    assert_results_close(results[fast_backend], results["naive"])
    for name, (_, _, dw, _) in results.items():
        assert dw.flags.f_contiguous == transposed, name  # dw keeps w's memory order


def test_affine_without_bias_and_empty_batch(backend, dtype):
    w = np.ones((4, 3), dtype)
    out, cache = fastconv.affine_forward(np.zeros((0, 2, 2), dtype), w, None, backend=backend)
    dx, dw, db = fastconv.affine_backward(np.zeros((0, 3), dtype), cache)
    assert out.shape == (0, 3) and dx.shape == (0, 2, 2) and db is None
    np.testing.assert_array_equal(dw, 0)


@pytest.mark.parametrize("shape", [(50, 10), (3, 1), (0, 4), (200, 1000)])
def test_softmax_cross_entropy_matches_reference(fast_backend, dtype, shape):
    rng = np.random.default_rng(3)
    scores = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    got = fastconv.softmax_cross_entropy(scores, y, backend=fast_backend)
    want = fastconv.softmax_cross_entropy(scores, y, backend="naive")
    for loss, dscores in (got, want):
        assert dscores.dtype == dtype and dscores.shape == shape
        assert np.isnan(loss) if shape[0] == 0 else np.isfinite(loss)
    if shape[0]:
        assert got[0] == pytest.approx(want[0], rel=loss_tolerance(dtype))
        assert_close(got[1], want[1])


def test_softmax_cross_entropy_is_stable_for_huge_scores(backend):
    loss, dscores = fastconv.softmax_cross_entropy(np.array([[1e4, 0.0, -1e4]], np.float32), np.array([1]),
                                                   backend=backend)
    assert loss == pytest.approx(1e4) and np.all(np.isfinite(dscores))


UPDATES = {
    "sgd_update": ([], dict(learning_rate=0.1)),
    "sgd_momentum_update": (["velocity"], dict(learning_rate=0.1, momentum=0.8)),
    "rmsprop_update": (["cache"], dict(learning_rate=0.01, decay_rate=0.9, epsilon=1e-6)),
    "adam_update": (["m", "v"], dict(learning_rate=0.01, beta1=0.8, beta2=0.99, epsilon=1e-6)),
}


def run_updates(rule, backend, dtype, shape=(17, 1031), steps=3):
    rng = np.random.default_rng(4)
    states, hyper = UPDATES[rule]
    w = rng.standard_normal(shape).astype(dtype)
    state = [np.abs(rng.standard_normal(shape)).astype(dtype) for _ in states]
    for t in range(1, steps + 1):
        dw = rng.standard_normal(shape).astype(dtype)
        extra = [t] if rule == "adam_update" else []
        getattr(fastconv, rule)(w, dw, *state, *extra, backend=backend, **hyper)
    return w, *state


@pytest.mark.parametrize("rule", UPDATES)
def test_updates_match_reference(fast_backend, dtype, rule):
    assert_results_close(run_updates(rule, fast_backend, dtype), run_updates(rule, "naive", dtype))


# --- numeric gradients (float64, the reference and every backend) -----------------------------

GRADIENT = tolerance("step-gradient")


@pytest.mark.parametrize("shape", BN_SHAPES[:3])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_batch_norm_gradients_are_numerically_right(backend, shape, training, activation):
    x, gamma, beta, rmean, rvar, dout = bn_inputs(shape, np.float64, seed=5)

    def forward(x, gamma, beta):
        return fastconv.batch_norm_forward(x, gamma, beta, rmean.copy(), rvar.copy(), training,
                                           activation=activation, backend=backend)[0]

    _, cache = fastconv.batch_norm_forward(x, gamma, beta, rmean.copy(), rvar.copy(), training,
                                           activation=activation, backend=backend)
    analytic = fastconv.batch_norm_backward(dout, cache)
    for index, value in enumerate((x, gamma, beta)):
        def f(v, index=index):
            args = [x, gamma, beta]
            args[index] = v
            return forward(*args)
        assert rel_error(analytic[index], eval_numerical_gradient_array(f, value, dout)) < GRADIENT


def test_affine_relu_and_loss_gradients_are_numerically_right(backend):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((4, 5))
    _, cache = fastconv.affine_forward(x, w, b, backend=backend)
    dx, dw, db = fastconv.affine_backward(dout, cache)
    for got, value, index in ((dx, x, 0), (dw, w, 1), (db, b, 2)):
        def f(v, index=index):
            args = [x, w, b]
            args[index] = v
            return fastconv.affine_forward(*args, backend=backend)[0]
        assert rel_error(got, eval_numerical_gradient_array(f, value, dout)) < GRADIENT
    z = rng.standard_normal((3, 4)) + 0.1
    _, relu_cache = fastconv.relu_forward(z, backend=backend)
    numeric = eval_numerical_gradient_array(lambda v: fastconv.relu_forward(v, backend=backend)[0], z, dout[:3, :4])
    assert rel_error(fastconv.relu_backward(dout[:3, :4], relu_cache), numeric) < GRADIENT
    scores, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    _, dscores = fastconv.softmax_cross_entropy(scores, y, backend=backend)
    numeric = eval_numerical_gradient(lambda s: fastconv.softmax_cross_entropy(s, y, backend=backend)[0], scores,
                                      verbose=False)
    assert rel_error(dscores, numeric) < GRADIENT


def test_conv_with_fused_relu_gradients_are_numerically_right(backend):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dout = rng.standard_normal((2, 4, 6, 6))
    out, cache = fastconv.conv2d_forward(x, w, b, 1, 1, backend=backend, activation="relu")
    assert (out >= 0).all() and (out == 0).any()
    analytic = fastconv.conv2d_backward(dout, cache)
    for index, value in enumerate((x, w, b)):
        def f(v, index=index):
            args = [x, w, b]
            args[index] = v
            return fastconv.conv2d_forward(*args, 1, 1, backend=backend, activation="relu")[0]
        assert rel_error(analytic[index], eval_numerical_gradient_array(f, value, dout)) < GRADIENT


# --- PyTorch as the independent oracle ----------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_matches_torch(backend, dtype, shape, training):
    torch = pytest.importorskip("torch")
    x, gamma, beta, rmean, rvar, dout = bn_inputs(shape, dtype, seed=8)
    ours = bn_all(backend, x, gamma, beta, rmean, rvar, dout, training, "relu")
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    trm, trv = torch.tensor(rmean), torch.tensor(rvar)
    out = torch.relu(torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training, momentum=0.2, eps=1e-5))
    out.backward(torch.tensor(dout))
    theirs = (out.detach().numpy(), tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy(), trm.numpy(), trv.numpy())
    assert_results_close(ours, theirs)


def test_affine_and_loss_match_torch(backend, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((8, 3, 5), (10, 15), (10,)))
    y = rng.integers(0, 10, 8)
    out, cache = fastconv.affine_forward(x, w.T, b, backend=backend)  # torch's (out, in) weight
    loss, dscores = fastconv.softmax_cross_entropy(out, y, backend=backend)
    dx, dwt, db = fastconv.affine_backward(dscores, cache)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = torch.nn.functional.linear(tx.reshape(8, -1), tw, tb)
    tloss = torch.nn.functional.cross_entropy(tout, torch.tensor(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=loss_tolerance(dtype))
    assert_results_close((out, dx, dwt.T, db),
                         (tout.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()))


@pytest.mark.parametrize("rule", UPDATES)
def test_updates_match_torch_optimizers(backend, dtype, rule):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    w0, grads = rng.standard_normal(300).astype(dtype), [rng.standard_normal(300).astype(dtype) for _ in range(4)]
    states, hyper = UPDATES[rule]
    w, state = w0.copy(), [np.zeros_like(w0) for _ in states]
    for t, g in enumerate(grads, 1):
        getattr(fastconv, rule)(w, g, *state, *([t] if rule == "adam_update" else []), backend=backend, **hyper)
    param = torch.nn.Parameter(torch.tensor(w0))
    lr = hyper["learning_rate"]
    optimizer = {
        "sgd_update": lambda: torch.optim.SGD([param], lr=lr),
        # CS231n's velocity is -lr times PyTorch's momentum buffer: the same steps for a fixed lr
        "sgd_momentum_update": lambda: torch.optim.SGD([param], lr=lr, momentum=hyper.get("momentum", 0)),
        "rmsprop_update": lambda: torch.optim.RMSprop([param], lr=lr, alpha=hyper.get("decay_rate", 0),
                                                      eps=hyper.get("epsilon", 0)),
        "adam_update": lambda: torch.optim.Adam([param], lr=lr, betas=(hyper.get("beta1", 0), hyper.get("beta2", 0)),
                                                eps=hyper.get("epsilon", 0)),
    }[rule]()
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    assert_close(w, param.detach().numpy())


# --- layouts, inputs left alone, errors, threads ------------------------------------------------

def test_any_layout_and_read_only_inputs_give_the_same_result(backend, dtype):
    x, gamma, beta, rmean, rvar, dout = bn_inputs((4, 3, 6, 5), dtype, seed=11)
    expected = bn_all(backend, x, gamma, beta, rmean, rvar, dout, True, "relu")
    odd = np.asfortranarray(x)
    strided = np.zeros((8, 3, 6, 5), dtype)[::2]
    strided[...] = x
    for variant in (odd, strided, x.astype(x.dtype.newbyteorder(">"))):
        kept = variant.copy()
        variant.flags.writeable = False
        assert_results_close(bn_all(backend, variant, gamma, beta, rmean, rvar, dout, True, "relu"), expected)
        np.testing.assert_array_equal(variant, kept)


def test_inputs_are_never_modified_except_the_updated_ones(backend):
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal((5, 6)) for _ in range(3)]
    before = [a.copy() for a in arrays]
    out, cache = fastconv.relu_forward(arrays[0], backend=backend)
    fastconv.relu_backward(arrays[1], cache)
    fastconv.relu_backward(arrays[1], cache)  # backward twice: the same answer
    fastconv.softmax_cross_entropy(arrays[2], np.arange(5), backend=backend)
    assert_results_close(arrays, before, exact=True)
    w, dw = arrays[0].copy(), arrays[1]
    fastconv.sgd_update(w, dw, 0.5, backend=backend)
    np.testing.assert_array_equal(dw, before[1])
    np.testing.assert_allclose(w, before[0] - 0.5 * before[1])


ERRORS = [
    (lambda: fastconv.relu_forward([1.0, 2.0]), TypeError, "x must be a numpy.ndarray"),
    (lambda: fastconv.relu_forward(np.arange(3)), TypeError, "x must have dtype float32 or float64"),
    (lambda: fastconv.relu_backward(np.ones(3), None), TypeError, "cache must be the cache returned by relu"),
    (lambda: fastconv.relu_backward(np.ones(4), fastconv.relu_forward(np.ones(3))[1]), ValueError, "dout must have"),
    (lambda: fastconv.affine_forward(np.ones((2, 3)), np.ones((4, 5))), ValueError, r"w must have shape \(D, M\)"),
    (lambda: fastconv.affine_forward(np.ones((2, 3)), np.ones((3, 5)), np.ones(4)), ValueError, "b must have shape"),
    (lambda: fastconv.affine_forward(np.ones((2, 3)), np.ones((3, 5), np.float32)), TypeError, "dtype"),
    (lambda: fastconv.batch_norm_forward(np.ones(3)), ValueError, "x must be 2-D"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), np.ones(2)), ValueError, r"gamma must have shape \(C,\)"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), running_mean=np.zeros(3)), ValueError, "together"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), training=False), ValueError, "needs running_mean"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), momentum=2), ValueError, "momentum must be"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), eps=0), ValueError, "eps must be"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), training="yes"), TypeError, "training must be a bool"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), activation="tanh"), ValueError, "activation must be"),
    (lambda: fastconv.batch_norm_forward(np.ones((1, 3)), running_mean=np.zeros(3), running_var=np.ones(3)),
     ValueError, "more than one value per channel"),
    (lambda: fastconv.batch_norm_forward(np.ones((2, 3)), running_mean=np.zeros(3)[::-1], running_var=np.ones(3)),
     ValueError, "running_mean must be a writable, C-contiguous"),
    (lambda: fastconv.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), activation=1), TypeError,
     "activation must be"),
    (lambda: fastconv.softmax_cross_entropy(np.ones((2, 3)), np.array([0, 3])), ValueError, "labels must be in"),
    (lambda: fastconv.softmax_cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0])), TypeError, "integers"),
    (lambda: fastconv.softmax_cross_entropy(np.ones((2, 3)), np.array([0])), ValueError, r"y must have shape"),
    (lambda: fastconv.sgd_update(np.ones(3)[::2], np.ones(2)), ValueError, "w must be a writable, C-contiguous"),
    (lambda: fastconv.sgd_update(np.ones(3), np.ones(4)), ValueError, "dw must have w's shape"),
    (lambda: fastconv.sgd_update(np.ones(3), np.ones(3, np.float32)), TypeError, "dw has dtype"),
    (lambda: fastconv.sgd_update(np.ones(3), np.ones(3), learning_rate=float("nan")), ValueError, "learning_rate"),
    (lambda: fastconv.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 0), ValueError, "t must be"),
    (lambda: fastconv.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1.5), TypeError, "t must be"),
    (lambda: fastconv.adam_update(np.ones(3), np.ones(3), np.zeros(2), np.zeros(3), 1), ValueError,
     "m must have shape"),
    (lambda: fastconv.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1, beta1=1.0), ValueError,
     "beta1"),
]


@pytest.mark.parametrize("call, error, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_malformed_input_is_rejected_with_a_message_naming_it(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_read_only_parameter_cannot_be_updated():
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="w must be a writable"):
        fastconv.sgd_update(w, np.ones(3))


@pytest.mark.parametrize("threads", [1, 2])
def test_same_bits_from_any_thread_and_every_call(fast_backend, dtype, threads, restore_num_threads):
    fastconv.set_num_threads(threads)
    inputs = bn_inputs((16, 8, 40, 30), dtype, seed=13)
    rng = np.random.default_rng(14)
    x2, w = rng.standard_normal((64, 700)).astype(dtype), rng.standard_normal((700, 90)).astype(dtype)

    def run():
        out, cache = fastconv.affine_forward(x2, w, None, backend=fast_backend)
        return (*bn_all(fast_backend, *inputs, True, "relu"), out, *fastconv.affine_backward(out, cache)[:2])

    first = run()
    with ThreadPoolExecutor(max_workers=2) as pool:
        others = list(pool.map(lambda _: run(), range(3)))
    for result in [run(), *others]:
        assert_results_close(result, first, exact=True)
