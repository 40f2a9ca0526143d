"""How the `auto` backend picks a concrete backend for one call signature, and remembers it.

How it decides
--------------
The candidates are the installed compiled backends, in registry order (``cython``, ``numba``),
then the registered backends that opted in (``register_backend(..., auto=True)``).
``im2col`` is one only where neither compiled backend is installed: its GEMMs run on numpy's
OpenBLAS, whose threads keep spinning for ~0.1 s after every call and take the cores every
following op of a training step needs (measured: a vgg step 1.66x slower when auto, timing convolutions alone,
picked im2col for two of its four). ``naive`` is used only when nothing else loads.

- A call big enough for the choice to matter (conv: at least ``MEASURE_MIN_FLOPS`` forward
  flops; pooling: at least ``MEASURE_MIN_POOL_OPS`` window reads) is **measured once**, like
  ``torch.backends.cudnn.benchmark``: each candidate runs forward + backward on random inputs
  of that signature, first once untimed (workspace growth, first touch of fresh pages), then
  ``MEASURE_SAMPLES`` times in interleaved visits of back-to-back calls, exactly as
  ``fastconv bench`` times backends side by side: in the state a training loop leaves the
  machine in, not after idle time (see ``fastconv._timing``). A candidate whose first timed call was
  ``SLOW_FACTOR`` times slower than another's first is not timed again. Candidates whose
  medians end within ``NEAR_TIE`` of the fastest are timed on, up to ``NEAR_TIE_SAMPLES``
  each: between near-equals one slow visit on a busy machine would otherwise decide. The
  fastest candidate by its median sample wins (the statistic ``fastconv bench`` reports,
  and what a training loop sees); a candidate later in registry order must be
  ``SWITCH_MARGIN`` faster to displace an earlier one, so noise does not flip exact ties.
  Forward and backward are timed together because a backward always runs on the backend
  its forward picked. Picking them separately (as cuDNN does) was tried and lost: one
  backend's worker threads keep spinning after its forward and take a core from another
  backend's backward (measured: numba forward + cython backward on vgg-c64 float32 took
  74 ms where either backend alone took 43-59 ms).
- Smaller calls take the first ready candidate, which the benchmarks show is fastest or
  within noise there; timing them would cost more than any choice could save.

Never waiting for a compiler
----------------------------
A backend that compiles on first use (``numba``, ``_registry.JIT_BACKENDS``) is a candidate
only once its kernels for that signature are compiled in this process (by an explicit call,
by ``fastconv tune`` or by the benchmarks): ``auto`` neither imports it nor compiles it just to
time it (measured on a fresh install: 30 s for the first conv otherwise). If the backend
auto would try first is cold (``numba`` where the cython extension is not built), it is
compiled on a background thread while the ready candidates serve; such decisions are
provisional, kept in memory only, and made again once it is warm.

Remembering
-----------
Decisions are keyed by the signature (op, input shapes, every kernel argument, dtype) and
the thread count, and are stored on disk (``fastconv._tuning_store``: a JSON file under the
user cache directory, ``FASTCONV_AUTOTUNE_CACHE`` to move it, empty to keep decisions in
memory) with what else makes them valid: the fastconv version, the CPU model and the
installed backends. A later process reads them instead of measuring again, so it starts
fast and picks what the first process picked. ``fastconv tune`` measures a set of
workloads ahead of time (compiling every backend first); ``fastconv info`` shows the file.
:func:`decisions` shows this process's decisions, :func:`clear` forgets them.
``FASTCONV_AUTOTUNE=0`` turns measuring (and the file) off: always the first ready candidate.

Pinning a backend
-----------------
``fastconv.set_backend("cython")`` (process default), ``with fastconv.use_backend("numba"): ...``
(this thread / context), or ``backend="im2col"`` on a single call; ``auto`` is the default.
"""
from __future__ import annotations

import os
import queue
import threading

import numpy as np

from . import _registry, _timing, _tuning_store
from ._threads import get_num_threads
from .backends._step_probe import step_kernels_call

