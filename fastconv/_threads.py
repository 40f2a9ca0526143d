"""One thread knob for every backend and the BLAS libraries under them."""
from __future__ import annotations

import numbers
import os
import threading
from contextlib import contextmanager

from . import _blas

_lock = threading.Lock()
_num_threads: int | None = None
_pin_users = 0
_pinned_saved: list[tuple[_blas.BlasLibrary, int]] = []


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads fastconv kernels use (default: every usable core)."""
    return usable_cores() if _num_threads is None else _num_threads


def threads_for(work: float, grain: float) -> int:
    """Threads for a call doing ``work`` units, at least ``grain`` units each (fastconv._tuning's
    GRAIN_*), at most get_num_threads()."""
    return max(1, min(get_num_threads(), int(work // grain)))


def set_num_threads(n: int | None) -> None:
    """Set the thread count for Numba, OpenMP and the BLAS under every backend.

    ``None`` means every usable core. The setting is process-wide: it holds for calls
    made from any Python thread, and may itself be made from any Python thread.
    """
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
        raise TypeError(f"n must be a positive int or None, got {n!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    with _lock:
        _num_threads = None if n is None else int(n)
        count = get_num_threads()
        pinned = {id(lib) for lib, _ in _pinned_saved}
        for lib in _blas.libraries():
            if id(lib) not in pinned:
                lib.set_threads(count)
        # A library pinned by a running kernel takes the new count when the pin ends.
        _pinned_saved[:] = [(lib, count) for lib, _ in _pinned_saved]


def blas_threads() -> dict[str, int]:
    """Each loaded BLAS library's current thread count, by file path."""
    return {lib.filepath: lib.get_threads() for lib in _blas.libraries()}


@contextmanager
def inner_blas_single_threaded():
    """Pin scipy's BLAS to one thread while compiled kernels call it from their own threads.

    Works from any Python thread (the pin is process-wide, as OpenBLAS's pool is) and is
    reference-counted, so concurrent calls restore the setting only when the last one leaves.
    """
    global _pin_users
    with _lock:
        if _pin_users == 0:
            _pinned_saved[:] = [(lib, lib.get_threads()) for lib in _blas.scipy_libraries()]
            for lib, _ in _pinned_saved:
                lib.set_threads(1)
        _pin_users += 1
    try:
        yield
    finally:
        with _lock:
            _pin_users -= 1
            if _pin_users == 0:
                for lib, count in _pinned_saved:
                    lib.set_threads(count)
                _pinned_saved.clear()
