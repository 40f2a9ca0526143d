"""Data sets without downloads: scikit-learn's digits, and MNIST IDX / CIFAR-10 binary files a user already has."""
from __future__ import annotations

import gzip
import numbers
import os
import zlib

import numpy as np

__all__ = ["load_digits", "load_mnist_idx", "load_cifar10", "CIFAR10_CLASSES"]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
_GZIP_MAGIC = b"\x1f\x8b"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_DIRNAME = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_IMAGE_SHAPE = (3, 32, 32)  # each record stores the whole R plane, then G, then B, each row-major
_CIFAR10_RECORD_BYTES = 1 + int(np.prod(CIFAR10_IMAGE_SHAPE))


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


def _read_cifar10_batch(path) -> tuple:
    """``(images uint8 (N, 3, 32, 32), labels uint8 (N,))`` from one CIFAR-10 binary batch file."""
    try:
        raw = _read_bytes(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{os.fspath(path)!r} not found; load_cifar10 reads the CIFAR-10 binary version "
                                f"(suitable for C programs) from {CIFAR10_URL}, unpacked to a "
                                f"{CIFAR10_DIRNAME}/ directory; nothing is downloaded") from exc
    if not raw or len(raw) % _CIFAR10_RECORD_BYTES:
        raise ValueError(f"{os.fspath(path)!r}: {len(raw)} bytes is not a positive whole number of "
                         f"{_CIFAR10_RECORD_BYTES}-byte CIFAR-10 records (1 label + 3072 pixels); truncated?")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR10_RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= len(CIFAR10_CLASSES))
    if bad.size:
        raise ValueError(f"{os.fspath(path)!r}: record {bad[0]} has label {labels[bad[0]]}, expected 0..9; "
                         f"not a CIFAR-10 binary batch?")
    return records[:, 1:].reshape(-1, *CIFAR10_IMAGE_SHAPE), labels


def _cifar10_dir(root) -> str:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
    root = os.fspath(root)
    nested = os.path.join(root, CIFAR10_DIRNAME)
    return nested if os.path.isdir(nested) else root


def load_cifar10(root, num_validation=0, subtract_mean=False, dtype=np.float32) -> dict:
    """Read the CIFAR-10 binary version (``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``).

    ``root`` is the unpacked ``cifar-10-batches-bin`` directory or its parent. Images are
    (N, 3, 32, 32) in ``dtype`` holding the raw pixel values 0..255 as floats (no rescaling, as
    CS231n's ``get_CIFAR10_data``); labels are int64 indices into ``CIFAR10_CLASSES``. With
    ``num_validation > 0`` the last ``num_validation`` training records become X_val / y_val.
    With ``subtract_mean=True`` the mean image of the (remaining) training set is subtracted
    from every split and returned as ``mean_image``.

    Returns a dict with X_train, y_train, (X_val, y_val,) X_test, y_test (and mean_image).
    """
    if isinstance(num_validation, bool) or not isinstance(num_validation, numbers.Integral):
        raise TypeError(f"num_validation must be an int, got {type(num_validation).__name__}")
    if num_validation < 0:
        raise ValueError(f"num_validation must be >= 0, got {num_validation}")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}") from exc
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    directory = _cifar10_dir(root)
    train = [_read_cifar10_batch(os.path.join(directory, name)) for name in CIFAR10_TRAIN_FILES]
    X_test, y_test = _read_cifar10_batch(os.path.join(directory, CIFAR10_TEST_FILE))
    X_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    num_training = len(y_train) - num_validation
    if num_training < 1:
        raise ValueError(f"num_validation must leave at least one training record: got {num_validation} "
                         f"of the {len(y_train)} training records")
    data = {"X_train": X_train[:num_training], "y_train": y_train[:num_training]}
    if num_validation:
        data.update(X_val=X_train[num_training:], y_val=y_train[num_training:])
    data.update(X_test=X_test, y_test=y_test)
    data = {key: value.astype(dtype if key.startswith("X") else np.int64) for key, value in data.items()}
    if subtract_mean:
        # accumulate in float64 so a float32 mean over 50000 images keeps its precision
        mean_image = data["X_train"].mean(axis=0, dtype=np.float64).astype(dtype)
        for key in ("X_train", "X_val", "X_test"):
            if key in data:
                data[key] -= mean_image  # these arrays are fresh copies made above
        data["mean_image"] = mean_image
    return data
