"""Residual networks on the module API: the Residual sum, global average pooling, basic blocks and CIFAR ResNets."""
from __future__ import annotations

import numpy as np

from .modules import BatchNorm2d, Conv2d, Linear, Module, ReLU, Sequential, _float_dtype, _positive_int

__all__ = ["Residual", "GlobalAvgPool2d", "basic_block", "resnet"]


class Residual(Module):
    """``body(x) + shortcut(x)``; ``shortcut=None`` is the identity (He et al. 2016).

    Any activation after the sum is a separate module, e.g. ``Sequential(Residual(...), ReLU())``.
    Both outputs must have the same shape.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        if not isinstance(body, Module):
            raise TypeError(f"Residual body must be a Module, got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, Module):
            raise TypeError(f"Residual shortcut must be a Module or None, got {type(shortcut).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        body_out = self.body(x)
        shortcut_out = x if self.shortcut is None else self.shortcut(x)
        if body_out.shape != shortcut_out.shape:
            raise ValueError(f"Residual body output has shape {body_out.shape} but shortcut output has shape "
                             f"{shortcut_out.shape}; they must match to be added")
        self._cache = True
        # a new array: either output may be x itself or a view of it
        return body_out + shortcut_out

    def backward(self, dout):
        self._saved()
        dx = self.body.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def backward_params(self, dout) -> None:
        self._saved()
        self.body.backward_params(dout)
        if self.shortcut is not None:
            self.shortcut.backward_params(dout)


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): the mean over H and W (PyTorch's ``AdaptiveAvgPool2d(1)`` + ``Flatten()``)."""

    def forward(self, x):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"GlobalAvgPool2d expects a 4-D input x (N, C, H, W), "
                             f"got {getattr(x, 'ndim', type(x).__name__)}-D")
        self._cache = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        n, c, h, w = self._saved()
        if dout.shape != (n, c):
            raise ValueError(f"GlobalAvgPool2d dout must have shape {(n, c)}, got {dout.shape}")
        return np.broadcast_to((dout / (h * w))[:, :, None, None], (n, c, h, w)).copy()


def basic_block(in_channels, out_channels, stride=1, dtype=np.float32, rng=None) -> Sequential:
    """``relu(body(x) + shortcut(x))`` with body conv3x3(stride)-BN-ReLU-conv3x3-BN.

    The shortcut is the identity, or a strided 1x1 conv + BN when the stride or the channel count
    changes (He et al. option B). Convs have no bias (the batchnorm that follows adds one), as in
    torchvision. ``rng`` (seed or Generator) draws the conv weights in module order.
    """
    stride = _positive_int("stride", stride)
    rng = np.random.default_rng(rng)
    body = Sequential(
        Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False, dtype=dtype, rng=rng),
        BatchNorm2d(out_channels, dtype=dtype), ReLU(),
        Conv2d(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype, rng=rng),
        BatchNorm2d(out_channels, dtype=dtype))
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential(Conv2d(in_channels, out_channels, 1, stride, bias=False, dtype=dtype, rng=rng),
                              BatchNorm2d(out_channels, dtype=dtype))
    return Sequential(Residual(body, shortcut), ReLU())


def resnet(depth=20, num_classes=10, in_channels=3, widths=(16, 32, 64), dtype=np.float32, rng=None) -> Sequential:
    """The CIFAR ResNet of He et al. 2016, section 4.2, with depth = 6n + 2 (20, 32, 44, 56, 110, ...).

    Layers (indices of the returned Sequential): 0-2 stem conv3x3 (``widths[0]``) - BN - ReLU; 3-5
    three stages of n :func:`basic_block` with ``widths``, the first block of stages 2 and 3 with
    stride 2; 6 :class:`GlobalAvgPool2d`; 7 Linear to ``num_classes``. ``rng`` (seed or Generator)
    draws every layer's initial weights, so one seed gives one network.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 for an integer n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    if not isinstance(widths, (tuple, list)) or len(widths) != 3:
        raise ValueError(f"widths must give the channels of the 3 stages, got {widths!r}")
    widths = [_positive_int(f"widths[{i}]", width) for i, width in enumerate(widths)]
    num_classes = _positive_int("num_classes", num_classes)
    dtype = _float_dtype(dtype)
    rng = np.random.default_rng(rng)
    blocks_per_stage = (depth - 2) // 6
    layers = [Conv2d(in_channels, widths[0], 3, padding=1, bias=False, dtype=dtype, rng=rng),
              BatchNorm2d(widths[0], dtype=dtype), ReLU()]
    channels = widths[0]
    for stage, width in enumerate(widths):
        blocks = []
        for i in range(blocks_per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(basic_block(channels, width, stride, dtype=dtype, rng=rng))
            channels = width
        layers.append(Sequential(*blocks))
    layers += [GlobalAvgPool2d(), Linear(channels, num_classes, dtype=dtype, rng=rng)]
    return Sequential(*layers)
