"""fastconv: convolution and pooling kernels for NumPy (NCHW), forward and backward, over swappable backends."""
from ._api import (avg_pool2d_backward, avg_pool2d_forward, conv2d_backward, conv2d_forward,
                   max_pool2d_backward, max_pool2d_forward)
from ._step_ops import (adam_update, affine_backward, affine_forward, batch_norm_backward, batch_norm_forward,
                        relu_backward, relu_forward, rmsprop_update, sgd_momentum_update, sgd_update,
                        softmax_cross_entropy)
from ._plugins import BackendError
from ._registry import (BackendUnavailableError, available_backends, get_backend, register_backend, set_backend,
                        unregister_backend, use_backend)
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward", "relu_forward", "relu_backward", "affine_forward",
    "affine_backward", "batch_norm_forward", "batch_norm_backward", "softmax_cross_entropy", "sgd_update",
    "sgd_momentum_update", "rmsprop_update", "adam_update", "available_backends", "set_backend",
    "get_backend", "use_backend", "set_num_threads", "get_num_threads", "BackendUnavailableError",
    "register_backend", "unregister_backend", "BackendError", "__version__",
]
