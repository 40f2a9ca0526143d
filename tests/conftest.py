"""Fixtures shared by the test suite: every test that takes `backend` runs on every available backend."""
import numpy as np
import pytest

import fastconv

BACKENDS = fastconv.available_backends()
DTYPES = (np.float32, np.float64)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param
