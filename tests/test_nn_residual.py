"""nn.residual: Residual, GlobalAvgPool2d, basic_block and resnet against numerical gradients,
a NumPy transcription of the seed's ResidualBlock, and a torchvision-style CIFAR ResNet in PyTorch."""
import re

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import nn
from fastconv.cases import tolerance
from nn.gradient_check import eval_numerical_gradient_array, rel_error
from nn.residual import GlobalAvgPool2d, Residual, basic_block, resnet
from test_nn_modules import watch_conv_dx_skips

F64 = np.float64
LAYER_GRADIENT = tolerance("layer-gradient")


def rng(seed):
    return np.random.default_rng(seed)


def check_gradients(module, x, entries_per_parameter=None, seed=0):
    """dx and every Parameter.grad of ``module`` against numerical gradients of sum(module(x) * dout);
    with ``entries_per_parameter``, larger parameters are checked at that many random entries."""
    dout = rng(seed).standard_normal(module(x).shape)
    module.zero_grad()
    module(x)
    dx = module.backward(dout)
    assert rel_error(dx, eval_numerical_gradient_array(module, x, dout)) <= LAYER_GRADIENT, "dx"
    for name, param in module.named_parameters():
        count = param.data.size if entries_per_parameter is None else min(param.data.size, entries_per_parameter)
        flat = rng(seed).choice(param.data.size, count, replace=False)
        index = np.unravel_index(flat, param.data.shape)
        values = param.data[index].copy()

        def output_at(entries):
            param.data[index] = entries
            return module(x)

        numeric = eval_numerical_gradient_array(output_at, values, dout)
        param.data[index] = values
        assert rel_error(param.grad[index], numeric) <= LAYER_GRADIENT, name


# --- gradients -------------------------------------------------------------------------------------

def test_residual_with_identity_shortcut_gradient():
    body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, dtype=F64, rng=0), nn.ReLU(),
                         nn.Conv2d(2, 2, 3, padding=1, dtype=F64, rng=1))
    check_gradients(Residual(body), rng(1).standard_normal((2, 2, 4, 4)))


def test_residual_with_conv_shortcut_gradient():
    residual = basic_block(2, 3, stride=2, dtype=F64, rng=0)[0]
    assert residual.shortcut is not None
    check_gradients(residual, rng(1).standard_normal((2, 2, 5, 5)))


def test_global_avg_pool_gradient():
    check_gradients(GlobalAvgPool2d(), rng(1).standard_normal((2, 3, 2, 3)))


def test_small_resnet_gradient_in_training_mode():
    # Through seven batchnorms the smallest entries (~1e-5) come close to the rounding limit of
    # central differences (~1e-7 relative) for some initializations; this one stays below 4e-8.
    model = resnet(8, num_classes=3, widths=(2, 4, 4), dtype=F64, rng=2).train()
    check_gradients(model, rng(1).standard_normal((2, 3, 8, 8)), entries_per_parameter=8)


def test_first_layer_residual_skips_only_the_input_gradient(monkeypatch):
    """As a network's first layer, backward_params gives the parameter gradients of backward, and
    the first conv of both paths skips its dx."""
    model = nn.Sequential(basic_block(2, 3, stride=2, dtype=F64, rng=0), GlobalAvgPool2d(),
                          nn.Linear(3, 2, dtype=F64, rng=1))
    x, dout = rng(2).standard_normal((2, 2, 4, 4)), rng(3).standard_normal((2, 2))
    model(x)
    model.backward(dout)
    expected = {name: p.grad.copy() for name, p in model.named_parameters()}
    skipped = watch_conv_dx_skips(monkeypatch)
    model.zero_grad()
    model(x)
    assert model.backward_params(dout) is None
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, expected[name], err_msg=name)
        assert p.grad.any(), name
    assert sorted(skipped) == [False, True, True]  # body conv 2 needs its dx; body conv 1 and the shortcut don't


# --- the seed's ResidualBlock, transcribed -----------------------------------------------------------

def reference_conv(x, w, stride, pad):
    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))), w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,fcij->nfhw", windows[:, :, ::stride, ::stride], w)


