"""The module API: PyTorch-like layers that hold parameters and call the functional layers.

Forward and backward are explicit: ``out = module(x)`` keeps what the backward pass needs,
``dx = module.backward(dout)`` returns the input gradient and ADDS the parameter gradients to
each ``Parameter.grad`` (clear them with ``zero_grad()``). Parameters and buffers are found by
walking attributes, so a new module only assigns them.
"""
from __future__ import annotations

import abc
import math

import numpy as np

import fastconv

from . import layers

__all__ = ["Parameter", "Buffer", "Module", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "Linear",
           "ReLU", "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "CrossEntropyLoss", "MSELoss",
           "Identity", "Sigmoid", "Tanh", "ModuleList", "BCELoss", "LayerNorm", "GroupNorm"]


class Parameter:
    """A trainable array ``data`` and its accumulated gradient ``grad`` (same shape and dtype)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Buffer:
    """A non-trainable array saved with the module state (e.g. BatchNorm running statistics)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = np.ascontiguousarray(data)

    def __repr__(self) -> str:
        return f"Buffer(shape={self.data.shape}, dtype={self.data.dtype})"


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, (int, np.integer)) else tuple(value)


def _float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _float_input(name, x) -> np.ndarray:
    """``x`` itself when it is a float32 or float64 array; TypeError naming ``name`` otherwise."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        kind = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name} must be a float32 or float64 numpy.ndarray, got {kind}")
    return x


class Module(abc.ABC):
    """Base class: child modules, parameters and buffers are whatever the attributes hold."""

    def __init__(self):
        self.training = True
        self._cache = None

    @abc.abstractmethod
    def forward(self, *inputs):
        """Output for ``inputs``; keeps what :meth:`backward` needs."""

    @abc.abstractmethod
    def backward(self, dout):
        """Gradient with respect to the input of the last forward call; accumulates parameter grads."""

    def backward_params(self, dout) -> None:
        """:meth:`backward` for a module whose input needs no gradient (a network's first layer):
        parameter gradients only. Modules that can skip the input gradient override this."""
        self.backward(dout)

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def _saved(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def named_children(self):
        """``(name, module)`` for each module attribute, and for modules inside list/tuple attributes."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def _named(self, kind, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, kind):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named(kind, f"{prefix}{name}.")

    def named_parameters(self):
        """``(dotted name, Parameter)`` pairs, this module's first, then each child's."""
        return self._named(Parameter)

    def parameters(self):
        return (param for _, param in self.named_parameters())

    def named_buffers(self):
        return self._named(Buffer)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode: bool = True):
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, evaluation mode."""
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self) -> dict:
        """Copies of every parameter and buffer array, by dotted name."""
        return {name: item.data.copy() for kind in (Parameter, Buffer) for name, item in self._named(kind)}

    def load_state_dict(self, state) -> None:
        """Set every parameter and buffer from ``state``; names and shapes must match exactly."""
        items = {name: item for kind in (Parameter, Buffer) for name, item in self._named(kind)}
        missing, unexpected = sorted(set(items) - set(state)), sorted(set(state) - set(items))
        if missing or unexpected:
            raise ValueError(f"state does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}")
        for name, item in items.items():
            value = np.asarray(state[name])
            if value.shape != item.data.shape:
                raise ValueError(f"state[{name!r}] has shape {value.shape}, expected {item.data.shape}")
            item.data = value.astype(item.data.dtype, copy=True)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Example: ``Sequential(Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(128, 10))``.
    """

    def __init__(self, *modules):
        super().__init__()
        for module in modules:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Module instances, got {type(module).__name__}")
        self.layers = list(modules)

    def named_children(self):
        return ((str(i), module) for i, module in enumerate(self.layers))

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        # A module that can fuse a ReLU (Conv2d, BatchNorm) computes it in the same pass when a
        # ReLU follows it here: one pass over the activations fewer, forward and backward.
        self._fused = []
        i, layers = 0, self.layers
        while i < len(layers):
            module = layers[i]
            if i + 1 < len(layers) and type(layers[i + 1]) is ReLU and hasattr(module, "forward_relu"):
                x = module.forward_relu(x)
                self._fused.append((module, layers[i + 1]))
                i += 2
            else:
                x = module(x)
                self._fused.append((module, None))
                i += 1
        self._cache = True
        return x

    def backward(self, dout, need_dx=True):
        """The input gradient; with ``need_dx=False`` (the input needs none, as a torch tensor
        without requires_grad) None, and the first module only accumulates its parameter gradients."""
        self._saved()
        modules = [module for module, _ in self._fused]
        for module in reversed(modules[1:]):
            dout = module.backward(dout)
        if need_dx:
            return modules[0].backward(dout) if modules else dout
        if modules:
            modules[0].backward_params(dout)
        return None

    def backward_params(self, dout) -> None:
        self.backward(dout, need_dx=False)


