"""Shared fixtures: every available backend and dtype, thread and autotune settings restored, a kernel spy."""
import inspect
import os

import numpy as np
import pytest

import fastconv
from fastconv import _registry
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


@pytest.fixture
def kernel_calls(monkeypatch):
    """Every backend kernel call of the test, in order, as (kernel name, {argument name: value}): what
    the front (fastconv._api and _validate) hands the backends, and whether it hands them anything."""
    calls = []
    real_get_module = _registry.get_module

    class Recorded:
        def __init__(self, name):
            self._module = real_get_module(name)

        def __getattr__(self, attribute):
            found = getattr(self._module, attribute)
            if attribute == "supports" or not callable(found):
                return found

            def kernel(*args, **kwargs):
                calls.append((attribute, inspect.signature(found).bind(*args, **kwargs).arguments))
                return found(*args, **kwargs)
            return kernel

    monkeypatch.setattr(_registry, "get_module", Recorded)
    return calls
