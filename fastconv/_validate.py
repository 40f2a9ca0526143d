"""The shared front: argument normalization and validation, run once per call before any backend."""
from __future__ import annotations

import numbers

import numpy as np

from ._params import ConvParams, PoolParams, conv_out_size

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_int(name: str, value) -> int:
    # bool is an int subclass, but stride=True is a bug, not a request for stride 1.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r} ({type(value).__name__})")
    return int(value)


def as_pair(name: str, value) -> tuple[int, int]:
    """Normalize an int or an (h, w) pair to a tuple of two Python ints."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {len(items)} values: {value!r}")
        return _as_int(name, items[0]), _as_int(name, items[1])
    v = _as_int(name, value)
    return v, v


def _check_at_least(name: str, pair: tuple[int, int], low: int) -> None:
    if min(pair) < low:
        raise ValueError(f"{name} must be >= {low}, got {pair if pair[0] != pair[1] else pair[0]}")


def as_float_array(name: str, arr, ndim: int | None = None) -> np.ndarray:
    """Check type/dtype/ndim and return a C-contiguous, native-byte-order view or copy.

    The input is never modified; a copy is made only when the layout requires one.
    """
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {arr.ndim}-D array of shape {arr.shape}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # (np.ascontiguousarray would also turn a 0-D array into a 1-D one)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def same_dtype(ref_name: str, ref: np.ndarray, **others) -> None:
    for name, arr in others.items():
        if arr is not None and arr.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {arr.dtype} but {ref_name} has dtype {ref.dtype}; they must match")


def _check_nonempty_image(x: np.ndarray) -> None:
    n, c, h, w = x.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"x must have C, H, W >= 1, got shape {x.shape}")


def conv2d_args(x, w, b, stride, padding, dilation, groups):
    """Validate conv2d arguments; return clean (x, w, b, ConvParams)."""
    x = as_float_array("x", x, 4)
    w = as_float_array("w", w, 4)
    b = None if b is None else as_float_array("b", b)
    same_dtype("x", x, w=w, b=b)
    stride = as_pair("stride", stride)
    padding = as_pair("padding", padding)
    dilation = as_pair("dilation", dilation)
    groups = _as_int("groups", groups)
    _check_at_least("stride", stride, 1)
    _check_at_least("padding", padding, 0)
    _check_at_least("dilation", dilation, 1)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    _check_nonempty_image(x)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    if min(f, cg, kh, kw) < 1:
        raise ValueError(f"w must have every dimension >= 1, got shape {w.shape}")
    if c % groups:
        raise ValueError(f"x channels ({c}) must be divisible by groups ({groups})")
    if f % groups:
        raise ValueError(f"w filters ({f}) must be divisible by groups ({groups})")
    if cg != c // groups:
        raise ValueError(
            f"w must have shape (F, C // groups, KH, KW) = (F, {c // groups}, KH, KW) for x with "
            f"C={c} and groups={groups}, got w.shape[1]={cg}")
    if b is not None and b.shape != (f,):
        raise ValueError(f"b must have shape (F,) = ({f},), got {b.shape}")
    out_h = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = conv_out_size(wd, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"kernel (dilated extent {dilation[0] * (kh - 1) + 1}x{dilation[1] * (kw - 1) + 1}) is larger "
            f"than the padded input ({h + 2 * padding[0]}x{wd + 2 * padding[1]}): output size would be "
            f"{out_h}x{out_w}")
    params = ConvParams(stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        groups, out_h, out_w, kh, kw)
    return x, w, b, params


def pool2d_args(x, kernel_size, stride, padding):
    """Validate pooling arguments; return clean (x, PoolParams)."""
    x = as_float_array("x", x, 4)
    kernel = as_pair("kernel_size", kernel_size)
    stride = kernel if stride is None else as_pair("stride", stride)
    padding = as_pair("padding", padding)
    _check_at_least("kernel_size", kernel, 1)
    _check_at_least("stride", stride, 1)
    _check_at_least("padding", padding, 0)
    if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
        raise ValueError(f"padding must be at most half of kernel_size {kernel}, got {padding}")
    _check_nonempty_image(x)
    h, wd = x.shape[2:]
    out_h = conv_out_size(h, kernel[0], stride[0], padding[0])
    out_w = conv_out_size(wd, kernel[1], stride[1], padding[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"kernel_size {kernel} is larger than the padded input ({h + 2 * padding[0]}x"
            f"{wd + 2 * padding[1]}): output size would be {out_h}x{out_w}")
    return x, PoolParams(kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], out_h, out_w)


def dout_arg(dout, expected_shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Validate the upstream gradient against what forward produced."""
    dout = as_float_array("dout", dout, len(expected_shape))
    if dout.dtype != dtype:
        raise TypeError(f"dout has dtype {dout.dtype} but the forward pass used {dtype}; they must match")
    if dout.shape != tuple(expected_shape):
        raise ValueError(f"dout must have the forward output's shape {tuple(expected_shape)}, got {dout.shape}")
    return dout


def real_arg(name: str, value, low: float, high: float = float("inf"), low_open: bool = False,
             high_open: bool = False) -> float:
    """A finite real number in the interval (ends open or closed as flagged), as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not np.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def labels_arg(y, n: int, classes: int) -> np.ndarray:
    """Integer class labels (N,) in [0, classes), as a C-contiguous int64 array."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y must be a numpy.ndarray of integer labels, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y: labels must be integers, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape (N,) = ({n},) to match the scores, got {y.shape}")
    if n and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"y: labels must be in [0, {classes}), got values in [{y.min()}, {y.max()}]")
    return np.ascontiguousarray(y, dtype=np.int64)


def in_place_arg(name: str, arr, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An array updated in place: an ndarray of ``shape`` and ``dtype``, C-contiguous and writable."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but must have {dtype} (it is updated in place)")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if not arr.flags.c_contiguous or not arr.flags.writeable or not arr.dtype.isnative:
        raise ValueError(f"{name} must be a writable, C-contiguous array in native byte order "
                         "(it is updated in place)")
    return arr


def as_matrix(name: str, arr) -> np.ndarray:
    """A 2-D float array in C or Fortran order (a transposed view stays a view), native byte order."""
    if isinstance(arr, np.ndarray) and arr.ndim == 2 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
        return as_float_array(name, arr.T).T
    return as_float_array(name, arr, 2)


def activation_arg(activation) -> bool:
    """True for "relu", False for None (no activation); anything else is an error naming the argument."""
    if activation is None:
        return False
    if not isinstance(activation, str):
        raise TypeError(f"activation must be None or 'relu', got {type(activation).__name__}")
    if activation != "relu":
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return True


def flag_arg(name: str, value) -> bool:
    """A yes/no option: True or False (numpy's bools too), never a truthy stand-in like 1 or "no"."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)
