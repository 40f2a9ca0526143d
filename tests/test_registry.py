"""Backend registry: names, defaults, the context manager and unavailable-backend errors."""
import numpy as np
import pytest

import fastconv
from fastconv import _registry


def test_naive_always_available():
    assert "naive" in fastconv.available_backends()


def test_default_is_auto_and_use_backend_restores():
    assert fastconv.get_backend() == "auto"
    with fastconv.use_backend("naive"):
        assert fastconv.get_backend() == "naive"
    assert fastconv.get_backend() == "auto"


def test_unknown_backend_is_value_error():
    with pytest.raises(ValueError, match="backend"):
        fastconv.set_backend("nope")
    x = np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match="backend"):
        fastconv.max_pool2d_forward(x, 2, backend="nope")


def test_cache_records_concrete_backend(backend):
    x = np.ones((1, 1, 4, 4))
    _, cache = fastconv.max_pool2d_forward(x, 2, backend=backend)
    assert cache.backend == backend


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setitem(_registry.BACKEND_MODULES, "ghost", "fastconv.backends._does_not_exist")
    monkeypatch.setattr(_registry, "_failed", dict(_registry._failed))
    assert "ghost" not in fastconv.available_backends()
    with pytest.raises(fastconv.BackendUnavailableError, match="ghost.*not available"):
        _registry.get_module("ghost")
    assert "naive" in fastconv.available_backends()
