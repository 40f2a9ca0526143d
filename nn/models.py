"""CS231n-style classifiers with ``.params`` and ``.loss(X, y=None)``: ThreeLayerConvNet, FullyConnectedNet,
and ModuleClassifier (any module-API network, seen the same way so the Solver can train it)."""
from __future__ import annotations

import contextlib
from collections.abc import MutableMapping

import numpy as np

from .layers import (affine_backward, affine_bn_relu_backward, affine_bn_relu_forward, affine_forward,
                     affine_ln_relu_backward, affine_ln_relu_forward, affine_relu_backward, affine_relu_forward,
                     conv_relu_pool_backward, conv_relu_pool_forward, dropout_backward, dropout_forward,
                     softmax_loss)
from .modules import _float_dtype
from .residual import basic_block, resnet

__all__ = ["ThreeLayerConvNet", "FullyConnectedNet", "ModuleClassifier", "seeded_global_rng", "resnet", "basic_block"]


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """The CS231n models draw their init from np.random (as CS231n's do): seed it for one
    construction, then put the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _l2(reg, params, weight_names, grads):
    """Add ``0.5 * reg * sum(W**2)`` per weight to the loss and ``reg * W`` to its gradient."""
    if reg == 0:  # the usual case: no pass over the weights (adding 0 * W would change no gradient)
        return 0.0
    penalty = 0.0
    for name in weight_names:
        penalty += 0.5 * reg * float(np.sum(params[name] * params[name]))
        grads[name] += reg * params[name]
    return penalty


class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    The convolution keeps the spatial size (stride 1, pad ``(filter_size - 1) // 2``); weights
    start as ``weight_scale * N(0, 1)``, biases as zeros. Conv and pool run on ``backend``
    (None = the default backend).
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100, num_classes=10,
                 weight_scale=1e-3, reg=0.0, dtype=np.float32, backend=None):
        self.dtype = _float_dtype(dtype)
        self.reg, self.backend = reg, backend
        channels, height, width = input_dim
        self.conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        pooled = num_filters * (height // 2) * (width // 2)
        shapes = {"W1": (num_filters, channels, filter_size, filter_size), "W2": (pooled, hidden_dim),
                  "W3": (hidden_dim, num_classes)}
        self.params = {}
        for i in (1, 2, 3):
            self.params[f"W{i}"] = (weight_scale * np.random.randn(*shapes[f"W{i}"])).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(shapes[f"W{i}"][0 if i == 1 else 1], self.dtype)

    def loss(self, X, y=None):
        """Class scores (N, C) when ``y`` is None, else ``(loss, grads)`` with grads keyed like params."""
        p = self.params
        X = np.asarray(X).astype(self.dtype, copy=False)
        pooled, pool_cache = conv_relu_pool_forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param,
                                                    self.backend)
        hidden, hidden_cache = affine_relu_forward(pooled, p["W2"], p["b2"])
        scores, scores_cache = affine_forward(hidden, p["W3"], p["b3"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dhidden, grads["W3"], grads["b3"] = affine_backward(dscores, scores_cache)
        dpooled, grads["W2"], grads["b2"] = affine_relu_backward(dhidden, hidden_cache)
        # The images need no gradient: skipping it halves the first conv's backward (PyTorch skips it too).
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dpooled, pool_cache, need_dx=False)
        loss += _l2(self.reg, p, ("W1", "W2", "W3"), grads)
        return loss, grads

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to rebuild the model's state (here: the params)."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state) -> None:
        _load_arrays(self.params, state, type(self).__name__)


def _load_arrays(target: dict, state, owner: str) -> None:
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(f"state does not match {owner}: missing {missing}, unexpected {unexpected}")
    for name, current in target.items():
        value = np.asarray(state[name])
        if value.shape != current.shape:
            raise ValueError(f"state[{name!r}] has shape {value.shape}, {owner} expects {current.shape}")
        target[name] = value.astype(current.dtype, copy=True)


# FullyConnectedNet's hidden layer, affine - [norm] - relu, per normalization: (forward, backward)
_HIDDEN_LAYERS = {None: (affine_relu_forward, affine_relu_backward),
                  "batchnorm": (affine_bn_relu_forward, affine_bn_relu_backward),
                  "layernorm": (affine_ln_relu_forward, affine_ln_relu_backward)}


class FullyConnectedNet:
    """``{affine - [batchnorm | layernorm] - relu - [dropout]} x (L - 1) - affine - softmax`` for any depth L.

    ``dropout`` is the probability of DROPPING a unit (0 = no dropout); ``normalization`` is None,
    'batchnorm' or 'layernorm'; ``seed`` makes dropout masks deterministic. Weights start as
    ``weight_scale * N(0, 1)``, biases as zeros, gammas as ones and betas as zeros.
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout=0.0, normalization=None,
                 reg=0.0, weight_scale=1e-2, dtype=np.float32, seed=None):
        if normalization not in _HIDDEN_LAYERS:
            raise ValueError(f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout (drop probability) must be in [0, 1), got {dropout!r}")
        self.dtype = _float_dtype(dtype)
        self.normalization, self.reg = normalization, reg
        self.use_dropout = dropout > 0
        self.num_layers = len(hidden_dims) + 1
        dims = [input_dim, *hidden_dims, num_classes]
        self.params = {}
        for i in range(1, self.num_layers + 1):
            self.params[f"W{i}"] = (weight_scale * np.random.randn(dims[i - 1], dims[i])).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(dims[i], self.dtype)
            if normalization and i < self.num_layers:
                self.params[f"gamma{i}"] = np.ones(dims[i], self.dtype)
                self.params[f"beta{i}"] = np.zeros(dims[i], self.dtype)
        self.dropout_param = {"mode": "train", "p": 1 - dropout}
        if seed is not None:
            self.dropout_param["seed"] = seed
        hidden_layers = range(self.num_layers - 1)
        self.bn_params = [{"mode": "train"} for _ in hidden_layers] if normalization == "batchnorm" else []
        self.ln_params = [{} for _ in hidden_layers] if normalization == "layernorm" else []

    def _hidden_param_names(self, i):
        names = [f"W{i}", f"b{i}"]
        return names + [f"gamma{i}", f"beta{i}"] if self.normalization else names

    def _hidden_args(self, i):
        """Hidden layer i's arguments after x: W, b[, gamma, beta, its bn_param / ln_param]."""
        args = [self.params[name] for name in self._hidden_param_names(i)]
        norm_params = self.bn_params or self.ln_params
        return args + [norm_params[i - 1]] if norm_params else args

    def loss(self, X, y=None):
        """Class scores (N, C) when ``y`` is None (test mode), else ``(loss, grads)`` (train mode)."""
        p = self.params
        mode = "test" if y is None else "train"
        self.dropout_param["mode"] = mode
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        out = np.asarray(X).astype(self.dtype, copy=False)
        caches = []
        hidden_forward, hidden_backward = _HIDDEN_LAYERS[self.normalization]
        for i in range(1, self.num_layers):
            out, hidden_cache = hidden_forward(out, *self._hidden_args(i))
            drop_cache = None
            if self.use_dropout:
                out, drop_cache = dropout_forward(out, self.dropout_param)
            caches.append((hidden_cache, drop_cache))
        last = self.num_layers
        scores, scores_cache = affine_forward(out, p[f"W{last}"], p[f"b{last}"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dout, grads[f"W{last}"], grads[f"b{last}"] = affine_backward(dscores, scores_cache)
        for i in range(self.num_layers - 1, 0, -1):
            hidden_cache, drop_cache = caches[i - 1]
            if drop_cache is not None:
                dout = dropout_backward(dout, drop_cache)
            dout, *hidden_grads = hidden_backward(dout, hidden_cache)
            grads.update(zip(self._hidden_param_names(i), hidden_grads))
        loss += _l2(self.reg, p, [f"W{i}" for i in range(1, self.num_layers + 1)], grads)
        return loss, grads

    def state_dict(self) -> dict:
        """The params plus the batchnorm running statistics (``bn{i}.running_mean`` / ``.running_var``)."""
        state = {name: value.copy() for name, value in self.params.items()}
        for i, bn_param in enumerate(self.bn_params, start=1):
            for key in ("running_mean", "running_var"):
                if key in bn_param:
                    state[f"bn{i}.{key}"] = bn_param[key].copy()
        return state

    def load_state_dict(self, state) -> None:
        running = {f"bn{i}.{key}" for i in range(1, len(self.bn_params) + 1) for key in ("running_mean", "running_var")}
        unexpected = sorted(k for k in state if k.startswith("bn") and k not in running)
        if unexpected:
            raise ValueError(f"state does not match {type(self).__name__}: unexpected {unexpected}")
        _load_arrays(self.params, {k: v for k, v in state.items() if not k.startswith("bn")}, type(self).__name__)
        for i, bn_param in enumerate(self.bn_params, start=1):
            for key in ("running_mean", "running_var"):
                if f"bn{i}.{key}" in state:
                    bn_param[key] = np.asarray(state[f"bn{i}.{key}"]).astype(self.dtype, copy=True)


class _ParameterData(MutableMapping):
    """``name -> Parameter.data`` of a module, live: assigning an array replaces that parameter's data."""

    def __init__(self, module):
        self._params = dict(module.named_parameters())

    def __getitem__(self, name):
        return self._params[name].data

    def __setitem__(self, name, value):
        param = self._params[name]
        if value.shape != param.data.shape:
            raise ValueError(f"{name} has shape {param.data.shape}, got {value.shape}")
        param.data = value

    def __delitem__(self, name):
        raise TypeError("the parameters of a module cannot be removed")

    def __iter__(self):
        return iter(self._params)

    def __len__(self):
        return len(self._params)


class ModuleClassifier:
    """A module-API network (e.g. :class:`nn.Sequential` producing (N, C) scores) with softmax loss.

    ``.params`` maps dotted parameter names to their arrays (assignments go into the module), and
    ``.loss(X)`` runs the module in eval mode and returns scores; ``.loss(X, y)`` runs it in train
    mode and returns ``(loss, grads)`` keyed like params.
    """

    def __init__(self, module):
        from .modules import CrossEntropyLoss

        self.module, self.criterion = module, CrossEntropyLoss()
        self.params = _ParameterData(module)

    def loss(self, X, y=None):
        if y is None:
            return self.module.eval()(X)
        self.module.train()
        self.module.zero_grad()
        loss = self.criterion(self.module(X), y)
        self.module.backward_params(self.criterion.backward())  # the images need no gradient
        # copies: the next call zeroes and refills the Parameter.grad arrays
        return loss, {name: param.grad.copy() for name, param in self.module.named_parameters()}

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state) -> None:
        self.module.load_state_dict(state)
