"""Side-by-side timing shared by `auto` and `fastconv bench`: interleaved rounds of settled calls.

Two effects decide how implementations must be timed against each other on a shared machine:

- Noise from other processes comes and goes, so the calls take turns, round by round, with
  the starting call rotating; a slow spell then hits all of them alike.
- Worker threads keep spinning for a while after a call returns (numpy's OpenBLAS for about
  0.1 s, PyTorch's OpenMP pool, Numba's TBB workers) and take a core from whatever runs next.
  Taking turns would charge that to the next call, and always to the same one. So each timed
  call directly follows an untimed call of the same implementation: what is measured is that
  implementation running steadily, as it does in a training loop, whoever ran before it.
"""
from __future__ import annotations

import gc
import time
from typing import Callable


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


def interleaved(calls: dict[str, Callable],
                wants_more: Callable[[str, dict[str, list[float]]], bool]) -> dict[str, list[float]]:
    """Samples (seconds) per name, taken in rounds until ``wants_more(name, samples)`` is false for all.

    Each round visits every name that still wants samples, starting one further along than the
    round before; a visit is an untimed settling call then a timed one.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    rounds = 0
    while True:
        due = [name for name in calls if wants_more(name, samples)]
        if not due:
            return samples
        start = rounds % len(due)
        for name in due[start:] + due[:start]:
            calls[name]()
            samples[name].append(timed_call(calls[name]))
        rounds += 1
