"""Reusable scratch memory and batch chunking shared by the fast backends."""
from __future__ import annotations

import os
import threading

import numpy as np

# Touching fresh pages costs several times a reused buffer here, so hot paths keep their
# scratch between calls. The cap bounds it whatever the batch size (one sample may exceed it).
WORKSPACE_LIMIT_BYTES = int(float(os.environ.get("FASTCONV_WORKSPACE_MB", "64")) * 2**20)

_local = threading.local()


def batch_chunk(n: int, bytes_per_sample: int, limit: int | None = None) -> int:
    """How many samples of a batch of ``n`` fit in the workspace limit (at least 1)."""
    limit = WORKSPACE_LIMIT_BYTES if limit is None else limit
    return max(1, min(n, limit // max(1, bytes_per_sample)))


def scratch(slot: str, shape, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array of ``shape`` backed by this thread's buffer ``slot``.

    The buffer grows when needed and is reused by later calls from the same thread, so the
    returned array is only valid until the next ``scratch(slot, ...)`` call in this thread:
    never return it to a caller or keep it in a cache.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[slot] = np.empty(max(nbytes, 64), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def release() -> None:
    """Drop this thread's scratch buffers (e.g. after a one-off huge call)."""
    _local.buffers = {}
