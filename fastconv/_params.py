"""Normalized kernel parameters and the output-size arithmetic every backend shares."""
from __future__ import annotations

from typing import NamedTuple


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """PyTorch's floor rule: ``floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


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
    kernel_h: int
    kernel_w: int

    @property
    def geometry(self) -> tuple:
        """(stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups): what the compiled kernels take."""
        return self.stride_h, self.stride_w, self.pad_h, self.pad_w, self.dil_h, self.dil_w, self.groups

    @property
    def is_pointwise(self) -> bool:
        """1x1 kernel, stride 1, no padding: x[n] viewed as (C, H*W) is already its im2col matrix."""
        kernel_and_steps = (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.pad_h, self.pad_w)
        return kernel_and_steps == (1, 1, 1, 1, 0, 0)


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
    def geometry(self) -> tuple:
        """(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w): what the compiled kernels take."""
        return self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.pad_h, self.pad_w

    @property
    def overlapping(self) -> bool:
        return self.stride_h < self.kernel_h or self.stride_w < self.kernel_w
