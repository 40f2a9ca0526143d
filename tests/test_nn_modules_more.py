"""nn modules Identity, Sigmoid, Tanh, ModuleList, BCELoss, LayerNorm, GroupNorm, and optimizer weight decay."""
import numpy as np
import pytest

import nn
from fastconv.cases import tolerance
from nn import optim
from nn.gradient_check import eval_numerical_gradient_array, rel_error
from test_nn_modules import F64, LAYER_GRADIENT, check_module

F64_CLOSE = tolerance("float64")


def normal(shape, seed=0, dtype=F64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randomize_affine(module, seed=5):
    """Random weight and bias, so gradient checks see the affine part (not just 1 and 0)."""
    for offset, param in enumerate(module.parameters()):
        param.data = normal(param.data.shape, seed + offset, param.data.dtype)
    return module


# ----------------------------------------------------------------------------- references (the seeds' formulas)

def sigmoid_reference(z):
    return 1.0 / (1.0 + np.exp(-z))


def bce_reference(a, y):
    """Nielsen's cross-entropy cost ``-1/n sum[y ln a + (1 - y) ln(1 - a)]`` (for a strictly inside (0, 1))."""
    return -np.mean(y * np.log(a) + (1 - y) * np.log(1 - a))


def norm_reference(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("make_module,x_shape", [
    (lambda: nn.Identity(), (2, 3)),
    (lambda: nn.Sigmoid(), (3, 4)),
    (lambda: nn.Tanh(), (3, 4)),
    (lambda: randomize_affine(nn.LayerNorm(5, dtype=F64)), (3, 5)),
    (lambda: randomize_affine(nn.LayerNorm((2, 3), dtype=F64)), (2, 2, 2, 3)),
    (lambda: nn.LayerNorm(4, elementwise_affine=False), (3, 4)),
    (lambda: randomize_affine(nn.GroupNorm(2, 4, dtype=F64)), (2, 4, 2, 3)),
    (lambda: randomize_affine(nn.GroupNorm(3, 6, dtype=F64)), (2, 6, 3)),
    (lambda: nn.GroupNorm(1, 3, affine=False), (2, 3, 2, 2)),
], ids=["identity", "sigmoid", "tanh", "layernorm", "layernorm-2d", "layernorm-plain", "groupnorm",
        "groupnorm-3d", "groupnorm-plain"])
def test_module_gradients(make_module, x_shape):
    x = normal(x_shape, 1) * 2 + 0.5
    check_module(make_module(), x)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_gradient(reduction):
    rng = np.random.default_rng(0)
    p, y = rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0, 1, (4, 3))
    loss = nn.BCELoss(reduction)
    loss(p, y)
    analytic = loss.backward(2.0)
    numeric = eval_numerical_gradient_array(lambda q: loss(q, y), p, 2.0)
    assert rel_error(analytic, numeric) <= LAYER_GRADIENT


def test_sigmoid_then_bce_is_the_cross_entropy_delta():
    # Nielsen: with the cross-entropy cost the output delta is a - y (sigma' cancels)
    z, y = normal((5, 2)), np.random.default_rng(1).integers(0, 2, (5, 2)).astype(F64)
    sigmoid, loss = nn.Sigmoid(), nn.BCELoss("sum")
    loss(sigmoid(z), y)
    np.testing.assert_allclose(sigmoid.backward(loss.backward()), sigmoid_reference(z) - y, rtol=1e-12)


# ----------------------------------------------------------------------------- values against the seeds' formulas

def test_sigmoid_tanh_values_and_no_overflow():
    z = np.linspace(-30, 30, 13)
    np.testing.assert_allclose(nn.Sigmoid()(z), sigmoid_reference(z), rtol=1e-14)
    np.testing.assert_allclose(nn.Tanh()(z), np.tanh(z), rtol=1e-15)
    with np.errstate(over="raise", invalid="raise"):  # exp(-z) would overflow for z = -1000
        out = nn.Sigmoid()(np.array([-1000.0, 0.0, 1000.0], np.float32))
    np.testing.assert_array_equal(out, [0, 0.5, 1])


def test_bce_value_and_clamp():
    rng = np.random.default_rng(2)
    p, y = rng.uniform(0.01, 0.99, 7), rng.integers(0, 2, 7).astype(F64)
    assert nn.BCELoss()(p, y) == pytest.approx(bce_reference(p, y), rel=1e-12)
    assert nn.BCELoss("sum")(p, y) == pytest.approx(7 * bce_reference(p, y), rel=1e-12)
    # a confident wrong answer costs the clamped 100, not infinity
    assert nn.BCELoss("sum")(np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 1.0])) == 200.0


