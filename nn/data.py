"""Data sets without downloads: scikit-learn's handwritten digits, and MNIST IDX files a user already has."""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["load_digits", "load_mnist_idx"]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
_GZIP_MAGIC = b"\x1f\x8b"


def load_digits(val_fraction=0.1, test_fraction=0.2, seed=0, center=False) -> dict:
    """The 1797 8x8 handwritten digits that scikit-learn ships, split into train / val / test.

    The splits are stratified by class and fixed by ``seed``. Images are (N, 1, 8, 8) float32
    scaled from the raw 0..16 counts to [0, 1]; with ``center=True`` the mean training image is
    then subtracted from every split (and returned as ``mean_image``). Labels are int64.

    Returns a dict with X_train, y_train, X_val, y_val, X_test, y_test (and mean_image when centred).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, 0 < test_fraction and their sum < 1, "
                         f"got {val_fraction}, {test_fraction}")
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    X_rest, X_test, y_rest, y_test = train_test_split(images, labels, test_size=test_fraction, stratify=labels,
                                                      random_state=seed)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=val_fraction / (1 - test_fraction),
                                                      stratify=y_rest, random_state=seed)
    data = {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val, "X_test": X_test, "y_test": y_test}
    if center:
        mean_image = X_train.mean(axis=0)
        for key in ("X_train", "X_val", "X_test"):
            data[key] = data[key] - mean_image
        data["mean_image"] = mean_image
    return {key: np.ascontiguousarray(value) for key, value in data.items()}


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path!r}: corrupt or truncated gzip data ({exc})") from exc


def _read_idx(path, magic: int, ndim: int, what: str) -> np.ndarray:
    raw = _read_bytes(path)
    header_size = 4 + 4 * ndim
    if len(raw) >= 4 and int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{os.fspath(path)!r}: magic number {int.from_bytes(raw[:4], 'big')}, expected {magic} "
                         f"for an IDX {what} file")
    if len(raw) < header_size:
        raise ValueError(f"{os.fspath(path)!r}: {len(raw)} bytes, too short for an IDX {what} header "
                         f"({header_size} bytes); truncated?")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if ndim > 1 and 0 in dims[1:]:
        raise ValueError(f"{os.fspath(path)!r}: image dimensions {dims[1:]} must be positive")
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(f"{os.fspath(path)!r}: {len(raw)} bytes but the header {dims} implies {expected}; "
                         f"the file is {'truncated' if len(raw) < expected else 'followed by extra data'}")
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def load_mnist_idx(images_path, labels_path):
    """Read an MNIST-format pair of IDX files (raw or gzip-compressed, detected by content).

    Returns ``(X, y)``: X (N, 1, rows, cols) float32 scaled to [0, 1], y (N,) int64. Raises
    ValueError for a wrong magic number (2051 images, 2049 labels), a truncated or oversized
    file, a corrupt gzip stream, or image and label counts that differ.
    """
    images = _read_idx(images_path, IMAGES_MAGIC, 3, "images")
    labels = _read_idx(labels_path, LABELS_MAGIC, 1, "labels")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images in {os.fspath(images_path)!r} but {labels.shape[0]} labels "
                         f"in {os.fspath(labels_path)!r}")
    X = (images.astype(np.float32) / np.float32(255))[:, None, :, :]
    return X, labels.astype(np.int64)
