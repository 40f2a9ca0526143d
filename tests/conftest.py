"""Fixtures shared by the test suite: every test that takes `backend` runs on every available backend."""
import numpy as np
import pytest

import fastconv

BACKENDS = fastconv.available_backends()
DTYPES = (np.float32, np.float64)
# Backends compared against the naive reference (comparing naive with itself proves nothing).
FAST_BACKENDS = tuple(name for name in BACKENDS if name != "naive")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


@pytest.fixture
def restore_num_threads():
    """Put the thread knob back to its default (every usable core) after the test."""
    yield
    fastconv.set_num_threads(None)
