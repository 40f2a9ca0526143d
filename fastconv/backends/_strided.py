"""Kernel-offset geometry as slices: which output cells of each kernel offset read inside the image.

A sliding-window op (conv, pooling) is a short loop over the KH*KW kernel offsets; for one
offset (i, j) the input cells read by all output cells form one strided rectangle of the
image. Clipping that rectangle to the image replaces padding, so no padded copy is needed:
output cells outside ``out`` read padding (zero for conv/avg, -inf for max) for that offset.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

from ._workspace import batch_chunk


class Offset(NamedTuple):
    """One kernel offset: its position, its row-major index and the matching slices."""

    i: int
    j: int
    k: int  # i * kernel_w + j, the row-major position inside the window
    out: tuple[slice, slice]  # output cells (rows, cols) whose input cell is in bounds
    inp: tuple[slice, slice]  # the input cells they read, in the same order

    def at_out(self, a):
        """The cells of ``a`` (..., OH, OW) this offset reaches inside the image (a view)."""
        return a[..., self.out[0], self.out[1]]

    def at_in(self, a):
        """The cells of ``a`` (..., H, W) this offset reads, matching :meth:`at_out` (a view)."""
        return a[..., self.inp[0], self.inp[1]]


def _axis_span(size: int, out_size: int, offset: int, stride: int, pad: int) -> tuple[slice, slice]:
    """Along one axis: output indices o with 0 <= o*stride - pad + offset < size, and those inputs."""
    lo = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    hi = min(out_size, (size - 1 + pad - offset) // stride + 1)
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    start = lo * stride - pad + offset
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)


def kernel_offsets(in_hw, out_hw, kernel, stride, pad, dilation=(1, 1)) -> Iterator[Offset]:
    """Every kernel offset in row-major order (empty ones included), each pair given as (h, w)."""
    for i in range(kernel[0]):
        rows_out, rows_in = _axis_span(in_hw[0], out_hw[0], i * dilation[0], stride[0], pad[0])
        for j in range(kernel[1]):
            cols_out, cols_in = _axis_span(in_hw[1], out_hw[1], j * dilation[1], stride[1], pad[1])
            yield Offset(i, j, i * kernel[1] + j, (rows_out, cols_out), (rows_in, cols_in))


def outside(out_hw, span: tuple[slice, slice]) -> Iterator[tuple[slice, slice]]:
    """The (at most four) rectangles of an ``out_hw`` plane not covered by ``span``."""
    (rows, cols), (height, width) = span, out_hw
    if rows.start == rows.stop or cols.start == cols.stop:
        yield slice(0, height), slice(0, width)
        return
    for band in (slice(0, rows.start), slice(rows.stop, height)):
        if band.start < band.stop:
            yield band, slice(0, width)
    for band in (slice(0, cols.start), slice(cols.stop, width)):
        if band.start < band.stop:
            yield rows, band


def batches(n: int, bytes_per_sample: int, limit: int | None = None) -> Iterator[slice]:
    """Consecutive slices of a batch of ``n``, each small enough for the workspace limit."""
    step = batch_chunk(n, bytes_per_sample, limit)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))
