"""Normalized kernel parameters and the output-size arithmetic every backend shares."""
from __future__ import annotations

from typing import NamedTuple


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """PyTorch's floor rule: ``floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def is_pointwise(w_shape, p: "ConvParams") -> bool:
    """1x1 kernel, stride 1, no padding: x[n] viewed as (C, H*W) is already its im2col matrix."""
    return tuple(w_shape[2:]) == (1, 1) and (p.stride_h, p.stride_w, p.pad_h, p.pad_w) == (1, 1, 0, 0)


class ConvParams(NamedTuple):
    """Everything a backend needs about a conv2d call besides the arrays."""

    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int
    groups: int
    out_h: int
    out_w: int


class PoolParams(NamedTuple):
    """Everything a backend needs about a pooling call besides the array."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int

    @property
    def overlapping(self) -> bool:
        return self.stride_h < self.kernel_h or self.stride_w < self.kernel_w
