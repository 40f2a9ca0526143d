"""Fixtures shared by the test suite: every test that takes `backend` runs on every available backend."""
import os

import numpy as np
import pytest

import fastconv
from fastconv.testing import DTYPES, fast_backends

BACKENDS = fastconv.available_backends()
FAST_BACKENDS = fast_backends()


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


@pytest.fixture(autouse=True, scope="session")
def own_autotune_file(tmp_path_factory):
    """auto's decisions go to this run's own file: the user's cache is never read or written."""
    previous = os.environ.get("FASTCONV_AUTOTUNE_CACHE")
    os.environ["FASTCONV_AUTOTUNE_CACHE"] = str(tmp_path_factory.mktemp("autotune") / "autotune.json")
    yield
    if previous is None:
        del os.environ["FASTCONV_AUTOTUNE_CACHE"]
    else:
        os.environ["FASTCONV_AUTOTUNE_CACHE"] = previous