def test_norm_values():
    x = normal((3, 4, 2, 2), 3)
    ln = randomize_affine(nn.LayerNorm((2, 2), dtype=F64))
    expected = norm_reference(x, (2, 3)) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(x), expected, **F64_CLOSE)
    gn = randomize_affine(nn.GroupNorm(2, 4, dtype=F64))
    grouped = norm_reference(x.reshape(3, 2, 8), 2).reshape(x.shape)
    expected = grouped * gn.weight.data.reshape(1, 4, 1, 1) + gn.bias.data.reshape(1, 4, 1, 1)
    np.testing.assert_allclose(gn(x), expected, **F64_CLOSE)


@pytest.mark.parametrize("make_module", [nn.Identity, nn.Sigmoid, nn.Tanh, lambda: nn.LayerNorm(3),
                                         lambda: nn.GroupNorm(3, 3), lambda: nn.LayerNorm(3, elementwise_affine=False)],
                         ids=["identity", "sigmoid", "tanh", "layernorm", "groupnorm", "layernorm-plain"])
def test_float32_kept_and_inputs_untouched(make_module):
    module = make_module()
    x, dout = normal((2, 3), 0, np.float32), normal((2, 3), 1, np.float32)
    x_copy, dout_copy = x.copy(), dout.copy()
    out = module(x)
    dx = module.backward(dout)
    assert out.dtype == dx.dtype == np.float32
    assert all(param.grad.dtype == np.float32 for param in module.parameters())
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)


def test_bce_float32_kept():
    p, y = np.array([0.2, 0.9], np.float32), np.array([0.0, 1.0], np.float32)
    loss = nn.BCELoss()
    loss(p, y)
    assert loss.backward().dtype == np.float32


def test_norms_without_affine_expose_no_parameters():
    for module in (nn.LayerNorm(3, elementwise_affine=False), nn.GroupNorm(1, 3, affine=False)):
        assert list(module.parameters()) == [] and module.state_dict() == {}
        assert module.weight is None and module.bias is None
    assert [name for name, _ in nn.GroupNorm(1, 3).named_parameters()] == ["weight", "bias"]


# ----------------------------------------------------------------------------- against PyTorch

def run_torch_module(torch, module, x, dout):
    x_t = torch.from_numpy(x).requires_grad_()
    out = module(x_t)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), x_t.grad.numpy()


@pytest.mark.parametrize("name,x_shape", [("Sigmoid", (3, 4)), ("Tanh", (3, 4)), ("Identity", (2, 2))])
def test_activations_match_pytorch(name, x_shape):
    torch = pytest.importorskip("torch")
    x, dout = normal(x_shape) * 10, normal(x_shape, 1)
    module = getattr(nn, name)()
    out, dx = module(x), module.backward(dout)
    ref_out, ref_dx = run_torch_module(torch, getattr(torch.nn, name)(), x, dout)
    np.testing.assert_allclose(out, ref_out, **F64_CLOSE)
    np.testing.assert_allclose(dx, ref_dx, **F64_CLOSE)


