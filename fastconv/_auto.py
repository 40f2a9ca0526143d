"""How the `auto` backend picks a concrete backend for one call signature.

How it decides
--------------
The candidates are the available backends except the ``naive`` reference, in registry order
(``cython``, ``numba``, ``im2col``); ``naive`` is used only when nothing else loads.

- A call big enough for the choice to matter (conv: at least ``MEASURE_MIN_FLOPS`` forward
  flops; pooling: at least ``MEASURE_MIN_POOL_OPS`` window reads) is **measured once**, like
  ``torch.backends.cudnn.benchmark``: each candidate runs forward + backward on random inputs
  of that signature (one untimed warm-up call absorbs JIT compilation and workspace growth,
  then the best of ``MEASURE_REPEATS`` timed runs counts; a candidate already ``SLOW_FACTOR``
  times slower than the best so far after one timed run is dropped), and the fastest is
  cached for the signature. A candidate later in registry order must be ``SWITCH_MARGIN``
  faster to displace an earlier one, so timing noise does not flip near-ties. Forward and backward are timed together because a backward always runs on the
  backend its forward picked.
- Smaller calls take the first candidate, which the benchmarks show is fastest or within
  noise there; timing them would cost more than any choice could save.

The signature is (op, input shapes, every kernel argument, dtype), so two calls that differ
in anything that can change the winner are decided separately. Decisions last for the
process; :func:`decisions` shows them, :func:`clear` forgets them.
Set ``FASTCONV_AUTOTUNE=0`` to skip measuring and always take the first candidate.

Pinning a backend
-----------------
``fastconv.set_backend("cython")`` (process-wide), ``with fastconv.use_backend("numba"): ...``
(a block), or ``backend="im2col"`` on a single call; ``auto`` is the default.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from . import _registry

MEASURE_MIN_FLOPS = 1e7
MEASURE_MIN_POOL_OPS = 1e6
MEASURE_REPEATS = 3
# A later candidate must beat an earlier one by this fraction: timings on a busy machine
# jitter by more than the gaps between near-equal backends, and registry order is the prior.
SWITCH_MARGIN = 0.05
SLOW_FACTOR = 3.0  # a candidate this many times slower than the best so far is not timed again
REFERENCE = "naive"

_lock = threading.Lock()
_decisions: dict[tuple, str] = {}


def autotune_enabled() -> bool:
    return os.environ.get("FASTCONV_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def candidates() -> list[str]:
    """Backends `auto` may pick, best guess first."""
    names = [n for n in _registry.available_backends() if n != REFERENCE]
    return names or [REFERENCE]


def decisions() -> dict[tuple, str]:
    """The cached winner for every (op, signature) decided so far."""
    with _lock:
        return dict(_decisions)


def clear() -> None:
    """Forget every decision (e.g. after set_num_threads changed what is fastest)."""
    with _lock:
        _decisions.clear()


def choose(op: str, signature: tuple) -> str:
    """Backend name for ``op`` ("conv2d", "max_pool2d", "avg_pool2d") on ``signature``.

    ``signature`` is what the front passes: ``(x_shape, w_shape, has_bias, ConvParams, dtype
    char)`` for conv2d, ``(x_shape, PoolParams, dtype char)`` for pooling.
    """
    names = candidates()
    key = (op, signature)
    with _lock:
        known = _decisions.get(key)
        if known in names:
            return known
        winner = names[0]
        if len(names) > 1 and autotune_enabled() and _work(op, signature) >= _threshold(op):
            best = float("inf")
            for name in names:
                elapsed = _time_forward_backward(name, op, signature, SLOW_FACTOR * best)
                if elapsed < best * (1.0 - SWITCH_MARGIN):
                    winner, best = name, elapsed
        _decisions[key] = winner
        return winner


def _threshold(op: str) -> float:
    return MEASURE_MIN_FLOPS if op == "conv2d" else MEASURE_MIN_POOL_OPS


def _work(op: str, signature: tuple) -> float:
    if op == "conv2d":
        x_shape, w_shape, _, p, _ = signature
        return 2.0 * x_shape[0] * w_shape[0] * p.out_h * p.out_w * w_shape[1] * w_shape[2] * w_shape[3]
    x_shape, p, _ = signature
    return float(x_shape[0] * x_shape[1] * p.out_h * p.out_w * p.kernel_h * p.kernel_w)


def _time_forward_backward(name: str, op: str, signature: tuple, give_up_after: float = float("inf")) -> float:
    """Best wall time of forward + backward of backend ``name`` on random inputs of ``signature``.

    Infinite if the backend fails (a broken candidate must not break the call). A candidate
    whose first timed run already exceeds ``give_up_after`` is not timed again: it has lost,
    and a slow backend on a big call would otherwise cost seconds more.
    """
    try:
        return _best_time(_runner(_registry.get_module(name), op, signature), give_up_after)
    except Exception:
        return float("inf")


def _runner(module, op: str, signature: tuple):
    """A no-argument function running forward + backward of ``module`` on random inputs."""
    rng = np.random.default_rng(0)
    if op == "conv2d":
        x_shape, w_shape, has_bias, p, char = signature
        x = rng.standard_normal(x_shape).astype(char)
        w = rng.standard_normal(w_shape).astype(char)
        b = rng.standard_normal(w_shape[0]).astype(char) if has_bias else None
        dout = rng.standard_normal((x_shape[0], w_shape[0], p.out_h, p.out_w)).astype(char)

        def run():
            _, ctx = module.conv2d_forward(x, w, b, p)
            module.conv2d_backward(dout, x, w, ctx, p, has_bias)
    else:
        x_shape, p, char = signature
        x = rng.standard_normal(x_shape).astype(char)
        dout = rng.standard_normal((x_shape[0], x_shape[1], p.out_h, p.out_w)).astype(char)
        forward, backward = getattr(module, op + "_forward"), getattr(module, op + "_backward")

        def run():
            _, ctx = forward(x, p)
            backward(dout, x, ctx, p)
    return run


def _best_time(run, give_up_after: float) -> float:
    run()  # warm-up: JIT compilation, workspace growth, first touch of fresh pages
    best = float("inf")
    for _ in range(MEASURE_REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        if best > give_up_after:
            break
    return best
