"""Side-by-side timing shared by `auto` and `fastconv bench`: interleaved, settled visits.

Two effects decide how implementations must be timed against each other on a shared machine:

- Noise from other processes comes and goes, so the implementations take turns, round by
  round, the starting one rotating; a slow spell then hits all of them alike.
- Worker threads keep spinning for a while after a call returns (numpy's OpenBLAS for about
  0.1 s, measured here; PyTorch's OpenMP pool; Numba's TBB workers) and take a core from
  whatever runs next: a call right after another implementation's ran up to 2x slower.
  So each turn (a visit) first runs the implementation untimed for ``SETTLE_SECONDS``, then
  times a few calls: what is measured is that implementation running steadily, as in a
  training loop, whoever ran before it.
"""
from __future__ import annotations

import gc
import time
from typing import Callable

SETTLE_SECONDS = 0.1
SAMPLES_PER_VISIT = 3


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


def interleaved(calls: dict[str, Callable],
                wants_more: Callable[[str, list[float], float], bool]) -> dict[str, list[float]]:
    """Samples (seconds) per name, taken in rounds until ``wants_more`` is false for every name.

    ``wants_more(name, samples, seconds_spent)`` sees the name's samples so far and the wall
    time its visits took (settling included). Each round visits every name that wants more,
    starting one further along than the round before; a visit settles the call, then times
    it up to ``SAMPLES_PER_VISIT`` times while it still wants more.
    """
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
            settle(calls[name], SETTLE_SECONDS)
            for _ in range(SAMPLES_PER_VISIT):
                samples[name].append(timed_call(calls[name]))
                if not wants_more(name, samples[name], spent[name] + time.perf_counter() - visit_start):
                    break
            spent[name] += time.perf_counter() - visit_start
        rounds += 1