def reference_batchnorm(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    return gamma[:, None, None] * (x - mean) / np.sqrt(var + eps) + beta[:, None, None]


def reference_block(x, p, stride):
    """ResidualBlock.forward of the seed: relu(left(x) + (x if right is None else right(x)))."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    left = relu(reference_batchnorm(reference_conv(x, p["0.body.0.weight"], stride, 1),
                                    p["0.body.1.weight"], p["0.body.1.bias"]))
    left = reference_batchnorm(reference_conv(left, p["0.body.3.weight"], 1, 1), p["0.body.4.weight"],
                               p["0.body.4.bias"])
    right = x
    if "0.shortcut.0.weight" in p:
        right = reference_batchnorm(reference_conv(x, p["0.shortcut.0.weight"], stride, 0),
                                    p["0.shortcut.1.weight"], p["0.shortcut.1.bias"])
    return relu(left + right)


@pytest.mark.parametrize("in_channels,out_channels,stride", [(3, 3, 1), (2, 4, 2), (2, 3, 1)],
                         ids=["identity", "projection-stride2", "projection-channels"])
def test_basic_block_matches_the_seed_formula(in_channels, out_channels, stride):
    block = basic_block(in_channels, out_channels, stride, dtype=F64, rng=0)
    values = rng(2)
    for param in block.parameters():
        if param.data.ndim == 1:  # the batchnorm gammas and betas: away from their initial ones and zeros
            param.data = values.uniform(0.5, 1.5, param.data.shape)
    x = rng(1).standard_normal((3, in_channels, 5, 5))
    out = block(x)
    assert out.shape == (3, out_channels, 3 if stride == 2 else 5, 3 if stride == 2 else 5)
    assert (block[0].shortcut is None) == (in_channels == out_channels and stride == 1)
    np.testing.assert_allclose(out, reference_block(x, block.state_dict(), stride), **tolerance(F64))


# --- structure ----------------------------------------------------------------------------------------

# He et al.'s ResNet-20 has 269,722 parameters with option-A shortcuts; the two 1x1-conv + BN
# projections of option B add 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
RESNET20_PARAMETERS = 272_474


def test_resnet20_parameter_count_and_names():
    model = resnet(20, rng=0)
    assert sum(p.data.size for p in model.parameters()) == RESNET20_PARAMETERS
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 1 + 2 + 3 * 3 * 2 * 3 + 2 * 3 + 2  # stem, 9 blocks of conv-bn-conv-bn, 2 shortcuts, fc
    assert names[:6] == ["0.weight", "1.weight", "1.bias", "3.0.0.body.0.weight", "3.0.0.body.1.weight",
                         "3.0.0.body.1.bias"]
    assert "4.0.0.shortcut.0.weight" in names and "5.0.0.shortcut.1.bias" in names
    assert not any("shortcut" in name for name in names if not re.match(r"[45]\.0\.", name))
    assert "5.2.0.shortcut.1.running_mean" not in model.state_dict()
    assert "4.0.0.shortcut.1.running_mean" in dict(model.named_buffers())
    assert names[-2:] == ["7.weight", "7.bias"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet_output_and_stage_shapes(dtype):
    model = resnet(14, num_classes=7, in_channels=1, widths=(4, 8, 16), dtype=dtype, rng=0)
    x = rng(0).standard_normal((2, 1, 16, 16)).astype(dtype)
    x_before = x.copy()
    shapes = []
    out = x
    for layer in model:
        out = layer(out)
        shapes.append(out.shape)
    assert shapes[3:] == [(2, 4, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4), (2, 16), (2, 7)]
    assert [len(stage) for stage in model[3:6]] == [2, 2, 2]
    out = model(x)
    assert out.shape == (2, 7) and out.dtype == dtype
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(x, x_before)


def test_resnet_rng_makes_the_initialization_reproducible():
    first, again, other = (resnet(8, widths=(2, 4, 4), rng=seed).state_dict() for seed in (3, 3, 4))
    for name, value in first.items():
        np.testing.assert_array_equal(value, again[name], err_msg=name)
    assert not np.array_equal(first["4.0.0.body.0.weight"], other["4.0.0.body.0.weight"])
    assert not np.array_equal(first["0.weight"][0], first["0.weight"][1])


def test_residual_state_modes_and_input_untouched():
    residual = basic_block(2, 3, dtype=F64, rng=0)[0]
    assert [name for name, _ in residual.named_parameters()] == [
        "body.0.weight", "body.1.weight", "body.1.bias", "body.3.weight", "body.4.weight", "body.4.bias",
        "shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"]
    assert "shortcut.1.running_mean" in residual.state_dict()
    residual.eval()
    assert not residual.body[1].training and not residual.shortcut[1].training
    state = residual.state_dict()
    state["shortcut.1.running_var"] = np.full(3, 4.0)
    residual.load_state_dict(state)
    assert residual.shortcut[1].running_var.data.tolist() == [4.0] * 3

    doubling = Residual(nn.Sequential())  # body and shortcut both return x itself
    x = rng(0).standard_normal((2, 3)).astype(np.float32)
    out = doubling(x)
    assert out is not x and out.dtype == np.float32
    np.testing.assert_array_equal(out, 2 * x)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(doubling.backward(dout), 2 * dout)
    np.testing.assert_array_equal(dout, 1)


def test_global_avg_pool_keeps_float32():
    x = rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    pool = GlobalAvgPool2d()
    out = pool(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x.astype(F64).mean(axis=(2, 3)), rtol=1e-6)
    dx = pool.backward(np.ones((2, 3), np.float32))
    assert dx.dtype == np.float32 and dx.flags.writeable
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 20))


# --- errors -------------------------------------------------------------------------------------------

def test_errors():
    with pytest.raises(TypeError, match="body"):
        Residual(lambda x: x)
    with pytest.raises(TypeError, match="shortcut"):
        Residual(nn.ReLU(), shortcut="identity")
    with pytest.raises(ValueError, match="body output.*shortcut output"):
        Residual(nn.Conv2d(2, 3, 1, dtype=F64))(np.zeros((1, 2, 4, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        Residual(nn.ReLU()).backward(np.zeros(3))
    with pytest.raises(ValueError, match="input x"):
        GlobalAvgPool2d()(np.zeros((2, 3, 4)))
    pool = GlobalAvgPool2d()
    pool(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="dout"):
        pool.backward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="stride"):
        basic_block(2, 2, stride=0)
    for depth in (21, 2, 0, True, "20", 20.0):
        with pytest.raises(ValueError, match="depth"):
            resnet(depth)
    with pytest.raises(ValueError, match="widths"):
        resnet(8, widths=(16, 32))
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        resnet(8, widths=(16, 0, 64))
    with pytest.raises(ValueError, match="num_classes"):
        resnet(8, num_classes=0)
    with pytest.raises(TypeError, match="dtype"):
        resnet(8, dtype=np.int32)


# --- training -----------------------------------------------------------------------------------------

def test_adam_steps_reduce_the_loss():
    model = resnet(8, num_classes=3, widths=(4, 8, 8), rng=0)
    x = rng(0).standard_normal((12, 3, 8, 8)).astype(np.float32)
    y = rng(1).integers(0, 3, 12)
    criterion, optimizer = nn.CrossEntropyLoss(), nn.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        losses.append(criterion(model(x), y))
        model.backward_params(criterion.backward())
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0], losses


# --- PyTorch ------------------------------------------------------------------------------------------

def torch_cifar_resnet(torch, depth, num_classes, widths):
    """The CIFAR ResNet written as torchvision writes its ResNets (BasicBlock, layer1-3, downsample)."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(planes))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class CifarResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(widths[0])
            inplanes = widths[0]
            for stage, planes in enumerate(widths):
                blocks = []
                for i in range((depth - 2) // 6):
                    blocks.append(BasicBlock(inplanes, planes, 2 if stage and not i else 1))
                    inplanes = planes
                setattr(self, f"layer{stage + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    return CifarResNet()


TORCHVISION_NAMES = [(r"^0\.", "conv1."), (r"^1\.", "bn1."), (r"^7\.", "fc."),
                     (r"^([345])\.(\d+)\.0\.", lambda m: f"layer{int(m[1]) - 2}.{m[2]}."),
                     (r"body\.0\.", "conv1."), (r"body\.1\.", "bn1."), (r"body\.3\.", "conv2."),
                     (r"body\.4\.", "bn2."), (r"shortcut\.", "downsample.")]


def torchvision_name(name):
    for pattern, replacement in TORCHVISION_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


def test_resnet20_names_and_shapes_equal_torchvision_style():
    torch = pytest.importorskip("torch")
    ours = {torchvision_name(k): v.shape for k, v in resnet(20, rng=0).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in torch_cifar_resnet(torch, 20, 10, (16, 32, 64)).state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert ours == theirs
    assert sum(p.numel() for p in torch_cifar_resnet(torch, 20, 10, (16, 32, 64)).parameters()) \
        == RESNET20_PARAMETERS


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_resnet_matches_pytorch(training):
    torch = pytest.importorskip("torch")
    model = resnet(8, num_classes=4, widths=(3, 4, 6), dtype=F64, rng=0)
    values = rng(2)
    for _, buffer in model.named_buffers():  # running statistics other than the initial zeros and ones
        buffer.data = values.uniform(0.5, 1.5, buffer.data.shape)
    for param in model.parameters():
        if param.data.ndim == 1:  # gammas, betas and the fc bias
            param.data = values.uniform(0.5, 1.5, param.data.shape)
    ref = torch_cifar_resnet(torch, 8, 4, (3, 4, 6)).double()
    state = ref.state_dict()
    state.update({torchvision_name(k): torch.from_numpy(v) for k, v in model.state_dict().items()})
    ref.load_state_dict(state)
    model.train(training)
    ref.train(training)

    x, y = rng(1).standard_normal((3, 3, 8, 8)), np.array([0, 3, 1])
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    model.zero_grad()
    dx = model.backward(criterion.backward())
    x_t = torch.from_numpy(x).requires_grad_()
    ref_loss = torch.nn.functional.cross_entropy(ref(x_t), torch.from_numpy(y))
    ref_loss.backward()

    assert loss == pytest.approx(ref_loss.item(), rel=tolerance("loss-float64"))
    np.testing.assert_allclose(dx, x_t.grad.numpy(), **tolerance("torch-gradient-float64"))
    ref_params = dict(ref.named_parameters())
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, ref_params[torchvision_name(name)].grad.numpy(),
                                   **tolerance("torch-gradient-float64"), err_msg=name)
    ref_state = ref.state_dict()
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):  # running_var: torch keeps the unbiased batch variance, nn the biased
            np.testing.assert_allclose(buffer.data, ref_state[torchvision_name(name)].numpy(),
                                       **tolerance(F64), err_msg=name)
