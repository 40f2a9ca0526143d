"""Training-step workloads for `fastconv bench`: four networks in `nn`, each beside the same one in PyTorch.

A step is what a training loop runs: forward, loss, backward and an Adam update (lr 1e-3), on
the next of a ring of random batches (made before timing, so neither side pays for the random
numbers). Both sides start from the same weights, so a step's loss and gradients can be checked
against each other before anything is timed.

`fastconv bench` finds this module through the entry point group ``fastconv.workloads`` (see
pyproject.toml): it defines the workload-family protocol of ``fastconv.bench.workloads``
(OP, CASES, REFERENCES, flops, describe, make_call, agrees).
"""
from __future__ import annotations

import abc
import contextlib
import functools
from dataclasses import dataclass

import numpy as np

BATCHES = 8  # distinct random batches each step cycles through
SEED = 0


@dataclass(frozen=True)
class Network:
    """A network workload: its name (the bench "case"), batch size and input shape."""

    name: str
    batch: int
    input_dim: tuple
    summary: str
    kernel_sets: tuple  # what a step runs (the names of numba's precompile() parts)

    def forward_flops(self) -> float:
        """Multiply-adds x 2 of one forward pass of the conv and affine layers."""
        return sum(2.0 * self.batch * macs for macs in _layer_macs(self))


# --- the workload-family protocol of fastconv.bench.workloads ---------------------------------
OP = "train_step"
# Backends whose first step the others are checked against, the first one present.
REFERENCES = ("im2col", "torch")


def flops(network: "Network") -> float:
    """A step's conv and affine forward flops, three times (as a conv's forward + backward)."""
    return 3 * network.forward_flops()


def describe(network: "Network") -> str:
    return f"{network.summary}, batch {network.batch}, Adam"


_CONVS = ("conv_forward", "conv_backward", "relu", "affine", "softmax_cross_entropy", "adam_update")
_STEP = _CONVS + ("max_pool",)
NETWORKS = (
    Network("digits", 50, (1, 8, 8), "ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=16, filter_size=3, "
                                     "hidden_dim=64)", _STEP),
    Network("cs231n", 50, (3, 32, 32), "ThreeLayerConvNet() (32 filters 7x7, hidden 100)", _STEP),
    Network("vgg", 64, (3, 32, 32), "[conv3x3-batchnorm-relu] x 2 (32), maxpool, x 2 (64), maxpool, linear(4096, 10)",
            _STEP + ("batch_norm",)),
    Network("resnet20", 64, (3, 32, 32), "nn.models.resnet(20): CIFAR ResNet-20 (basic blocks, 16/32/64 channels), "
                                         "global average pool, linear(64, 10)", _CONVS + ("batch_norm",)),
)
CASES = NETWORKS
BY_NAME = {network.name: network for network in NETWORKS}
THREE_LAYER = {"digits": dict(input_dim=(1, 8, 8), num_filters=16, filter_size=3, hidden_dim=64),
               "cs231n": dict()}
VGG_WIDTHS = (32, 32, "pool", 64, 64, "pool")
RESNET_DEPTH, RESNET_WIDTHS = 20, (16, 32, 64)