class Conv2d(Module):
    """2-D convolution (cross-correlation) through :func:`fastconv.conv2d_forward`.

    Args: ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``
    (int or pair), ``groups``, ``bias``; ``backend`` (None = the default backend); ``dtype``;
    ``rng`` (seed or Generator) for PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Shape: (N, C_in, H, W) -> (N, C_out, H_out, W_out) with
    ``H_out = floor((H + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, backend=None, dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.backend = backend
        rng = np.random.default_rng(rng)
        bound = 1 / math.sqrt(in_channels // groups * self.kernel_size[0] * self.kernel_size[1])
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_channels).astype(dtype)) if bias else None

    def forward(self, x, activation=None):
        bias = None if self.bias is None else self.bias.data
        out, self._cache = fastconv.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding,
                                                   self.dilation, self.groups, backend=self.backend,
                                                   activation=activation)
        return out

    def forward_relu(self, x):
        """``relu(self(x))`` in one kernel; :meth:`backward` then goes through the ReLU too."""
        return self.forward(x, activation="relu")

    def backward(self, dout, need_dx=True):
        dx, dw, db = fastconv.conv2d_backward(dout, self._saved(), need_dx=need_dx)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def backward_params(self, dout) -> None:
        self.backward(dout, need_dx=False)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text + (f", backend={self.backend!r}" if self.backend is not None else "")


class _Pool2d(Module):
    _forward = _backward = None  # the fastconv pair, set by each subclass

    def __init__(self, kernel_size, stride=None, padding=0, backend=None):
        super().__init__()
        self.kernel_size, self.padding, self.backend = kernel_size, padding, backend
        self.stride = kernel_size if stride is None else stride

    def forward(self, x):
        out, self._cache = type(self)._forward(x, self.kernel_size, self.stride, self.padding, backend=self.backend)
        return out

    def backward(self, dout):
        return type(self)._backward(dout, self._saved())

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text + (f", backend={self.backend!r}" if self.backend is not None else "")


class MaxPool2d(_Pool2d):
    """2-D max pooling through :func:`fastconv.max_pool2d_forward` (``stride=None``: = kernel_size).

    Shape: (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2*padding - kernel_size) / stride) + 1``.
    """

    _forward = staticmethod(fastconv.max_pool2d_forward)
    _backward = staticmethod(fastconv.max_pool2d_backward)


class AvgPool2d(_Pool2d):
    """2-D average pooling through :func:`fastconv.avg_pool2d_forward` (padding counts in the mean).

    Shape: as :class:`MaxPool2d`.
    """

    _forward = staticmethod(fastconv.avg_pool2d_forward)
    _backward = staticmethod(fastconv.avg_pool2d_backward)


class Linear(Module):
    """``y = x @ weight.T + bias`` with ``weight`` (out_features, in_features) as in PyTorch.

    Inputs (N, d_1, ..., d_k) are flattened to (N, in_features). Init U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        rng = np.random.default_rng(rng)
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_features).astype(dtype)) if bias else None

    def forward(self, x):
        # weight.T is a Fortran-ordered view: the kernel reads it as it is, no copy.
        out, self._cache = fastconv.affine_forward(x, self.weight.data.T, None if self.bias is None else self.bias.data)
        return out

    def backward(self, dout):
        dx, dw, db = fastconv.affine_backward(dout, self._saved())
        self.weight.grad += dw.T
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x):
        out, self._cache = fastconv.relu_forward(x)
        return out

    def backward(self, dout):
        return fastconv.relu_backward(dout, self._saved())