@pytest.mark.parametrize("make_pair,x_shape", [
    (lambda t: (nn.LayerNorm(4, dtype=F64), t.nn.LayerNorm(4)), (3, 4)),
    (lambda t: (nn.LayerNorm((2, 3), eps=1e-3, dtype=F64), t.nn.LayerNorm((2, 3), eps=1e-3)), (2, 2, 2, 3)),
    (lambda t: (nn.LayerNorm(4, elementwise_affine=False), t.nn.LayerNorm(4, elementwise_affine=False)), (3, 4)),
    (lambda t: (nn.GroupNorm(2, 4, dtype=F64), t.nn.GroupNorm(2, 4)), (2, 4, 3, 2)),
    (lambda t: (nn.GroupNorm(3, 6, eps=1e-3, dtype=F64), t.nn.GroupNorm(3, 6, eps=1e-3)), (2, 6, 5)),
    (lambda t: (nn.GroupNorm(2, 4, dtype=F64), t.nn.GroupNorm(2, 4)), (3, 4)),
    (lambda t: (nn.GroupNorm(2, 4, affine=False), t.nn.GroupNorm(2, 4, affine=False)), (2, 4, 2, 2)),
], ids=["ln", "ln-2d-eps", "ln-plain", "gn", "gn-3d-eps", "gn-2d", "gn-plain"])
def test_norms_match_pytorch(make_pair, x_shape):
    torch = pytest.importorskip("torch")
    module, ref = make_pair(torch)
    randomize_affine(module)
    ref = ref.double()
    ref.load_state_dict({name: torch.from_numpy(value) for name, value in module.state_dict().items()})
    x, dout = normal(x_shape, 1) * 3 + 1, normal(x_shape, 2)
    module.zero_grad()
    out, dx = module(x), module.backward(dout)
    ref_out, ref_dx = run_torch_module(torch, ref, x, dout)
    np.testing.assert_allclose(out, ref_out, **F64_CLOSE)
    np.testing.assert_allclose(dx, ref_dx, **F64_CLOSE)
    for (name, param), (ref_name, ref_param) in zip(module.named_parameters(), ref.named_parameters(), strict=True):
        assert name == ref_name
        np.testing.assert_allclose(param.grad, ref_param.grad.numpy(), **F64_CLOSE)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_pytorch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 1, 6), [0.0, 1.0, 0.0, 1.0]])  # exact 0 and 1 hit the clamps
    y = np.concatenate([rng.uniform(0, 1, 6), [0.0, 1.0, 1.0, 0.0]])
    loss = nn.BCELoss(reduction)
    value = loss(p, y)
    grad = loss.backward(0.5)
    p_t = torch.from_numpy(p).requires_grad_()
    ref = torch.nn.BCELoss(reduction=reduction)(p_t, torch.from_numpy(y))
    (ref * 0.5).backward()
    assert value == pytest.approx(ref.item(), rel=tolerance("loss-float64"))
    np.testing.assert_allclose(grad[:8], p_t.grad.numpy()[:8], **F64_CLOSE)
    # p(1 - p) = 0 with y != p: PyTorch's clamp 1e-12 is a float32 constant, 4e-9 off float64's 1e-12
    np.testing.assert_allclose(grad[8:], p_t.grad.numpy()[8:], rtol=1e-8)


# ----------------------------------------------------------------------------- ModuleList

