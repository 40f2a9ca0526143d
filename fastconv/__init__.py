"""fastconv: convolution and pooling kernels for NumPy (NCHW), forward and backward, over swappable backends."""
from ._api import (avg_pool2d_backward, avg_pool2d_forward, conv2d_backward, conv2d_forward,
                   max_pool2d_backward, max_pool2d_forward)
from ._registry import (BackendUnavailableError, available_backends, get_backend, set_backend,
                        use_backend)
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward", "available_backends", "set_backend",
    "get_backend", "use_backend", "set_num_threads", "get_num_threads", "BackendUnavailableError",
    "__version__",
]
