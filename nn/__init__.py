"""nn: neural-network building blocks (CS231n-style layers, modules, optimizers) on top of fastconv."""
from . import checkpoint, classifiers, gradient_check, layers, models, nielsen, optim, solver
from .modules import (AvgPool2d, BatchNorm1d, BatchNorm2d, BCELoss, Buffer, Conv2d, CrossEntropyLoss, Dropout,
                      Flatten, GroupNorm, Identity, LayerNorm, Linear, MaxPool2d, Module, ModuleList, MSELoss,
                      Parameter, ReLU, Sequential, Sigmoid, Tanh)
from .residual import GlobalAvgPool2d, Residual

__all__ = [
    "layers", "optim", "models", "solver", "gradient_check", "checkpoint", "data", "classifiers", "nielsen",
    "Parameter", "Buffer", "Module", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "ReLU",
    "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "CrossEntropyLoss", "MSELoss",
    "Identity", "Sigmoid", "Tanh", "ModuleList", "BCELoss", "LayerNorm", "GroupNorm", "Residual", "GlobalAvgPool2d",
]


def __getattr__(name):
    # nn.data pulls in scikit-learn only when first used
    if name == "data":
        import importlib
        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
