"""Backend registry: names, defaults, the per-context choice and unavailable-backend errors."""
import asyncio
import threading

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


def _in_thread(function):
    result = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def test_use_backend_is_local_to_the_thread_and_nests():
    with fastconv.use_backend("naive"):
        assert _in_thread(fastconv.get_backend) == "auto"  # another thread keeps the default
        with fastconv.use_backend("im2col"):
            assert fastconv.get_backend() == "im2col"
            x = np.ones((1, 1, 4, 4))
            assert fastconv.max_pool2d_forward(x, 2)[1].backend == "im2col"
            assert _in_thread(fastconv.get_backend) == "auto"
        assert fastconv.get_backend() == "naive"
    assert fastconv.get_backend() == "auto"


def test_use_backend_blocks_in_two_threads_do_not_see_each_other():
    inside, release = threading.Barrier(2), threading.Event()
    seen = {}

    def block(name):
        with fastconv.use_backend(name):
            inside.wait(5)  # both blocks are open at once
            release.wait(5)
            seen[name] = fastconv.get_backend()

    workers = [threading.Thread(target=block, args=(name,)) for name in ("naive", "im2col")]
    for worker in workers:
        worker.start()
    release.set()
    for worker in workers:
        worker.join()
    assert seen == {"naive": "naive", "im2col": "im2col"}
    assert fastconv.get_backend() == "auto"


def test_use_backend_follows_the_context_into_tasks():
    async def inner():
        return fastconv.get_backend()

    async def outer():
        with fastconv.use_backend("naive"):
            return await asyncio.create_task(inner())

    assert asyncio.run(outer()) == "naive"


def test_set_backend_is_the_process_default_for_every_thread():
    try:
        fastconv.set_backend("naive")
        assert _in_thread(fastconv.get_backend) == "naive"
        with fastconv.use_backend("im2col"):
            assert fastconv.get_backend() == "im2col"  # the block wins in its context
    finally:
        fastconv.set_backend("auto")


def test_use_backend_rejects_bad_names_before_entering():
    with pytest.raises(ValueError, match="backend"):
        with fastconv.use_backend("nope"):
            pass
    assert fastconv.get_backend() == "auto"
