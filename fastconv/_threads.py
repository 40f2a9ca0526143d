"""One thread knob for every backend and the BLAS libraries under them."""
from __future__ import annotations

import numbers
import os
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_num_threads: int | None = None
_inner_blas_users = 0
_inner_blas_saved: list[tuple[object, int]] = []


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads fastconv kernels use (default: every usable core)."""
    return usable_cores() if _num_threads is None else _num_threads


def set_num_threads(n: int | None) -> None:
    """Set the thread count for Numba, OpenMP and the BLAS under every backend.

    ``None`` means every usable core. The setting is process-wide: it holds for calls
    made from any Python thread.
    """
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
        raise TypeError(f"n must be a positive int or None, got {n!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _num_threads = None if n is None else int(n)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=get_num_threads(), user_api="blas")


def _scipy_blas_controllers() -> list:
    """threadpoolctl controllers of the BLAS that scipy.linalg.cython_blas (and Numba's np.dot) calls."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library so threadpoolctl can see it)
    from threadpoolctl import ThreadpoolController
    return [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
            if "scipy.libs" in lib.filepath or "scipy" in os.path.basename(os.path.dirname(lib.filepath))]


_inner_controllers: list | None = None


@contextmanager
def inner_blas_single_threaded():
    """Pin scipy's BLAS to one thread while compiled kernels call it from their own threads.

    Reference-counted so concurrent calls from several Python threads restore the
    user's setting only when the last one leaves.
    """
    global _inner_blas_users, _inner_controllers, _inner_blas_saved
    with _lock:
        if _inner_controllers is None:
            _inner_controllers = _scipy_blas_controllers()
        if _inner_blas_users == 0:
            _inner_blas_saved = [(lib, lib.num_threads) for lib in _inner_controllers]
            for lib in _inner_controllers:
                lib.set_num_threads(1)
        _inner_blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _inner_blas_users -= 1
            if _inner_blas_users == 0:
                for lib, n in _inner_blas_saved:
                    lib.set_num_threads(n)
