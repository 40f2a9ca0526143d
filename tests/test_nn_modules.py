"""nn modules: gradient checks in float64, parameter walking, modes, state, repr, and a PyTorch oracle."""
import numpy as np
import pytest

import nn
from fastconv.cases import tolerance
from nn.gradient_check import eval_numerical_gradient_array, rel_error

F64 = np.float64
LAYER_GRADIENT = tolerance("layer-gradient")


def check_module(module, x, tol=LAYER_GRADIENT, seed=0):
    """The module's dx and every Parameter.grad against numerical gradients of sum(module(x) * dout)."""
    dout = np.random.default_rng(seed).standard_normal(module(x).shape)
    module.zero_grad()
    module(x)
    dx = module.backward(dout)
    assert rel_error(dx, eval_numerical_gradient_array(module, x, dout)) <= tol
    for name, param in module.named_parameters():
        analytic = param.grad.copy()
        numeric = eval_numerical_gradient_array(lambda _: module(x), param.data, dout)
        assert rel_error(analytic, numeric) <= tol, name


def watch_conv_dx_skips(monkeypatch):
    """A list that gets, for every conv backward call from here on, whether it skipped its input gradient."""
    skipped = []
    real = nn.modules.fastconv.conv2d_backward
    monkeypatch.setattr(nn.modules.fastconv, "conv2d_backward",
                        lambda d, c, need_dx=True: skipped.append(not need_dx) or real(d, c, need_dx=need_dx))
    return skipped


@pytest.mark.parametrize("make_module,x_shape", [
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64, rng=0), (2, 2, 5, 5)),
    (lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2, bias=False, dtype=F64, rng=0), (1, 4, 6, 6)),
    (lambda: nn.Linear(6, 4, dtype=F64, rng=0), (3, 2, 3)),
    (lambda: nn.ReLU(), (3, 4)),
    (lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    (lambda: nn.BatchNorm1d(4, dtype=F64), (5, 4)),
    (lambda: nn.BatchNorm2d(2, dtype=F64), (3, 2, 3, 3)),
    (lambda: nn.Flatten(), (2, 3, 2)),
], ids=["conv", "conv-dil-groups", "linear", "relu", "maxpool", "avgpool", "bn1d", "bn2d", "flatten"])
def test_module_gradients(make_module, x_shape):
    x = np.random.default_rng(1).standard_normal(x_shape) * 2 + 0.5
    check_module(make_module(), x)


def test_batchnorm_eval_mode_gradient():
    bn = nn.BatchNorm1d(3, dtype=F64)
    bn(np.random.default_rng(0).standard_normal((8, 3)) * 3 + 1)  # move the running statistics
    check_module(bn.eval(), np.random.default_rng(2).standard_normal((4, 3)))


def test_dropout_gradient_and_modes():
    drop = nn.Dropout(0.4, rng=0)
    x = np.random.default_rng(0).standard_normal((50, 40))
    out = drop(x)
    assert 0.5 < (out != 0).mean() < 0.7
    np.testing.assert_allclose(drop.backward(np.ones_like(x)), (out != 0) / 0.6)
    # numerically: a fresh module with the same rng draws the same first mask
    small, dout = x[:3, :4].copy(), np.random.default_rng(1).standard_normal((3, 4))
    drop = nn.Dropout(0.4, rng=5)
    drop(small)
    numeric = eval_numerical_gradient_array(lambda v: nn.Dropout(0.4, rng=5)(v), small, dout)
    assert rel_error(drop.backward(dout), numeric) <= LAYER_GRADIENT
    assert drop.eval()(x) is x
    np.testing.assert_array_equal(drop.backward(x), x)
    with pytest.raises(ValueError, match="drop probability"):
        nn.Dropout(1.0)


def test_sequential_gradients_through_every_kind_of_layer():
    model = nn.Sequential(
        # no bias before batchnorm: its gradient is exactly zero, which rel_error cannot compare
        nn.Conv2d(1, 2, 3, padding=1, bias=False, dtype=F64, rng=0), nn.BatchNorm2d(2, dtype=F64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 5, dtype=F64, rng=1), nn.Dropout(0.3, rng=0).eval(),
        nn.ReLU(), nn.Linear(5, 3, dtype=F64, rng=2))
    check_module(model, np.random.default_rng(3).standard_normal((3, 1, 4, 4)))


