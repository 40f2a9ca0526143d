"""Numba set-up for the numba backend: JIT cache location, threading layer, JIT flags, thread count."""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import tempfile
import threading
from contextlib import contextmanager, nullcontext

_BACKENDS_DIR = os.path.dirname(os.path.abspath(__file__))


def _is_writable_dir(directory: str) -> bool:
    """Whether files can be created in ``directory`` (made if missing); asks the filesystem, not the mode bits."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _user_cache_candidates(environ) -> list[str]:
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else environ.get("USERNAME", "user")
    return [os.path.join(xdg, "fastconv", "numba"),
            os.path.join(tempfile.gettempdir(), f"fastconv-numba-{uid}")]


def choose_cache_dir(environ, in_tree_dir: str, is_writable=_is_writable_dir) -> tuple[bool, str | None]:
    """(cache?, directory to use as NUMBA_CACHE_DIR or None to keep Numba's choice).

    Numba caches next to the source (``__pycache__``) by default. When that is not writable
    (a read-only site-packages) and the user chose no NUMBA_CACHE_DIR, use a per-user cache
    directory; when nothing is writable, run uncached rather than fail.
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return True, None
    if is_writable(in_tree_dir):
        return True, None
    for candidate in _user_cache_candidates(environ):
        if is_writable(candidate):
            return True, candidate
    return False, None


CACHE_ENABLED, _cache_dir = choose_cache_dir(os.environ, os.path.join(_BACKENDS_DIR, "__pycache__"))
if _cache_dir is not None:
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir  # Numba reads it at import and when it reloads its config


def _load_tbb() -> str | None:
    """Load libtbb.so.12 shipped by the ``tbb`` wheel (it lands in <prefix>/lib, off the loader path)."""
    names = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")
    prefixes = dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix))
    for prefix in prefixes:
        for lib_dir in ("lib", "Library/bin", "Lib"):
            for name in names:
                for path in glob.glob(os.path.join(prefix, lib_dir, name)):
                    try:
                        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                        return path
                    except OSError:
                        continue
    for name in names:  # maybe already on the loader path
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return name
        except OSError:
            continue
    return None


TBB_PATH = _load_tbb()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR and libtbb are in place)

if _cache_dir is not None:
    numba.config.CACHE_DIR = _cache_dir


def _tbb_layer_usable() -> bool:
    if TBB_PATH is None:
        return False
    try:
        from numba.np.ufunc import parallel, tbbpool  # noqa: F401
        parallel._check_tbb_version_compatible()
        return True
    except Exception:
        return False


# Numba's OpenMP layer kills a child forked after a parallel call, and its workqueue layer
# aborts when two Python threads run parallel kernels at once; TBB handles both. Without TBB
# we take workqueue (fork-safe) and serialize parallel calls with a lock.
USER_CHOSE_LAYER = bool(os.environ.get("NUMBA_THREADING_LAYER"))
if not USER_CHOSE_LAYER:
    numba.config.THREADING_LAYER = "tbb" if _tbb_layer_usable() else "workqueue"

_serial_lock = threading.Lock()
_layer: str | None = None


def threading_layer() -> str | None:
    """The layer Numba runs parallel kernels on, or None before the first parallel call."""
    global _layer
    if _layer is None:
        try:
            _layer = numba.threading_layer()
        except ValueError:
            return None
    return _layer


@contextmanager
def parallel_region():
    """Guard a parallel kernel call: serialized only where the threading layer is not thread-safe."""
    layer = threading_layer()
    with _serial_lock if layer in (None, "workqueue") else nullcontext():
        yield


def use_threads() -> int:
    """Apply fastconv's thread setting to Numba in the calling thread (Numba's is thread-local)."""
    from fastconv._threads import get_num_threads
    n = max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n


def jit(parallel: bool = False):
    """The one place JIT flags are set: cached, no fastmath, nogil so Python threads overlap.

    ``error_model="numpy"`` only drops the zero-division checks (our divisors are never zero);
    no flag here changes floating-point results.
    """
    return numba.njit(cache=CACHE_ENABLED, parallel=parallel, nogil=True, fastmath=False,
                      error_model="numpy", boundscheck=False)


def build_info() -> dict:
    return {
        "numba": numba.__version__,
        "threading_layer": threading_layer() or f"{numba.config.THREADING_LAYER} (not started yet)",
        "tbb": TBB_PATH,
        "max_threads": numba.config.NUMBA_NUM_THREADS,
        "cache": (numba.config.CACHE_DIR or os.path.join(_BACKENDS_DIR, "__pycache__")) if CACHE_ENABLED else None,
    }
