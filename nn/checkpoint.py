"""Training checkpoints as plain ``.npz`` archives: never pickled, written atomically.

A checkpoint holds the model state (name -> array), the optimizer state (nested dicts of
arrays and scalars, e.g. ``{"W1": {"learning_rate": 1e-3, "m": ..., "t": 7}}``), the epoch,
the training histories (name -> list of numbers) and free-form ``extra`` scalars. Nested dicts
are flattened into namespaced keys (``optim/W1/m``) of plain arrays, so loading uses
``allow_pickle=False`` and cannot run code.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "fastconv-nn-checkpoint"
VERSION = 1
_SEP = "/"


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, not a checkpoint, or does not match what loads it."""


class Checkpoint(NamedTuple):
    model_state: dict
    optimizer_state: dict
    epoch: int
    history: dict
    extra: dict


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            if not key or _SEP in key:
                raise ValueError(f"checkpoint keys must be non-empty and free of {_SEP!r}, got {key!r} in {prefix!r}")
            _flatten(f"{prefix}{_SEP}{key}", item, out)
        return
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(f"checkpoint entry {prefix!r} is not a plain numeric or string array "
                        f"(got {type(value).__name__}); only such arrays are stored")
    out[prefix] = array


def _unflatten(arrays: dict, section: str, scalars: bool) -> dict:
    """The nested dict stored under ``section``; 0-d arrays become Python scalars when ``scalars``."""
    result: dict = {}
    for name, array in arrays.items():
        parts = name.split(_SEP)
        if parts[0] != section:
            continue
        node = result
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = array.item() if scalars and array.ndim == 0 else array
    return result


def save_checkpoint(path, model_state, optimizer_state=None, epoch=0, history=None, extra=None) -> None:
    """Write a checkpoint to ``path`` atomically (a temporary file in the same directory, then rename).

    A crash mid-write leaves any previous checkpoint at ``path`` intact.
    """
    arrays: dict = {}
    _flatten("meta", {"format": FORMAT, "version": VERSION, "epoch": int(epoch)}, arrays)
    _flatten("model", dict(model_state), arrays)
    _flatten("optim", dict(optimizer_state or {}), arrays)
    _flatten("history", {k: np.asarray(v, dtype=np.float64) for k, v in (history or {}).items()}, arrays)
    _flatten("extra", dict(extra or {}), arrays)
    path = os.fspath(path)
    fd, tmp_path = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises FileNotFoundError if ``path`` does not exist and :class:`CheckpointError` if it is not
    a complete, uncorrupted fastconv checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path!r} is a single .npy array, not a checkpoint archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path!r} is not a readable checkpoint (corrupt or truncated?): "
                              f"{type(exc).__name__}: {exc}") from exc
    meta = _unflatten(arrays, "meta", scalars=True)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is an .npz archive but not a fastconv nn checkpoint (no {FORMAT!r} marker)")
    if meta.get("version") != VERSION or "epoch" not in meta:
        raise CheckpointError(f"{path!r} has checkpoint version {meta.get('version')!r}, this code reads {VERSION}")
    history = {k: v.tolist() for k, v in _unflatten(arrays, "history", scalars=False).items()}
    return Checkpoint(_unflatten(arrays, "model", scalars=False), _unflatten(arrays, "optim", scalars=True),
                      int(meta["epoch"]), history, _unflatten(arrays, "extra", scalars=True))
