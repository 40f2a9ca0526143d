"""How the `auto` backend picks a concrete backend for one call signature.

How it decides
--------------
The candidates are the available backends except the ``naive`` reference, in registry order
(``cython``, ``numba``, ``im2col``); ``naive`` is used only when nothing else loads.

- A call big enough for the choice to matter (conv: at least ``MEASURE_MIN_FLOPS`` forward
  flops; pooling: at least ``MEASURE_MIN_POOL_OPS`` window reads) is **measured once**, like
  ``torch.backends.cudnn.benchmark``: each candidate runs forward + backward on random inputs
  of that signature, first once untimed (JIT compilation, workspace growth), then
  ``MEASURE_SAMPLES`` times in interleaved, settled visits, exactly as ``fastconv bench``
  times backends side by side (see ``fastconv._timing`` for why; settling makes measuring
  cost about 0.1 s per candidate and visit). A candidate whose first timed call was
  ``SLOW_FACTOR`` times slower than another's first is not timed again. Candidates whose
  medians end within ``NEAR_TIE`` of the fastest are timed on, up to ``NEAR_TIE_SAMPLES``
  each: between near-equals one slow visit on a busy machine would otherwise decide. The
  fastest candidate by its median sample wins (the statistic ``fastconv bench`` reports,
  and what a training loop sees) and is cached for the signature; a candidate later in
  registry order must be ``SWITCH_MARGIN`` faster to displace an earlier one, so noise does
  not flip exact ties. Forward and backward are timed together because a backward always runs on the
  backend its forward picked. Picking them separately (as cuDNN does) was tried and lost:
  one backend's worker threads keep spinning after its forward and take a core from
  another backend's backward (measured: numba forward + cython backward on vgg-c64
  float32 took 74 ms where either backend alone took 43-59 ms).
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

import numpy as np

from . import _registry, _timing

MEASURE_MIN_FLOPS = 1e7
MEASURE_MIN_POOL_OPS = 1e6
MEASURE_SAMPLES = 9  # three visits of three timed calls each (see fastconv._timing)
NEAR_TIE = 0.10
NEAR_TIE_SAMPLES = 18
# A later candidate must beat an earlier one by this fraction: timings on a busy machine still
# jitter by a few percent, and registry order is the prior.
SWITCH_MARGIN = 0.03
SLOW_FACTOR = 3.0  # a candidate this many times slower than the best after one round is dropped
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
            winner = _fastest(names, _measure(names, op, signature))
        _decisions[key] = winner
        return winner


def _fastest(names: list[str], seconds: dict[str, float]) -> str:
    """The candidate with the lowest time; a later one must win by ``SWITCH_MARGIN``."""
    winner, best = names[0], seconds[names[0]]
    for name in names[1:]:
        if seconds[name] < best * (1.0 - SWITCH_MARGIN):
            winner, best = name, seconds[name]
    return winner


def _threshold(op: str) -> float:
    return MEASURE_MIN_FLOPS if op == "conv2d" else MEASURE_MIN_POOL_OPS


def _work(op: str, signature: tuple) -> float:
    if op == "conv2d":
        x_shape, w_shape, _, p, _ = signature
        return 2.0 * x_shape[0] * w_shape[0] * p.out_h * p.out_w * w_shape[1] * w_shape[2] * w_shape[3]
    x_shape, p, _ = signature
    return float(x_shape[0] * x_shape[1] * p.out_h * p.out_w * p.kernel_h * p.kernel_w)


def _measure(names: list[str], op: str, signature: tuple) -> dict[str, float]:
    """Median seconds of forward + backward of each backend in ``names`` on ``signature``.

    Infinite for a backend that fails (a broken candidate must not break the call).
    """
    runs, failed = {}, set()
    for name in names:
        try:
            run = _runner(_registry.get_module(name), op, signature)
            run()  # warm-up: JIT compilation, workspace growth, first touch of fresh pages
        except Exception:
            failed.add(name)
            continue
        runs[name] = _recording_failure(run, name, failed)

    taken: dict[str, list[float]] = {}  # each candidate's samples so far (the live lists)

    def near_tie(name: str) -> bool:
        medians = {other: float(np.median(s)) for other, s in taken.items()
                   if other not in failed and len(s) >= MEASURE_SAMPLES}
        close = [other for other, t in medians.items() if t <= (1.0 + NEAR_TIE) * min(medians.values())]
        return name in close and len(close) > 1

    def wants_more(name: str, samples: list[float], spent: float) -> bool:
        taken[name] = samples
        if name in failed:
            return False
        if samples:  # lost already: a slow backend on a big call would cost seconds more
            fastest = min(s[0] for other, s in taken.items() if s and other not in failed)
            if samples[0] > SLOW_FACTOR * fastest:
                return False
        if len(samples) < MEASURE_SAMPLES:
            return True
        return len(samples) < NEAR_TIE_SAMPLES and near_tie(name)

    samples = _timing.interleaved(runs, wants_more)
    return {name: float(np.median(samples[name])) if name not in failed else float("inf") for name in names}


def _recording_failure(run, name: str, failed: set):
    def guarded():
        if name not in failed:
            try:
                run()
            except Exception:
                failed.add(name)
    return guarded


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