def _layer_macs(network: Network) -> list[float]:
    c, h, w = network.input_dim
    if network.name in THREE_LAYER:
        args = {"num_filters": 32, "filter_size": 7, "hidden_dim": 100, **THREE_LAYER[network.name]}
        f, k, hidden = args["num_filters"], args["filter_size"], args["hidden_dim"]
        return [f * c * k * k * h * w, f * (h // 2) * (w // 2) * hidden, hidden * 10]
    if network.name == "resnet20":
        return _resnet_macs(c, h, w)
    macs = []
    for width in VGG_WIDTHS:
        if width == "pool":
            h, w = h // 2, w // 2
        else:
            macs.append(width * c * 9 * h * w)
            c = width
    return macs + [c * h * w * 10]


def _resnet_macs(c, h, w) -> list[float]:
    """The stem, each block's two 3x3 convs (and 1x1 shortcut where a stage starts), the linear layer."""
    macs = [RESNET_WIDTHS[0] * c * 9 * h * w]
    c = RESNET_WIDTHS[0]
    for stage, width in enumerate(RESNET_WIDTHS):
        for block in range((RESNET_DEPTH - 2) // 6):
            if stage > 0 and block == 0:  # stride 2
                h, w = h // 2, w // 2
                macs.append(width * c * h * w)
            macs += [width * c * 9 * h * w, width * width * 9 * h * w]
            c = width
    return macs + [c * 10]


def batches(network: Network, dtype) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    return [(rng.standard_normal((network.batch, *network.input_dim)).astype(dtype),
             rng.integers(0, 10, network.batch)) for _ in range(BATCHES)]


class _Trainer(abc.ABC):
    """One side of a network workload: ``step(X, y)`` trains once; ``checked_step(X, y)`` trains
    once and returns (loss, {name: gradient}) with the parameter names and layouts of the nn model."""

    @abc.abstractmethod
    def step(self, X, y) -> None:
        """One training step on the batch."""

    @abc.abstractmethod
    def checked_step(self, X, y) -> tuple[float, dict]:
        """One training step on the batch; its loss and gradients."""


class NNThreeLayer(_Trainer):
    """nn.models.ThreeLayerConvNet, updated the way nn.solver.Solver does (nn.optim.adam per parameter)."""

    def __init__(self, network: Network, dtype):
        from nn.models import ThreeLayerConvNet, seeded_global_rng
        from nn.optim import adam
        with seeded_global_rng(SEED):
            self.model = ThreeLayerConvNet(dtype=dtype, weight_scale=1e-2, **THREE_LAYER[network.name])
        self.adam = adam
        self.configs = {name: {"learning_rate": 1e-3} for name in self.model.params}

    def checked_step(self, X, y):
        loss, grads = self.model.loss(X, y)
        params = self.model.params
        for name, grad in grads.items():
            params[name], self.configs[name] = self.adam(params[name], grad, self.configs[name])
        return loss, grads

    step = checked_step

    def weights(self) -> dict:
        return self.model.params


def _module_net(network: Network, dtype):
    """The vgg or resnet20 network in nn's module API."""
    import nn
    rng = np.random.default_rng(SEED)
    if network.name == "resnet20":
        return nn.models.resnet(RESNET_DEPTH, widths=RESNET_WIDTHS, dtype=dtype, rng=rng)
    layers, channels = [], 3
    for width in VGG_WIDTHS:
        if width == "pool":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(channels, width, 3, padding=1, dtype=dtype, rng=rng), nn.BatchNorm2d(width, dtype=dtype),
                   nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 8 * 8, 10, dtype=dtype, rng=rng))


@functools.cache
def _torch_residual():
    import torch

    class Residual(torch.nn.Module):
        """nn.Residual in torch: ``body(x) + shortcut(x)`` (identity shortcut when None)."""

        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))
    return Residual


def torch_mirror(module):
    """The same layers in torch.nn, with the same parameter names, for a network of nn modules."""
    import torch

    import nn
    tnn = torch.nn
    if isinstance(module, nn.Sequential):
        return tnn.Sequential(*map(torch_mirror, module.layers))
    if isinstance(module, nn.Residual):
        shortcut = None if module.shortcut is None else torch_mirror(module.shortcut)
        return _torch_residual()(torch_mirror(module.body), shortcut)
    if isinstance(module, nn.Conv2d):
        return tnn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                          module.dilation, module.groups, bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return tnn.BatchNorm2d(module.num_features, module.eps, module.momentum)
    if isinstance(module, nn.Linear):
        return tnn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.MaxPool2d):
        return tnn.MaxPool2d(module.kernel_size, module.stride, module.padding)
    if isinstance(module, nn.GlobalAvgPool2d):
        return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
    simple = {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten}
    if type(module) in simple:
        return simple[type(module)]()
    raise TypeError(f"no torch mirror for {type(module).__name__}")


class NNSequential(_Trainer):
    """A module-API network (vgg, resnet20): nn.Sequential, nn.CrossEntropyLoss, nn.optim.Adam."""

    def __init__(self, network: Network, dtype):
        import nn
        self.net = _module_net(network, dtype)
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = nn.optim.Adam(self.net.parameters(), lr=1e-3)

    def _loss(self, X, y):
        self.net.zero_grad()
        loss = self.criterion(self.net(X), y)
        self.net.backward(self.criterion.backward(), need_dx=False)  # as torch: the images need no gradient
        return loss

    def step(self, X, y):
        self._loss(X, y)
        self.optimizer.step()

    def checked_step(self, X, y):
        loss = self._loss(X, y)
        grads = {name: param.grad.copy() for name, param in self.net.named_parameters()}
        self.optimizer.step()
        return loss, grads

    def weights(self) -> dict:
        return {name: param.data for name, param in self.net.named_parameters()}