class Holder(nn.Module):
    """A user module keeping its layers in ModuleLists, one nested."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(3, 3, rng=0), nn.ModuleList([nn.BatchNorm1d(3), nn.Dropout()])])
        self.head = nn.Linear(3, 1, rng=1)

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


def test_modulelist_names_like_pytorch():
    holder = Holder()
    assert [name for name, _ in holder.named_parameters()] == [
        "blocks.0.weight", "blocks.0.bias", "blocks.1.0.weight", "blocks.1.0.bias", "head.weight", "head.bias"]
    assert [name for name, _ in holder.named_buffers()] == ["blocks.1.0.running_mean", "blocks.1.0.running_var"]
    assert [name for name, _ in holder.blocks.named_parameters()][:2] == ["0.weight", "0.bias"]
    for param in holder.parameters():
        param.grad += 1
    holder.zero_grad()
    assert not any(param.grad.any() for param in holder.parameters())


def test_modulelist_names_match_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.ModuleList([nn.Linear(2, 2), nn.ModuleList([nn.ReLU(), nn.LayerNorm(2)])])
    ref = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.LayerNorm(2)])])
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_modulelist_list_operations():
    a, b, c, d = nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Identity()
    modules = nn.ModuleList()
    assert len(modules) == 0
    assert modules.append(a) is modules and modules.extend([b, c]) is modules
    modules.insert(1, d)
    assert list(modules) == [a, d, b, c] and len(modules) == 4
    assert modules[0] is a and modules[-1] is c
    tail = modules[1:3]
    assert isinstance(tail, nn.ModuleList) and list(tail) == [d, b]
    modules.extend(nn.ModuleList([a]))
    assert len(modules) == 5 and len(nn.ModuleList(None)) == 0
    assert repr(nn.ModuleList([a])) == "ModuleList(\n  (0): ReLU()\n)"


def test_modulelist_train_eval_propagates():
    holder = Holder()
    holder.eval()
    assert not holder.blocks.training and not holder.blocks[1][0].training and not holder.blocks[1][1].training
    holder.train()
    assert holder.blocks[1][1].training


def test_modulelist_state_dict_round_trip():
    source, target = Holder(), Holder()
    for param in target.parameters():
        param.data = param.data + 1
    source.blocks[1][0](normal((4, 3)).astype(np.float32))  # move the running statistics
    target.load_state_dict(source.state_dict())
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)


def test_modulelist_errors():
    with pytest.raises(TypeError, match="module"):
        nn.ModuleList([nn.ReLU(), "relu"])
    with pytest.raises(TypeError, match="module"):
        nn.ModuleList().append(np.zeros(2))
    with pytest.raises(TypeError, match="modules"):
        nn.ModuleList().extend(nn.ReLU())
    with pytest.raises(TypeError, match="module"):
        nn.ModuleList().insert(0, 3)
    with pytest.raises(NotImplementedError, match="container"):
        nn.ModuleList([nn.ReLU()])(np.zeros(2))
    with pytest.raises(NotImplementedError, match="container"):
        nn.ModuleList([nn.ReLU()]).backward(np.zeros(2))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call,error,match", [
    (lambda: nn.Sigmoid()(np.arange(3)), TypeError, "x"),
    (lambda: nn.Tanh()([0.5, 1.0]), TypeError, "x"),
    (lambda: nn.Sigmoid().backward(np.ones(2)), RuntimeError, "before forward"),
    (lambda: nn.BCELoss("none"), ValueError, "reduction"),
    (lambda: nn.BCELoss()(np.array([0.5, 1.5]), np.array([0.0, 1.0])), ValueError, "input"),
    (lambda: nn.BCELoss()(np.array([0.5, np.nan]), np.array([0.0, 1.0])), ValueError, "input"),
    (lambda: nn.BCELoss()(np.array([0.5, 0.5]), np.array([0.0, 1.0, 1.0])), ValueError, "target"),
    (lambda: nn.BCELoss()(np.array([0, 1]), np.array([0.0, 1.0])), TypeError, "input"),
    (lambda: nn.LayerNorm(0), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm(()), TypeError, "normalized_shape"),
    (lambda: nn.LayerNorm("4"), TypeError, "normalized_shape"),
    (lambda: nn.LayerNorm(4, eps=0), ValueError, "eps"),
    (lambda: nn.LayerNorm((2, 3))(np.ones((4, 3, 2))), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm(3)(np.ones(2)), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm(3)(np.ones((2, 3))), TypeError, "dtype"),  # float64 x, float32 weight
    (lambda: nn.GroupNorm(3, 4), ValueError, "num_groups"),
    (lambda: nn.GroupNorm(0, 4), ValueError, "num_groups"),
    (lambda: nn.GroupNorm(2, 4, eps=-1.0), ValueError, "eps"),
    (lambda: nn.GroupNorm(2, 4)(np.ones((2, 6, 3), np.float32)), ValueError, "num_channels"),
    (lambda: nn.GroupNorm(2, 4)(np.ones(4, np.float32)), ValueError, "num_channels"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_bad_input_is_rejected(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("module", [nn.LayerNorm(3, dtype=F64), nn.GroupNorm(1, 3, dtype=F64)], ids=["ln", "gn"])
def test_norm_backward_checks_dout_shape(module):
    module(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dout"):
        module.backward(np.ones((3, 2)))


# ----------------------------------------------------------------------------- weight decay

OPTIMIZERS = {
    # (ours, torch.optim name, torch keyword arguments) with the same settings
    "sgd": (lambda p, wd: optim.SGD(p, lr=0.1, weight_decay=wd), "SGD", dict(lr=0.1)),
    "sgd-momentum": (lambda p, wd: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=wd), "SGD",
                     dict(lr=0.1, momentum=0.9)),
    "rmsprop": (lambda p, wd: optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8, weight_decay=wd), "RMSprop",
                dict(lr=0.01, alpha=0.9, eps=1e-8)),
    "adam": (lambda p, wd: optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=wd), "Adam",
             dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8)),
}


def grad_sequence(shape, steps=5, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_weight_decay_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    make, torch_name, kwargs = OPTIMIZERS[name]
    param = nn.Parameter(normal((3, 4)))
    ref_param = torch.nn.Parameter(torch.from_numpy(param.data.copy()))
    optimizer = make([param], 0.3)
    ref_optimizer = getattr(torch.optim, torch_name)([ref_param], weight_decay=0.3, **kwargs)
    for grad in grad_sequence(param.data.shape):
        param.grad[...] = grad
        ref_param.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        ref_optimizer.step()
        np.testing.assert_array_equal(param.grad, grad)  # the decay never lands in .grad
    np.testing.assert_allclose(param.data, ref_param.detach().numpy(), **F64_CLOSE)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_weight_decay_is_the_l2_gradient(name):
    # Nielsen's L2 term (lambda / 2n) sum w**2 adds (lambda / n) w to the gradient: weight_decay = lambda / n
    make = OPTIMIZERS[name][0]
    decayed, plain = nn.Parameter(normal(5)), nn.Parameter(normal(5))
    decayed_optimizer, plain_optimizer = make([decayed], 0.3), make([plain], 0.0)
    for grad in grad_sequence(5):
        decayed.grad[...] = grad
        plain.grad[...] = grad + 0.3 * plain.data
        decayed_optimizer.step()
        plain_optimizer.step()
    np.testing.assert_allclose(decayed.data, plain.data, **F64_CLOSE)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_zero_weight_decay_is_the_old_optimizer(name, monkeypatch):
    make = OPTIMIZERS[name][0]
    param = nn.Parameter(normal(4, dtype=np.float32))
    optimizer = make([param], 0)
    assert "weight_decay" not in optimizer.defaults and "weight_decay" not in optimizer.state_dict()["0"]
    seen = []
    rule = optimizer.rule
    optimizer.rule = lambda w, dw, config: seen.append(dw) or rule(w, dw, config)
    param.grad[...] = 1
    optimizer.step()
    assert seen[0] is param.grad  # the gradient itself: no extra pass, no copy
    decayed = make([nn.Parameter(param.data.copy())], 1e-2)
    decayed.params[0].grad[...] = 1
    decayed.step()
    assert decayed.params[0].data.dtype == np.float32
    assert decayed.state_dict()["0"]["weight_decay"] == 1e-2


@pytest.mark.parametrize("weight_decay", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_weight_decay(weight_decay):
    params = [nn.Parameter(np.zeros(2))]
    for make in (optim.SGD, optim.RMSprop, optim.Adam):
        with pytest.raises(ValueError, match="weight_decay"):
            make(params, weight_decay=weight_decay)