class BatchNorm1d(Module):
    """Batch normalization over (N, num_features) or (N, num_features, L) inputs, with learnable
    ``weight`` (gamma) and ``bias`` (beta).

    ``momentum`` follows PyTorch: ``running = (1 - momentum) * running + momentum * batch``
    (the running variance is the biased batch variance, as in CS231n). Training mode uses the
    batch statistics; evaluation mode the running ones. Computed on NCHW directly (no transposes).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int("num_features", num_features)
        if not (eps > 0 and 0 <= momentum <= 1):
            raise ValueError(f"need eps > 0 and 0 <= momentum <= 1, got eps={eps!r}, momentum={momentum!r}")
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.running_mean = Buffer(np.zeros(num_features, dtype))
        self.running_var = Buffer(np.ones(num_features, dtype))

    _input_dims = (2, 3)

    def forward(self, x, activation=None):
        if getattr(x, "ndim", None) not in self._input_dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(map(str, self._input_dims))}-D input x, "
                             f"got {getattr(x, 'ndim', type(x).__name__)}-D")
        gamma, beta = self.weight.data, self.bias.data
        if not self.training:
            out, self._cache = fastconv.batch_norm_forward(
                x, gamma, beta, self.running_mean.data.astype(gamma.dtype, copy=False),
                self.running_var.data.astype(gamma.dtype, copy=False), training=False, eps=self.eps,
                activation=activation)
            return out
        out, self._cache = fastconv.batch_norm_forward(x, gamma, beta, training=True, eps=self.eps,
                                                       activation=activation)
        keep = 1 - self.momentum
        self.running_mean.data = keep * self.running_mean.data + self.momentum * self._cache.mean
        self.running_var.data = keep * self.running_var.data + self.momentum * self._cache.var
        return out

    def forward_relu(self, x):
        """``relu(self(x))`` in one pass; :meth:`backward` then goes through the ReLU too."""
        return self.forward(x, activation="relu")

    def backward(self, dout):
        dx, dgamma, dbeta = fastconv.batch_norm_backward(dout, self._saved())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2d(BatchNorm1d):
    """Batch normalization per channel of (N, C, H, W) inputs (statistics over N, H, W)."""

    _input_dims = (4,)


class Dropout(Module):
    """Inverted dropout: in training mode each unit is zeroed with probability ``p`` (DROP probability).

    Evaluation mode (and ``p = 0``) is the identity. ``rng`` (seed or Generator) makes masks reproducible.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout p (drop probability) must be in [0, 1), got {p!r}")
        self.p = p
        self._rng = np.random.default_rng(rng)

    def forward(self, x):
        mode = "train" if self.training and self.p > 0 else "test"
        seed = int(self._rng.integers(2 ** 63)) if mode == "train" else None
        out, self._cache = layers.dropout_forward(x, {"mode": mode, "p": 1 - self.p, "seed": seed})
        return out

    def backward(self, dout):
        return layers.dropout_backward(dout, self._saved())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    """(N, d_1, ..., d_k) -> (N, d_1 * ... * d_k)."""

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._saved())


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of (N, C) scores against (N,) integer labels, averaged over N.

    ``loss = criterion(scores, y)``; ``dscores = criterion.backward()`` (scaled by ``dout``, default 1).
    """

    def forward(self, scores, y):
        loss, self._cache = fastconv.softmax_cross_entropy(scores, np.asarray(y))
        return loss

    def backward(self, dout=1.0):
        return self._saved() * dout


class MSELoss(Module):
    """Mean (``reduction='mean'``) or sum (``'sum'``) of squared differences between prediction and target."""

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, prediction, target):
        diff = prediction - np.asarray(target, prediction.dtype)
        self._cache = diff
        total = float(np.sum(diff * diff))
        return total / diff.size if self.reduction == "mean" else total

    def backward(self, dout=1.0):
        diff = self._saved()
        scale = 2 * dout / (diff.size if self.reduction == "mean" else 1)
        return diff * diff.dtype.type(scale)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a layer switched off)."""

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class _SquashingActivation(Module):
    """An elementwise activation whose derivative is a function of its output (kept for backward)."""

    def forward(self, x):
        out = self._function(_float_input("x", x))
        self._cache = out
        return out

    def backward(self, dout):
        return dout * self._derivative(self._saved())


