"""Side-by-side timing shared by `auto` and `fastconv bench`: interleaved visits, back to back.

Two effects decide how implementations must be timed against each other on a shared machine:

- Noise from other processes comes and goes, so the implementations take turns, round by
  round, the starting one rotating; a slow spell then hits all of them alike.
- Worker threads keep spinning for a while after a call returns (numpy's OpenBLAS for about
  0.1 s, measured here; PyTorch's OpenMP pool; Numba's TBB workers) and take a core from
  whatever runs next: a call right after another implementation's ran up to 2x slower.

So each turn (a visit) runs the implementation once untimed, then times several calls back
to back, as a training loop runs them (LOOP, the default): what is measured is that
implementation running steadily in the state its own calls leave the machine in, not after
another library's threads, and not after idle time either. SETTLED visits instead idle-run
the implementation for ``SETTLE_SECONDS`` first (every spinning thread has gone to sleep):
the best case of a lone call, which hides what a training loop meets (a call after other
work); kept for comparison with earlier tables (``fastconv bench --timing settled``).
"""
from __future__ import annotations

import gc
import time
from typing import Callable

SETTLE_SECONDS = 0.1
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
                mode: str = LOOP, samples_per_visit: int = SAMPLES_PER_VISIT) -> dict[str, list[float]]:
    """Samples (seconds) per name, taken in rounds until ``wants_more`` is false for every name.

    ``wants_more(name, samples, seconds_spent)`` sees the name's samples so far and the wall
    time its visits took (the untimed calls included). Each round visits every name that
    wants more, starting one further along than the round before; a visit runs the call once
    untimed (LOOP) or for ``SETTLE_SECONDS`` (SETTLED), then times it up to
    ``samples_per_visit`` times back to back while it still wants more.
    """
    if mode not in MODES:
        raise ValueError(f"timing mode must be one of {MODES}, got {mode!r}")
    settle_seconds = SETTLE_SECONDS if mode == SETTLED else 0.0
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
