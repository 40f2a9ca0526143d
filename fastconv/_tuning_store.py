"""Where `auto` keeps its decisions between processes: a small JSON file, written atomically under a lock.

The file holds one entry per decision, keyed by everything that makes the decision valid: the
fastconv version, the CPU model, the thread count, the set of backends installed, and the op
signature (shapes, arguments, dtype). A file that cannot be read, is not JSON, or is not one of
ours is ignored with a warning (and, when it is not JSON, replaced by the next write); it never
stops a kernel call. Writers take an exclusive lock on ``<file>.lock``, merge their entries into
what is on disk and ``os.replace`` a finished temporary file, so processes writing at once
neither corrupt the file nor drop each other's decisions.

Location: ``$FASTCONV_AUTOTUNE_CACHE`` if set (empty: keep decisions in memory only), else
``$XDG_CACHE_HOME/fastconv/autotune.json`` (``~/.cache/fastconv/autotune.json``).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from contextlib import contextmanager

SCHEMA = "fastconv-autotune/1"
ENV_PATH = "FASTCONV_AUTOTUNE_CACHE"

_lock = threading.Lock()
_warned: set[str] = set()


def path() -> str | None:
    """The decisions file, or None when persisting is switched off (``FASTCONV_AUTOTUNE_CACHE=``)."""
    chosen = os.environ.get(ENV_PATH)
    if chosen is not None:
        return os.path.expanduser(chosen) if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastconv", "autotune.json")


def _warn_once(file: str, problem: str) -> None:
    if (file, problem) not in _warned:
        _warned.add((file, problem))
        warnings.warn(f"fastconv: ignoring the autotune cache {file}: {problem}", RuntimeWarning, stacklevel=4)


class _Unusable(Exception):
    """The file exists but is not a decisions file we may use; ``replaceable``: safe to write over."""

    def __init__(self, problem: str, replaceable: bool):
        super().__init__(problem)
        self.replaceable = replaceable


def _read_file(file: str) -> dict[str, dict]:
    """The entries in ``file`` ({} if there is none); _Unusable if it cannot be used."""
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unusable(f"cannot read it ({exc})", replaceable=isinstance(exc, UnicodeDecodeError)) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable(f"not valid JSON ({exc})", replaceable=True) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("entries"), dict):
        raise _Unusable(f"not a fastconv autotune file (expected schema {SCHEMA!r})", replaceable=False)
    return {key: value for key, value in doc["entries"].items()
            if isinstance(key, str) and isinstance(value, dict) and isinstance(value.get("backend"), str)}


def load() -> dict[str, dict]:
    """Every stored entry by key; {} when there is no usable file (with a warning for a broken one)."""
    file = path()
    if file is None:
        return {}
    try:
        return _read_file(file)
    except _Unusable as exc:
        _warn_once(file, str(exc))
        return {}


@contextmanager
def _exclusive(file: str):
    """Hold an exclusive lock on ``file + '.lock'`` (across processes) while the block runs."""
    with _lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the atomic replace still keeps the file whole
            yield
            return
        with open(file + ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def save(entries: dict[str, dict]) -> bool:
    """Merge ``entries`` into the file (atomically, under the lock). False if it could not be written."""
    file = path()
    if file is None or not entries:
        return False
    try:
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        with _exclusive(file):
            try:
                merged = _read_file(file)
            except _Unusable as exc:
                if not exc.replaceable:
                    _warn_once(file, str(exc))
                    return False
                merged = {}
            merged.update(entries)
            _write_atomically(file, {"schema": SCHEMA, "entries": merged})
        return True
    except OSError as exc:
        _warn_once(file, f"cannot write it ({exc})")
        return False


def _write_atomically(file: str, doc: dict) -> None:
    directory = os.path.dirname(os.path.abspath(file))
    fd, temporary = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, file)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def clear() -> bool:
    """Delete the decisions file. False if there was none."""
    file = path()
    if file is None:
        return False
    try:
        os.unlink(file)
        return True
    except FileNotFoundError:
        return False
