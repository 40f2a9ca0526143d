"""Backend registry: which backends exist (built in, registered, from entry points), which load here, the
process default and the per-context choice."""
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
# Names a registered backend may not take: the choice "auto" and the peer rows of `fastconv bench`.
RESERVED_NAMES = frozenset({AUTO, "torch", "gemm"})


class BackendUnavailableError(ImportError):
    """The named backend exists but cannot be used on this machine (the message says why)."""


_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}
_failed: dict[str, str] = {}
# Backends registered from outside (register_backend, the "fastconv.backends" entry points), in
# registration order: fastconv._plugins.CheckedBackend objects, whose kernels check what they return.
_registered: dict = {}
_discovered = _discovering = False
_discovery_lock = threading.RLock()
_default = AUTO
# use_backend's choice: local to the thread and the context (as scipy.fft.set_backend); unset = _default.
_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastconv_backend", default=None)


def _load(name: str) -> ModuleType | None:
    found = _registered.get(name)
    if found is not None:
        return found
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
    """Names of the backends usable on this machine: the built-in ones best first, then the registered ones."""
    _discover()
    return tuple(name for name in BACKEND_MODULES if _load(name) is not None) + tuple(_registered)


def installed_backends() -> tuple[str, ...]:
    """What `auto` may choose from (and keys its stored decisions by): the built-in backends that can
    load here, best first, without importing a JIT backend that is not loaded yet, then the registered
    ones that opted in (``register_backend(..., auto=True)``)."""
    _discover()
    names = []
    for name in BACKEND_MODULES:
        needs = JIT_BACKENDS.get(name)
        if needs is not None and name not in _loaded and name not in _failed:
            if importlib.util.find_spec(needs) is not None:
                names.append(name)
        elif _load(name) is not None:
            names.append(name)
    return tuple(names) + tuple(name for name, backend in list(_registered.items()) if backend.auto)


def is_registered(name: str) -> bool:
    """Whether ``name`` was registered from outside the package (not a built-in backend)."""
    return name in _registered


def is_loaded(name: str) -> bool:
    return name in _loaded


def unavailable_reasons() -> dict[str, str]:
    """For each backend that failed to load (an entry point's too): why."""
    available_backends()
    return dict(_failed)


def check_backend_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {type(name).__name__}")
    if name != AUTO and name not in BACKEND_MODULES and name not in _registered:
        _discover()
        if name not in _registered and name not in _failed:
            raise ValueError(f"backend must be one of {(AUTO, *BACKEND_MODULES, *_registered)}, got {name!r}")
    return name


def get_module(name: str) -> ModuleType:
    """The kernel module of a concrete backend (a registered one's checked kernels), or an error saying
    why it is not usable."""
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


def register_backend(name: str, backend, fallback: str = "im2col", *, auto: bool = False,
                     replace: bool = False) -> None:
    """Make ``backend`` usable as ``name`` everywhere a built-in backend is: ``available_backends()``,
    ``use_backend`` / ``set_backend`` / ``backend=``, ``fastconv bench`` and ``fastconv.testing.check_backend``.

    ``backend`` is a module, or any object, with kernel functions of the backend protocol (see
    ``fastconv.backends``); the kernels it lacks are ``fallback``'s (an available backend), so a
    conv-only variant gives every answer. What its kernels return is checked (shape, dtype) and
    whatever they raise is re-raised as ``BackendError`` naming it: a wrong result is never used.
    ``auto=True`` makes it a candidate of ``auto`` (which then times it beside the built-in ones
    on large calls); ``replace=True`` allows taking a name registered before. Registering forgets
    `auto`'s decisions made in this process (the stored ones are keyed by the candidates).
    """
    _register(name, backend, fallback, auto, replace)
    _forget_auto_decisions()


def _register(name: str, backend, fallback: str, auto: bool, replace: bool) -> None:
    from . import _plugins
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"backend name must be a Python identifier (a table column, a CLI value), got {name!r}")
    if name in BACKEND_MODULES or name in RESERVED_NAMES:
        raise ValueError(f"backend name {name!r} is taken by fastconv; choose another")
    if name in _registered and not replace:
        raise ValueError(f"a backend named {name!r} is registered already (replace=True to replace it)")
    if not isinstance(auto, bool):
        raise TypeError(f"auto must be True or False, got {auto!r}")
    if fallback == name or check_backend_name(fallback) == AUTO:
        raise ValueError(f"fallback must be another concrete backend, got {fallback!r}")
    checked = _plugins.CheckedBackend(name, backend, fallback, get_module(fallback), auto)
    with _lock:
        _registered.pop(name, None)  # a replaced backend moves to the end, as a new one
        _registered[name] = checked
        _failed.pop(name, None)


def unregister_backend(name: str) -> None:
    """Remove a backend registered with ``register_backend`` (or found through an entry point)."""
    global _default
    if name not in _registered:
        raise ValueError(f"no registered backend named {name!r} (registered: {', '.join(_registered) or 'none'})")
    with _lock:
        del _registered[name]
        if _default == name:
            _default = AUTO
    _forget_auto_decisions()


def _forget_auto_decisions() -> None:
    from . import _auto  # imports this module: imported when the candidates change, not before
    _auto.clear()


def _discover() -> None:
    """Register the backends other packages declare in the entry point group "fastconv.backends", once.

    An entry point names a module or an object (``pkg.variant`` or ``pkg.variant:KERNELS``); its
    optional ``FALLBACK`` (a backend name) and ``AUTO`` (bool) attributes are register_backend's
    arguments. One that fails to load or register is reported by ``unavailable_reasons()``.
    """
    global _discovered, _discovering
    if _discovered:
        return
    with _discovery_lock:  # other threads wait for the whole set
        # _discovering: this thread is inside (a plug-in calling available_backends() on import).
        if _discovered or _discovering:
            return
        _discovering = True
        try:
            _register_entry_points()
        finally:
            _discovering = False
            _discovered = True


def _register_entry_points() -> None:
    from importlib.metadata import entry_points
    for point in entry_points(group="fastconv.backends"):
        if point.name in BACKEND_MODULES or point.name in _registered:
            continue
        try:
            backend = point.load()
            # No decisions of auto's to forget: auto asks for its candidates, so discovers, first.
            _register(point.name, backend, getattr(backend, "FALLBACK", "im2col"),
                      bool(getattr(backend, "AUTO", False)), False)
        except Exception as exc:  # a broken plug-in must not break the other backends
            _failed[point.name] = f"entry point {point.value!r}: {type(exc).__name__}: {exc}"


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
