"""The cython backend's runtime: loading the compiled kernels (OpenMP wait policy), team sizes, and fork safety.

fork: GNU OpenMP (libgomp) keeps its worker pool in the thread that started a parallel region.
A ``fork()`` child has only the forking thread, whose pool now names workers that do not
exist there, so libgomp's next parallel region from that thread waits forever (measured: a
multiprocessing 'fork' child hangs). Threads created in the child start with no pool and work.
So after a fork (``os.register_at_fork``) the kernels called from the child's surviving
thread run on a helper thread created in the child: forked children compute in parallel and
do not hang. Other threads of the child call the kernels directly.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .._threads import get_num_threads, threads_for


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as fh:
            return "libgomp" in fh.read()
    except OSError:  # not Linux: cannot tell, so assume another library already chose
        return True


def _import_kernels():
    """Import the compiled kernels, letting the OpenMP runtime they load wait passively.

    libgomp reads OMP_WAIT_POLICY once, when it is loaded. Its default spins idle workers for
    a while after each parallel region, which on a machine shared with other work (the usual
    case for a 2-core box running tests) steals the very cores the next call needs: measured
    here, 2-thread pooling ran 2-3x slower than with passive waiting. So unless the user set
    OMP_WAIT_POLICY, or a library loaded libgomp first (torch ships one with the same soname,
    and the process then shares it), the import happens with OMP_WAIT_POLICY=PASSIVE.
    """
    choose = "OMP_WAIT_POLICY" not in os.environ and not _libgomp_loaded()
    if choose:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from . import _cy_conv, _cy_layers, _cy_pool, _cy_winograd
    except ImportError as exc:
        raise ImportError(
            f"the compiled kernels of the cython backend are not built ({exc}). Build them with "
            "`pip install .`, or in a checkout `pip install -e . --no-build-isolation` "
            "(or `python setup.py build_ext --inplace`)") from exc
    finally:
        if choose:
            del os.environ["OMP_WAIT_POLICY"]
    return _cy_conv, _cy_layers, _cy_pool, _cy_winograd, choose


_cy_conv, _cy_layers, _cy_pool, _cy_winograd, PASSIVE_WAIT_SET_HERE = _import_kernels()
OPENMP = _cy_conv.compiled_with()["openmp"]


def team(work_items: int) -> int:
    """OpenMP team size for a call of ``work_items`` independent items: 1 in a serial build."""
    return max(1, min(get_num_threads(), work_items)) if OPENMP else 1


def team_for(work: float, grain: float) -> int:
    """OpenMP team size for ``work`` units that are worth a thread per ``grain`` (see fastconv._threads)."""
    return threads_for(work, grain) if OPENMP else 1


# Set in a fork() child: the surviving thread, whose libgomp pool is stale, and the helper
# thread that runs kernels on its behalf.
_stale_pool_thread: int | None = None
_helper: ThreadPoolExecutor | None = None


def _after_fork_in_child() -> None:
    global _stale_pool_thread, _helper
    _stale_pool_thread = threading.get_ident()
    _helper = None  # the parent's helper thread did not survive the fork either


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def build_info() -> dict:
    """How the extension was compiled (OpenMP, -march=native, bounds checks) and how it runs here."""
    info = _cy_conv.compiled_with()
    info["threads"] = get_num_threads()
    info["forked_child"] = _stale_pool_thread is not None
    info["omp_wait_policy"] = "PASSIVE (set by fastconv)" if PASSIVE_WAIT_SET_HERE else os.environ.get(
        "OMP_WAIT_POLICY", "chosen by whoever loaded libgomp first")
    return info


def run(kernel, *args):
    """Call a compiled kernel, from a fresh thread if this thread's OpenMP pool died in a fork."""
    global _helper
    if _stale_pool_thread is None or threading.get_ident() != _stale_pool_thread:
        return kernel(*args)
    if _helper is None:
        _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastconv-openmp")
    return _helper.submit(kernel, *args).result()