MEASURE_MIN_FLOPS = 1e7
MEASURE_MIN_POOL_OPS = 1e6
MEASURE_SAMPLES = 9  # three visits of three timed calls each (see fastconv._timing)
NEAR_TIE = 0.10
NEAR_TIE_SAMPLES = 18
# A later candidate must beat an earlier one by this fraction: timings on a busy machine still
# jitter by a few percent, and registry order is the prior.
SWITCH_MARGIN = 0.03
SLOW_FACTOR = 3.0  # a candidate this many times slower than the best after one round is dropped
REFERENCE = _registry.REFERENCE

_lock = threading.RLock()
_decisions: dict[tuple, str] = {}  # final: (op, signature, threads) -> backend
_provisional: dict[tuple, str] = {}  # made while the preferred candidate was still compiling
_stored: dict[str, dict] | None = None  # the decisions file's entries, read once


def autotune_enabled() -> bool:
    return os.environ.get("FASTCONV_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def candidates() -> list[str]:
    """Backends `auto` may pick, best guess first: the compiled ones; a backend on another
    library's threads (``_registry.FOREIGN_THREADS``) or the reference only without them; then
    the registered backends that opted in (``register_backend(..., auto=True)``), which must win
    a measurement to be picked."""
    installed = [n for n in _registry.installed_backends() if n != REFERENCE]
    registered = [n for n in installed if _registry.is_registered(n)]
    built_in = [n for n in installed if n not in registered]
    own = [n for n in built_in if n not in _registry.FOREIGN_THREADS]
    return (own or built_in or [REFERENCE]) + registered


def is_ready(name: str, op: str, signature: tuple) -> bool:
    """Whether ``name`` can run ``signature`` now without compiling anything first."""
    if name in _registry.JIT_BACKENDS and not _registry.is_loaded(name):
        return False
    try:
        module = _registry.get_module(name)
    except Exception:
        return False
    is_warm = getattr(module, "is_warm", None)
    return True if is_warm is None else bool(is_warm(op, signature))


def decisions() -> dict[tuple, str]:
    """The winner for every (op, signature, threads) decided in this process (provisional ones too)."""
    with _lock:
        return {**_provisional, **_decisions}


def clear() -> None:
    """Forget this process's decisions (the decisions file stays: ``fastconv tune --clear`` empties it)."""
    global _stored
    with _lock:
        _decisions.clear()
        _provisional.clear()
        _stored = None


def environment() -> dict:
    """What a stored decision is valid for, besides its signature."""
    from . import __version__
    from .info import cpu_name
    return {"fastconv": __version__, "cpu": cpu_name(), "threads": get_num_threads(),
            "backends": list(_registry.installed_backends())}


def describe(op: str, signature: tuple) -> str:
    """A readable, stable text for a signature: the decisions file's key."""
    if op == "conv2d":
        x_shape, w_shape, has_bias, p, char = signature
        geometry = (f"stride={p.stride_h},{p.stride_w} pad={p.pad_h},{p.pad_w} dil={p.dil_h},{p.dil_w} "
                    f"groups={p.groups}")
        shapes = f"x={_dims(x_shape)} w={_dims(w_shape)} bias={int(bool(has_bias))} {geometry}"
    else:
        x_shape, p, char = signature
        shapes = (f"x={_dims(x_shape)} kernel={p.kernel_h},{p.kernel_w} stride={p.stride_h},{p.stride_w} "
                  f"pad={p.pad_h},{p.pad_w}")
    return f"{op} {shapes} {np.dtype(char).name}"


def _dims(shape) -> str:
    return "(" + ",".join(str(int(d)) for d in shape) + ")"


def _store_key(op: str, signature: tuple, env: dict) -> str:
    return (f"{describe(op, signature)} | threads={env['threads']} | backends={','.join(env['backends'])} | "
            f"fastconv={env['fastconv']} | cpu={env['cpu']}")


def _stored_choice(op: str, signature: tuple, names: list[str]) -> str | None:
    global _stored
    if _stored is None:
        _stored = _tuning_store.load()
    if not _stored:
        return None
    entry = _stored.get(_store_key(op, signature, environment()))
    return entry["backend"] if entry is not None and entry["backend"] in names else None


def _remember(op: str, signature: tuple, winner: str, seconds: dict[str, float]) -> None:
    env = environment()
    entry = {"backend": winner, "seconds": {n: t for n, t in seconds.items() if np.isfinite(t)}, **env}
    key = _store_key(op, signature, env)
    if _stored is not None:
        _stored[key] = entry
    _tuning_store.save({key: entry})


def choose(op: str, signature: tuple) -> str:
    """Backend name for ``op`` ("conv2d", "max_pool2d", "avg_pool2d") on ``signature``.

    ``signature`` is what the front passes: ``(x_shape, w_shape, has_bias, ConvParams, dtype
    char)`` for conv2d, ``(x_shape, PoolParams, dtype char)`` for pooling.
    """
    key = (op, signature, get_num_threads())
    with _lock:
        known = _decisions.get(key)
        if known is not None and _loads(known):
            return known
        names = candidates()
        if not autotune_enabled():  # deterministic: the first candidate, compiled if need be
            winner = next((name for name in names if _loads(name)), REFERENCE)
            _decisions[key] = winner
            return winner
        preferred = names[0]
        if key in _provisional and not is_ready(preferred, op, signature):
            return _provisional[key]
        stored = _stored_choice(op, signature, names) if op in MEASURED_OPS else None
        if stored is not None and _loads(stored):
            _decisions[key] = stored
            return stored
        ready = [name for name in names if is_ready(name, op, signature)] or [REFERENCE]
        provisional = preferred not in ready
        if provisional:
            _warm_in_background(preferred, op, signature)
        winner, seconds = ready[0], {}
        if len(ready) > 1 and _work(op, signature) >= _threshold(op):
            seconds = _measure(ready, op, signature)
            winner = _fastest(ready, seconds)
        if provisional:
            _provisional[key] = winner
            return winner
        _provisional.pop(key, None)
        _decisions[key] = winner
        if seconds:
            _remember(op, signature, winner, seconds)
        return winner


def tune(op: str, signature: tuple) -> tuple[str, dict[str, float]]:
    """Measure every candidate on ``signature`` now (compiling those that need it first), keep and
    store the winner: what ``fastconv tune`` runs. Returns the winner and each candidate's seconds."""
    names = [name for name in candidates() if _loads(name)]
    for name in names:  # compile first, in the foreground: this is the time to pay for it
        try:
            _runner(name, op, signature)()
        except Exception:
            pass
    seconds = _measure(names, op, signature) if len(names) > 1 else {names[0]: float("nan")}
    winner = _fastest(names, seconds) if len(names) > 1 else names[0]
    with _lock:
        key = (op, signature, get_num_threads())
        _provisional.pop(key, None)
        _decisions[key] = winner
        _remember(op, signature, winner, seconds)
    return winner, seconds


def _loads(name: str) -> bool:
    try:
        _registry.get_module(name)
        return True
    except Exception:
        return False


class _Warmer:
    """One background thread that compiles a cold backend's kernels, a signature at a time."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._pending: set[tuple] = set()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def submit(self, name: str, op: str, signature: tuple) -> None:
        job = (name, op, signature)
        with self._guard:
            if job in self._pending:
                return
            self._pending.add(job)
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="fastconv-warm-up", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            try:
                name, op, signature = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._guard:  # a job submitted meanwhile must not be stranded
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                _runner(name, op, signature)()
            except Exception:  # a backend that cannot run it simply stays out of the choice
                pass
            finally:
                with self._guard:
                    self._pending.discard((name, op, signature))

    def idle(self) -> bool:
        return not self._pending


_warmer = _Warmer()


def _after_fork_in_child() -> None:
    global _warmer
    _warmer = _Warmer()  # the parent's warm-up thread does not exist in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _warm_in_background(name: str, op: str, signature: tuple) -> None:
    _warmer.submit(name, op, signature)


def warming() -> bool:
    """Whether a background compilation is still running (see ``_Warmer``)."""
    return not _warmer.idle()


def _fastest(names: list[str], seconds: dict[str, float]) -> str:
    """The candidate with the lowest time; a later one must win by ``SWITCH_MARGIN``."""
    winner, best = names[0], seconds[names[0]]
    for name in names[1:]:
        if seconds[name] < best * (1.0 - SWITCH_MARGIN):
            winner, best = name, seconds[name]
    return winner


def _threshold(op: str) -> float:
    return MEASURE_MIN_FLOPS if op == "conv2d" else MEASURE_MIN_POOL_OPS


MEASURED_OPS = ("conv2d", "max_pool2d", "avg_pool2d")


def _work(op: str, signature: tuple) -> float:
    """How much a call does (forward flops for a conv, window reads for a pool; 0 for the other
    ops of a step, whose fastest backend is the first: they are never measured)."""
    if op == "conv2d":
        x_shape, w_shape, _, p, _ = signature
        return 2.0 * x_shape[0] * w_shape[0] * p.out_h * p.out_w * w_shape[1] * w_shape[2] * w_shape[3]
    if op in MEASURED_OPS:
        x_shape, p, _ = signature
        return float(x_shape[0] * x_shape[1] * p.out_h * p.out_w * p.kernel_h * p.kernel_w)
    return 0.0


def _measure(names: list[str], op: str, signature: tuple) -> dict[str, float]:
    """Median seconds of forward + backward of each backend in ``names`` on ``signature``.

    Infinite for a backend that fails (a broken candidate must not break the call).
    """
    runs, failed = {}, set()
    step_work = _rest_of_step(op, signature)
    for name in names:
        try:
            run = _runner(name, op, signature)
            run()  # warm-up: JIT compilation, workspace growth, first touch of fresh pages
        except Exception:
            failed.add(name)
            continue
        runs[name] = _recording_failure(_after(step_work, run), name, failed)

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


def _rest_of_step(op: str, signature: tuple):
    """A stand-in for the rest of a training step between two calls of ``op``: a ReLU over an
    output-sized array on the backend the step's other ops run on (the first ready candidate).

    Candidates are timed after it, so one whose threads are not that backend's pays for
    waking its own pool after the other's ran, as it would inside a network (measured: vgg
    steps 1.6x slower when a pooling or conv backend other than the step's won alone).
    """
    if op == "conv2d":
        x_shape, w_shape, _, p, char = signature
        size = x_shape[0] * w_shape[0] * p.out_h * p.out_w
    else:
        x_shape, p, char = signature
        size = x_shape[0] * x_shape[1] * p.out_h * p.out_w
    values = np.ones(size, char)
    try:
        team = next((name for name in candidates() if is_ready(name, "relu", (size, char))), REFERENCE)
        relu = _registry.kernel(team, "relu_forward")
    except Exception:  # no usable backend for it: time the candidates alone
        return lambda: None
    return lambda: relu(values)


def _after(first, then):
    def both():
        first()
        then()
    return both


def _recording_failure(run, name: str, failed: set):
    def guarded():
        if name not in failed:
            try:
                run()
            except Exception:
                failed.add(name)
    return guarded


def _runner(name: str, op: str, signature: tuple):
    """A no-argument function running forward + backward of ``op`` on backend ``name`` on random
    inputs of ``signature`` (a step op: every kernel of its family on tiny inputs)."""
    if op not in MEASURED_OPS:
        return step_kernels_call(_registry.get_module(name), op, signature[-1])
    from ._api import call_op  # the front calls auto: imported when auto first measures
    rng = np.random.default_rng(0)
    if op == "conv2d":
        x_shape, w_shape, has_bias, p, char = signature
        arrays = dict(w=rng.standard_normal(w_shape).astype(char),
                      b=rng.standard_normal(w_shape[0]).astype(char) if has_bias else None)
        options = dict(stride=(p.stride_h, p.stride_w), padding=(p.pad_h, p.pad_w), dilation=(p.dil_h, p.dil_w),
                       groups=p.groups)
        channels = w_shape[0]
    else:
        x_shape, p, char = signature
        arrays = {}
        options = dict(kernel_size=(p.kernel_h, p.kernel_w), stride=(p.stride_h, p.stride_w),
                       padding=(p.pad_h, p.pad_w))
        channels = x_shape[1]
    arrays["x"] = rng.standard_normal(x_shape).astype(char)
    arrays["dout"] = rng.standard_normal((x_shape[0], channels, p.out_h, p.out_w)).astype(char)
    return call_op(op, arrays, options, name)