class Sigmoid(_SquashingActivation):
    """``1 / (1 + exp(-x))`` elementwise, without overflow for large ``|x|``."""

    _function = staticmethod(layers.sigmoid)

    @staticmethod
    def _derivative(out):
        return out * (1 - out)


class Tanh(_SquashingActivation):
    """``tanh(x)`` elementwise."""

    _function = staticmethod(np.tanh)

    @staticmethod
    def _derivative(out):
        return 1 - out * out


class ModuleList(Module):
    """A list of modules whose parameters, buffers and mode belong to the module holding it.

    Names are ``0.weight``, ``1.bias``, ... as in PyTorch. A container only: it has no
    forward or backward of its own; iterate over it and call the modules.
    """

    def __init__(self, modules=None):
        super().__init__()
        self._modules = []
        if modules is not None:
            self.extend(modules)

    @staticmethod
    def _checked(module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Module instances, got module of type {type(module).__name__}")
        return module

    def append(self, module):
        self._modules.append(self._checked(module))
        return self

    def extend(self, modules):
        if not hasattr(modules, "__iter__"):
            raise TypeError(f"ModuleList.extend takes an iterable of modules, got modules of type "
                            f"{type(modules).__name__}")
        self._modules.extend([self._checked(module) for module in modules])
        return self

    def insert(self, index, module) -> None:
        self._modules.insert(index, self._checked(module))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._modules[index])
        return self._modules[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def named_children(self):
        return ((str(i), module) for i, module in enumerate(self._modules))

    def forward(self, *inputs):
        raise NotImplementedError("ModuleList is a container and has no forward: call the modules it holds")

    def backward(self, dout):
        raise NotImplementedError("ModuleList is a container and has no backward: call the modules it holds")


class BCELoss(Module):
    """Binary cross-entropy ``-(y log p + (1 - y) log(1 - p))`` of probabilities p in [0, 1], mean or sum.

    As in PyTorch each log is clamped at -100 (a finite loss for p = 0 or 1) and the gradient
    ``(p - y) / (p (1 - p))`` has its denominator clamped at 1e-12. Target y has the shape of p.
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, input, target):  # noqa: A002 (PyTorch's argument name)
        p = _float_input("input", input)
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError("input must hold probabilities in [0, 1] (e.g. a Sigmoid's output)")
        y = np.asarray(target, p.dtype)
        if y.shape != p.shape:
            raise ValueError(f"target must have input's shape {p.shape}, got {y.shape}")
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped next
            log_p, log_q = np.maximum(np.log(p), -100), np.maximum(np.log1p(-p), -100)
        self._cache = p, y
        total = -float(np.sum(y * log_p + (1 - y) * log_q))
        return total / p.size if self.reduction == "mean" else total

    def backward(self, dout=1.0):
        p, y = self._saved()
        scale = dout / (p.size if self.reduction == "mean" else 1)
        return (p - y) / np.maximum(p * (1 - p), p.dtype.type(1e-12)) * p.dtype.type(scale)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _positive_real(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class _AffineNorm(Module):
    """A normalization with optional learnable ``weight`` (gamma) and ``bias`` (beta) of one shape."""

    def __init__(self, eps, affine, shape, dtype):
        super().__init__()
        self.eps = _positive_real("eps", eps)
        self.weight = Parameter(np.ones(shape, dtype)) if affine else None
        self.bias = Parameter(np.zeros(shape, dtype)) if affine else None

    def _gamma_beta(self, shape, dtype):
        """gamma and beta reshaped for the functional layer; 1 and 0 without affine parameters."""
        if self.weight is None:
            return np.ones(shape, dtype), np.zeros(shape, dtype)
        return self.weight.data.reshape(shape), self.bias.data.reshape(shape)

    def _saved_for(self, dout):
        """The layer's cache and the input shape, once ``dout`` is checked to have that shape."""
        cache, shape = self._saved()
        if np.shape(dout) != shape:
            raise ValueError(f"dout must have the output's shape {shape}, got {np.shape(dout)}")
        return cache, shape

    def _accumulate(self, dgamma, dbeta) -> None:
        if self.weight is not None:
            self.weight.grad += dgamma.reshape(self.weight.grad.shape)
            self.bias.grad += dbeta.reshape(self.bias.grad.shape)


class LayerNorm(_AffineNorm):
    """Layer normalization over the trailing ``normalized_shape`` dims of each sample, with
    ``weight``/``bias`` of that shape (when ``elementwise_affine``), through :func:`layers.layernorm_forward`.

    Shape: (*, *normalized_shape) -> the same; the statistics use the biased variance.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=np.float32):
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        if not isinstance(normalized_shape, (tuple, list)) or not normalized_shape:
            raise TypeError(f"normalized_shape must be an int or a non-empty tuple of ints, got {normalized_shape!r}")
        self.normalized_shape = tuple(_positive_int("normalized_shape", size) for size in normalized_shape)
        self.elementwise_affine = bool(elementwise_affine)
        super().__init__(eps, self.elementwise_affine, self.normalized_shape, dtype)

    def forward(self, x):
        x = _float_input("x", x)
        if x.shape[max(x.ndim - len(self.normalized_shape), 0):] != self.normalized_shape:
            raise ValueError(f"x must end in the dims normalized_shape={self.normalized_shape}, got shape {x.shape}")
        features = math.prod(self.normalized_shape)
        gamma, beta = self._gamma_beta(features, x.dtype)
        out, cache = layers.layernorm_forward(x.reshape(-1, features), gamma, beta, {"eps": self.eps})
        self._cache = cache, x.shape
        return out.reshape(x.shape)

    def backward(self, dout):
        cache, shape = self._saved_for(dout)
        dx, dgamma, dbeta = layers.layernorm_backward(np.reshape(dout, (-1, math.prod(self.normalized_shape))), cache)
        self._accumulate(dgamma, dbeta)
        return dx.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(_AffineNorm):
    """Group normalization: the ``num_channels`` channels of each sample split into ``num_groups``
    groups, each normalized over its channels and positions; per-channel ``weight``/``bias`` when
    ``affine``. Through :func:`layers.spatial_groupnorm_forward`.

    Shape: (N, C, *) -> the same.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        self.num_groups = _positive_int("num_groups", num_groups)
        self.num_channels = _positive_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        self.affine = bool(affine)
        super().__init__(eps, self.affine, num_channels, dtype)

    def forward(self, x):
        x = _float_input("x", x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"x must be (N, num_channels={self.num_channels}, *), got shape {x.shape}")
        channels = (1, self.num_channels, 1, 1)
        gamma, beta = self._gamma_beta(channels, x.dtype)
        # the trailing dims, whatever their number, are one spatial axis to the (N, C, H, W) layer
        image = x.reshape(x.shape[0], self.num_channels, math.prod(x.shape[2:]), 1)
        out, cache = layers.spatial_groupnorm_forward(image, gamma, beta, self.num_groups, {"eps": self.eps})
        self._cache = cache, x.shape
        return out.reshape(x.shape)

    def backward(self, dout):
        cache, shape = self._saved_for(dout)
        dout = np.reshape(dout, (shape[0], self.num_channels, math.prod(shape[2:]), 1))
        dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dout, cache)
        self._accumulate(dgamma, dbeta)
        return dx.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