class TorchPeer(_Trainer):
    """The same network in PyTorch (torch.nn layers, CrossEntropyLoss, torch.optim.Adam), starting
    from the nn model's weights."""

    def __init__(self, network: Network, dtype, trainer: _Trainer):
        import torch
        self.torch = torch
        tnn = torch.nn
        if network.name in THREE_LAYER:
            args = {"num_filters": 32, "filter_size": 7, "hidden_dim": 100, **THREE_LAYER[network.name]}
            c, h, w = network.input_dim
            f, k, hidden = args["num_filters"], args["filter_size"], args["hidden_dim"]
            self.net = tnn.Sequential(tnn.Conv2d(c, f, k, padding=(k - 1) // 2), tnn.ReLU(), tnn.MaxPool2d(2),
                                      tnn.Flatten(), tnn.Linear(f * (h // 2) * (w // 2), hidden), tnn.ReLU(),
                                      tnn.Linear(hidden, 10))
            # nn's names -> (torch parameter, transposed?): CS231n keeps affine weights as (in, out)
            self.names = {"W1": ("0.weight", False), "b1": ("0.bias", False), "W2": ("4.weight", True),
                          "b2": ("4.bias", False), "W3": ("6.weight", True), "b3": ("6.bias", False)}
        else:
            self.net = torch_mirror(trainer.net)
            self.names = {name: (name, False) for name, _ in trainer.net.named_parameters()}
        weights = trainer.weights()
        self.net = self.net.to(torch.float32 if np.dtype(dtype) == np.float32 else torch.float64)
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            for ours, (theirs, transposed) in self.names.items():
                value = np.asarray(weights[ours])
                params[theirs].copy_(torch.from_numpy(np.ascontiguousarray(value.T if transposed else value)))
        self.params = params
        self.criterion = tnn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def _loss(self, X, y):
        self.optimizer.zero_grad()
        loss = self.criterion(self.net(self.torch.from_numpy(X)), self.torch.from_numpy(y))
        loss.backward()
        return loss

    def step(self, X, y):
        self._loss(X, y)
        self.optimizer.step()

    def checked_step(self, X, y):
        loss = self._loss(X, y)
        grads = {}
        for ours, (theirs, transposed) in self.names.items():
            grad = self.params[theirs].grad.numpy()
            grads[ours] = (grad.T if transposed else grad).copy()
        self.optimizer.step()
        return loss.item(), grads


def nn_trainer(network: Network, dtype) -> _Trainer:
    return (NNThreeLayer if network.name in THREE_LAYER else NNSequential)(network, dtype)


class StepCall:
    """A bench call: each call is one training step on the next batch. The first call returns
    (loss, *gradients) of its step, in parameter-name order, for checking; later calls return ()."""

    def __init__(self, trainer: _Trainer, data, backend_scope):
        self.trainer, self.data, self.scope = trainer, data, backend_scope
        self.count = 0

    def __call__(self):
        X, y = self.data[self.count % len(self.data)]
        self.count += 1
        with self.scope():
            if self.count > 1:
                self.trainer.step(X, y)
                return ()
            loss, grads = self.trainer.checked_step(X, y)
        return (np.asarray(loss), *(grads[name] for name in sorted(grads)))


def make_call(network: Network, dtype, backend: str, torch_name: str = "torch") -> StepCall:
    """One training step per call of ``network`` on ``backend`` (a fastconv backend name, "auto",
    or ``torch_name`` for the PyTorch peer)."""
    import fastconv
    data = batches(network, dtype)
    if backend == torch_name:
        return StepCall(TorchPeer(network, dtype, nn_trainer(network, dtype)), data, contextlib.nullcontext)
    return StepCall(nn_trainer(network, dtype), data, lambda: fastconv.use_backend(backend))


# A step's results pass ReLUs: an activation within rounding of 0 may take the other side in
# another backend and move that element's gradient by its whole size. So its outputs (loss and
# gradients) are compared by the norm of the difference, relative to the reference output's
# norm, or to a thousandth of the largest one for outputs that are only rounding noise (a conv
# bias right before a batch norm has a zero gradient).
TOLERANCE = {np.dtype(np.float32): 1e-2, np.dtype(np.float64): 1e-6}


def agrees(outputs: tuple, expected: tuple, dtype) -> bool:
    """Whether a step's loss and gradients match the reference's within TOLERANCE (see above)."""
    if len(outputs) != len(expected) or any(np.shape(a) != np.shape(b) for a, b in zip(outputs, expected)):
        return False
    norms = [float(np.linalg.norm(np.asarray(b, np.float64))) for b in expected]
    floor = 1e-3 * max(norms, default=0.0)
    return all(float(np.linalg.norm(np.asarray(a, np.float64) - b)) <= TOLERANCE[np.dtype(dtype)] * max(n, floor)
               for a, b, n in zip(outputs, expected, norms))
