"""Backend registry: which backends exist, which load here, the process default and the per-context choice."""
from __future__ import annotations

import contextvars
import importlib
import importlib.util
import threading
from contextlib import contextmanager
from types import ModuleType

# Adding a backend is its module plus one line here (best first: `auto` prefers earlier ones).
BACKEND_MODULES = {
    "cython": "fastconv.backends.cython",
    "numba": "fastconv.backends.numba",
    "im2col": "fastconv.backends.im2col",
    "naive": "fastconv.backends.naive",
}
AUTO = "auto"
# Backends that compile their kernels on first use: `auto` does not import or compile them just
# to time a call (see fastconv._auto), and knows they are there from what they need installed.
JIT_BACKENDS = {"numba": "numba"}  # name -> the module it needs, found without importing it
# Backends whose work runs on another library's thread pool (im2col: numpy's OpenBLAS, whose
# threads keep spinning ~0.1 s after every call and take the cores the next ops of a training
# step need): `auto` picks them only where no other fast backend is installed.
FOREIGN_THREADS = frozenset({"im2col"})

KERNELS = ("conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward")
# The rest of a training step (fastconv._step_ops). Optional: a backend without one runs the
# reference's, so a conv-only backend still gives every answer. (Also optional:
# conv2d_relu_forward, a conv with bias and ReLU fused; without it the front runs the backend's
# conv2d_forward, then relu_forward.)
STEP_KERNELS = ("relu_forward", "relu_backward", "affine_forward", "affine_backward",
                "batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_backward",
                "softmax_cross_entropy", "sgd_update", "sgd_momentum_update", "rmsprop_update", "adam_update")
REFERENCE = "naive"


class BackendUnavailableError(ImportError):
    """The named backend exists but cannot be used on this machine (the message says why)."""


_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}
_failed: dict[str, str] = {}
_default = AUTO
# use_backend's choice: local to the thread and the context (as scipy.fft.set_backend); unset = _default.
_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastconv_backend", default=None)


def _load(name: str) -> ModuleType | None:
    with _lock:
        if name in _loaded or name in _failed:
            return _loaded.get(name)
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
            missing = [k for k in KERNELS if not callable(getattr(module, k, None))]
            if missing:
                raise ImportError(f"backend module lacks {', '.join(missing)}")
        except Exception as exc:  # a broken optional piece must not break the others
            _failed[name] = f"{type(exc).__name__}: {exc}"
            return None
        _loaded[name] = module
        return module


def available_backends() -> tuple[str, ...]:
    """Names of the backends usable on this machine, best first."""
    return tuple(name for name in BACKEND_MODULES if _load(name) is not None)


def installed_backends() -> tuple[str, ...]:
    """Backends that can load here, best first, without importing a JIT backend that is not loaded yet."""
    names = []
    for name in BACKEND_MODULES:
        needs = JIT_BACKENDS.get(name)
        if needs is not None and name not in _loaded and name not in _failed:
            if importlib.util.find_spec(needs) is not None:
                names.append(name)
        elif _load(name) is not None:
            names.append(name)
    return tuple(names)


def is_loaded(name: str) -> bool:
    return name in _loaded


def unavailable_reasons() -> dict[str, str]:
    """For each backend that failed to load: why."""
    available_backends()
    return dict(_failed)


def check_backend_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {type(name).__name__}")
    if name != AUTO and name not in BACKEND_MODULES:
        raise ValueError(f"backend must be one of {(AUTO, *BACKEND_MODULES)}, got {name!r}")
    return name


def get_module(name: str) -> ModuleType:
    """The kernel module of a concrete backend, or an error saying why it is not usable."""
    module = _load(check_backend_name(name))
    if module is None:
        hint = getattr(importlib.import_module("fastconv.backends"), "INSTALL_HINTS", {}).get(name, "")
        raise BackendUnavailableError(
            f"backend {name!r} is not available on this machine: {_failed[name]}. {hint}".strip())
    return module


def kernel(name: str, function: str):
    """Backend ``name``'s ``function``, or the reference's when the backend has none (see STEP_KERNELS)."""
    found = getattr(get_module(name), function, None)
    return found if found is not None else getattr(get_module(REFERENCE), function)


def taking(name: str, op: str, signature: tuple) -> str:
    """``name``, or, when that backend declines the call (its optional ``supports(op, signature)``
    says no: a size beyond its indexing, say), the first other available backend that takes it."""
    def takes(candidate: str) -> bool:
        supports = getattr(get_module(candidate), "supports", None)
        return supports is None or supports(op, signature)

    if takes(name):
        return name
    return next((other for other in available_backends() if other != name and takes(other)), REFERENCE)


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``"auto"`` picks the fastest per call).

    A ``use_backend`` block in effect in the calling context still takes precedence there.
    """
    global _default
    check_backend_name(name)
    if name != AUTO:
        get_module(name)
    _default = name


def get_backend() -> str:
    """The backend in effect here: the innermost ``use_backend`` of this context, else the process default."""
    chosen = _context_choice.get()
    return _default if chosen is None else chosen


@contextmanager
def use_backend(name: str):
    """Use ``name`` inside the block, in this thread / context only: ``with fastconv.use_backend("naive"): ...``.

    Other threads keep their own choice (or the process default); blocks nest.
    """
    check_backend_name(name)
    if name != AUTO:
        get_module(name)
    token = _context_choice.set(name)
    try:
        yield
    finally:
        _context_choice.reset(token)
