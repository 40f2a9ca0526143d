"""The BLAS libraries loaded in this process, and their thread counts, settable from any Python thread.

threadpoolctl finds the libraries; setting an OpenBLAS thread count goes straight to the
library's own ``openblas_set_num_threads``. Since threadpoolctl 3.8, an OpenBLAS built with
pthreads (the one numpy's and scipy's wheels ship) takes limits through threadpoolctl only
from its first "controlling" Python thread and silently ignores every other thread, because
its thread pool is process-wide. fastconv pins scipy's BLAS from whichever thread calls a
kernel, so it asks OpenBLAS directly: the setting is process-wide either way.
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Callable

_SYMBOL_PREFIXES = ("", "scipy_")
_SYMBOL_SUFFIXES = ("", "64_", "_64")


@dataclass(frozen=True)
class BlasLibrary:
    """One loaded BLAS: where it is, whether scipy's compiled BLAS (``cython_blas``) calls it, its threads."""

    filepath: str
    internal_api: str
    serves_scipy: bool
    get_threads: Callable[[], int]
    set_threads: Callable[[int], None]


def _openblas_functions(filepath: str):
    """(get, set) of OpenBLAS's own thread-count functions, or None if not found."""
    try:
        library = ctypes.CDLL(filepath, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    for prefix in _SYMBOL_PREFIXES:
        for suffix in _SYMBOL_SUFFIXES:
            getter = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            setter = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                getter.restype, getter.argtypes = ctypes.c_int, []
                setter.restype, setter.argtypes = None, [ctypes.c_int]
                return getter, setter
    return None


def _serves_scipy(filepath: str) -> bool:
    return "scipy.libs" in filepath or "scipy" in os.path.basename(os.path.dirname(filepath))


def _discover() -> list[BlasLibrary]:
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS so threadpoolctl can see it)
    from threadpoolctl import ThreadpoolController

    found = []
    for controller in ThreadpoolController().select(user_api="blas").lib_controllers:
        functions = None
        if controller.internal_api == "openblas" and getattr(controller, "threading_layer", "") != "openmp":
            functions = _openblas_functions(controller.filepath)
        if functions is not None:
            getter, setter = functions
            get_threads, set_threads = getter, setter
        else:  # MKL, BLIS, an OpenMP OpenBLAS: threadpoolctl's per-thread or global setting works from any thread
            get_threads, set_threads = (lambda c=controller: c.num_threads), controller.set_num_threads
        found.append(BlasLibrary(controller.filepath, controller.internal_api, _serves_scipy(controller.filepath),
                                 get_threads, set_threads))
    return found


_lock = threading.Lock()
_libraries: list[BlasLibrary] | None = None


def libraries() -> list[BlasLibrary]:
    """Every BLAS library in the process (found once; numpy's and scipy's are loaded by then)."""
    global _libraries
    with _lock:
        if _libraries is None:
            _libraries = _discover()
        return _libraries


def scipy_libraries() -> list[BlasLibrary]:
    """The BLAS libraries that the compiled kernels reach through scipy's ``cython_blas``."""
    return [lib for lib in libraries() if lib.serves_scipy]
