"""Backends: one module each, implementing the same six kernel functions on clean arrays.

Every backend module defines::

    conv2d_forward(x, w, b, p: ConvParams) -> (out, ctx)
    conv2d_backward(dout, x, w, ctx, p: ConvParams, has_bias: bool, need_dx: bool)
        -> (dx or None when not need_dx, dw, db or None)
    max_pool2d_forward(x, p: PoolParams) -> (out, ctx)
    max_pool2d_backward(dout, x, ctx, p: PoolParams) -> dx
    avg_pool2d_forward(x, p: PoolParams) -> (out, ctx)
    avg_pool2d_backward(dout, x, ctx, p: PoolParams) -> dx

The shared front (``fastconv._validate``) has already checked everything: arrays are
C-contiguous, native byte order, one float dtype (float32 or float64), N >= 1, and the
output size in ``p`` is >= 1. Arrays may be read-only and must never be written to.
``ctx`` is the backend's own; backward must not modify it (it may be called twice).
Optional: ``supports(op, signature) -> bool`` ("conv2d", "max_pool2d", "avg_pool2d"; the
signature as fastconv._api.conv2d_signature / pool2d_signature make it): a backend that
declines a call (a size beyond its indexing, say) has it run by the next backend that takes it;
and the kernels of the rest of a training step (``fastconv._registry.STEP_KERNELS``), which
fall back to the reference's when missing.
A module that fails to import is reported as unavailable with the exception's message.
Register a new built-in backend with one line in ``fastconv._registry.BACKEND_MODULES``; one
from outside the package with ``fastconv.register_backend(name, module_or_object, fallback)``
or the entry point group ``fastconv.backends`` (optional attributes ``FALLBACK``, a backend
name, and ``AUTO``, True to be a candidate of ``auto``). Such a backend may define any subset
of the kernels (the rest are its fallback's), and what its kernels return is checked.
"""

INSTALL_HINTS = {
    "numba": "Install numba (pip install numba) to enable it.",
    "cython": "Build the compiled extension: pip install . (or pip install -e . for a checkout).",
}
