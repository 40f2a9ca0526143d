"""Side-by-side timing shared by `auto` and `fastconv bench`: interleaved visits, back to back.

Two effects decide how implementations must be timed against each other on a shared machine:

- Noise from other processes comes and goes, so the implementations take turns, round by
  round, the starting one rotating; a slow spell then hits all of them alike.
- Worker threads keep spinning for a while after a call returns (numpy's OpenBLAS for about
  0.1 s, measured here; PyTorch's OpenMP pool; Numba's TBB workers) and take a core from
  whatever runs next: a call right after another implementation's ran up to 2x slower.
- A core that has idled, or run one thread of another implementation's mostly serial work,
  is slow to come back up to speed: measured here, a 2.8 ms conv ran at ~5 ms for its first
  ~50 ms of calls after 0.15 s of idle (the host's doing, not the code's).

So each turn (a visit) runs the implementation untimed, once or for ``warm_seconds`` (the
benchmarks use ``LOOP_WARM_SECONDS``: longer than numpy's threads spin, and running, since
sleeping through the spin instead idles the cores; measured, 0.06 s left the row after im2col
1.5x slow), then times
several calls back to back, as a training loop runs them (LOOP, the default): what is measured
is that implementation running steadily in the state its own calls leave the machine in, not
after another library's threads or idle cores. SETTLED visits run the implementation
untimed for ``SETTLE_SECONDS`` first: the method of the earlier tables, kept to compare with
them (``fastconv bench --timing settled``). What a training loop meets beyond that (a call
after numpy code, other libraries' threads) only whole training steps show: nn's train_step
workloads time those.
"""
from __future__ import annotations

import gc
import time
from typing import Callable

SETTLE_SECONDS = 0.1
LOOP_WARM_SECONDS = 0.15
SAMPLES_PER_VISIT = 3
LOOP, SETTLED = "loop", "settled"
MODES = (LOOP, SETTLED)


def timed_call(call: Callable) -> float:
    """Seconds one call takes, the garbage collector paused as timeit does."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def settle(call: Callable, seconds: float) -> None:
    """Run ``call`` untimed at least once and until ``seconds`` have passed."""
    start = time.perf_counter()
    call()
    while time.perf_counter() - start < seconds:
        call()


def interleaved(calls: dict[str, Callable], wants_more: Callable[[str, list[float], float], bool],
                mode: str = LOOP, samples_per_visit: int = SAMPLES_PER_VISIT,
                warm_seconds: float = 0.0) -> dict[str, list[float]]:
    """Samples (seconds) per name, taken in rounds until ``wants_more`` is false for every name.

    ``wants_more(name, samples, seconds_spent)`` sees the name's samples so far and the wall
    time its visits took (the untimed calls included). Each round visits every name that
    wants more, starting one further along than the round before; a visit runs the call
    untimed once and for ``warm_seconds`` (LOOP) or ``SETTLE_SECONDS`` (SETTLED), then times it up to
    ``samples_per_visit`` times back to back while it still wants more.
    """
    if mode not in MODES:
        raise ValueError(f"timing mode must be one of {MODES}, got {mode!r}")
    settle_seconds = SETTLE_SECONDS if mode == SETTLED else warm_seconds
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    rounds = 0
    while True:
        due = [name for name in calls if wants_more(name, samples[name], spent[name])]
        if not due:
            return samples
        start = rounds % len(due)
        for name in due[start:] + due[:start]:
            visit_start = time.perf_counter()
            settle(calls[name], settle_seconds)
            for _ in range(samples_per_visit):
                samples[name].append(timed_call(calls[name]))
                if not wants_more(name, samples[name], spent[name] + time.perf_counter() - visit_start):
                    break
            spent[name] += time.perf_counter() - visit_start
        rounds += 1