@pytest.mark.parametrize("first", ["conv", "linear", "relu"])
def test_sequential_without_input_gradient_keeps_every_parameter_gradient(first, monkeypatch):
    head = {"conv": nn.Conv2d(2, 3, 3, padding=1, dtype=F64, rng=0), "linear": nn.Flatten(), "relu": nn.ReLU()}[first]
    model = nn.Sequential(head, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16 if first == "conv" else 32, 4,
                                                                    dtype=F64, rng=1))
    x = np.random.default_rng(3).standard_normal((3, 2, 4, 4))
    dout = np.random.default_rng(4).standard_normal((3, 4))
    model.zero_grad()
    model(x)
    assert model.backward(dout) is not None
    expected = {name: p.grad.copy() for name, p in model.named_parameters()}
    skipped = watch_conv_dx_skips(monkeypatch)
    model.zero_grad()
    model(x)
    assert model.backward(dout, need_dx=False) is None
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, expected[name], err_msg=name)
    assert skipped == ([True] if first == "conv" else [])  # a first conv skips its dx
    empty = nn.Sequential()
    assert empty(x) is x and empty.backward(dout, need_dx=False) is None and empty.backward(dout) is dout


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss("sum")])
def test_loss_module_gradients(loss):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 3))
    target = rng.integers(0, 3, 4) if isinstance(loss, nn.CrossEntropyLoss) else rng.standard_normal((4, 3))
    loss(scores, target)
    analytic = loss.backward(2.0)
    numeric = eval_numerical_gradient_array(lambda s: loss(s, target), scores, 2.0)
    assert rel_error(analytic, numeric) <= LAYER_GRADIENT


def test_mse_value():
    assert nn.MSELoss()(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == pytest.approx(2.5)


def test_parameters_are_found_by_walking_attributes():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, rng=0)
            self.heads = [nn.Linear(2, 2, rng=0), nn.Linear(2, 1, bias=False, rng=0)]

        def forward(self, x):
            return x

        def backward(self, dout):
            return dout

    model = nn.Sequential(Block(), nn.BatchNorm1d(3))
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.conv.weight", "0.conv.bias", "0.heads.0.weight", "0.heads.0.bias", "0.heads.1.weight",
                     "1.weight", "1.bias"]
    assert [name for name, _ in model.named_buffers()] == ["1.running_mean", "1.running_var"]
    assert all(isinstance(p, nn.Parameter) and p.grad.shape == p.data.shape for p in model.parameters())
    for p in model.parameters():
        p.grad += 1
    model.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


def test_train_eval_propagates():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(3)))
    assert model.eval() is model
    assert not model[1][0].training and not model[1][1].training
    model.train()
    assert model[1][1].training


def test_batchnorm_running_statistics_follow_pytorch_momentum():
    bn = nn.BatchNorm1d(2, momentum=0.1, dtype=F64)
    x = np.random.default_rng(0).standard_normal((10, 2)) + 3
    bn(x)
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * x.var(axis=0))


def test_state_dict_round_trip_and_mismatch():
    make = lambda seed: nn.Sequential(nn.Conv2d(1, 2, 3, rng=seed), nn.BatchNorm2d(2))  # noqa: E731
    source, target = make(0), make(1)
    source(np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32))
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    with pytest.raises(ValueError, match="missing"):
        target.load_state_dict({"0.weight": source[0].weight.data})
    bad = source.state_dict()
    bad["0.weight"] = np.zeros((3, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        target.load_state_dict(bad)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.ReLU().backward(np.ones(3))


def test_repr_like_pytorch():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, backend="naive"), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(128, 10), nn.Dropout(0.25))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), backend='naive')\n"
        "  (1): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (2): Flatten()\n"
        "  (3): Linear(in_features=128, out_features=10, bias=True)\n"
        "  (4): Dropout(p=0.25)\n"
        ")")


def test_conv_and_pool_modules_take_a_backend(fast_backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0, backend="naive"), nn.AvgPool2d(2, backend="naive"))
    chosen = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0, backend=fast_backend), nn.AvgPool2d(2, backend=fast_backend))
    out = chosen(x)
    assert [module._cache.backend for module in chosen] == [fast_backend, fast_backend]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(x), **tolerance("module-float32"))


def test_matches_pytorch():
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=F64, rng=0), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 4, dtype=F64, rng=1))
    ref = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    y = np.array([1, 3])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(model(x), y)
    model.zero_grad()
    model.backward(loss_fn.backward())
    x_t = torch.from_numpy(x)
    ref_loss = torch.nn.functional.cross_entropy(ref(x_t), torch.from_numpy(y))
    ref_loss.backward()
    assert loss == pytest.approx(ref_loss.item(), rel=tolerance("loss-float64"))
    for (name, p), (ref_name, ref_p) in zip(model.named_parameters(), ref.named_parameters()):
        assert name == ref_name
        np.testing.assert_allclose(p.grad, ref_p.grad.numpy(), **tolerance("torch-gradient-float64"))
