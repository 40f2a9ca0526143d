"""`fastconv tune`: let `auto` measure a set of workloads now and store its decisions for later processes."""
from __future__ import annotations

import sys
import time

import numpy as np

from . import _api, _auto, _tuning_store, _validate


def configure(parser) -> None:
    parser.add_argument("--case", action="append", metavar="A[,B]",
                        help="only these cases of the `fastconv bench` suite (shell patterns; default: every "
                             "large conv and pooling case)")
    parser.add_argument("--dtype", action="append", metavar="A[,B]", help="only these dtypes: float32, float64")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="tune for this thread count (decisions are kept per thread count)")
    parser.add_argument("--clear", action="store_true", help="delete the stored decisions first")
    parser.add_argument("--list", action="store_true", help="list what would be tuned, then exit")


def signatures(cases=None, dtypes=None) -> list[tuple[str, str, tuple]]:
    """(label, op, signature) for every large suite workload selected: what `auto` decides calls by."""
    from .bench import workloads as wl

    found = {}
    # Kernel workloads only: a training step (nn's family) is made of these calls, not a decision itself.
    for workload in wl.select(False, cases, list(wl.KERNEL_OPS), dtypes):
        if workload.small or workload.op == "conv_fwd":  # conv_fwd shares conv_fwd_bwd's decision
            continue
        case, dtype = workload.case, np.dtype(workload.dtype)
        x = np.empty(case.x_shape, dtype)
        if workload.op in wl.CONV_OPS:
            b = np.empty(case.w_shape[0], dtype) if case.bias else None
            x, w, b, p = _validate.conv2d_args(x, np.empty(case.w_shape, dtype), b, **case.kwargs())
            op, signature = "conv2d", _api.conv2d_signature(x, w, b, p)
        else:
            x, p = _validate.pool2d_args(x, **case.kwargs())
            op = "max_pool2d" if workload.op == "maxpool_fwd_bwd" else "avg_pool2d"
            signature = _api.pool2d_signature(x, p)
        found.setdefault((op, signature), f"{case.name} {op} {workload.dtype}")
    return [(label, op, signature) for (op, signature), label in found.items()]


def run(args) -> int:
    import fastconv

    try:
        if args.threads is not None:
            fastconv.set_num_threads(args.threads)
        jobs = signatures(args.case, args.dtype)
    except (ValueError, TypeError) as exc:
        print(f"fastconv tune: error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for label, op, signature in jobs:
            print(f"{label:<36} {_auto.describe(op, signature)}")
        return 0
    if args.clear and _tuning_store.clear():
        print(f"deleted {_tuning_store.path()}")
    if not _auto.autotune_enabled():
        print("fastconv tune: FASTCONV_AUTOTUNE=0 turns measuring off; nothing to do", file=sys.stderr)
        return 2
    print(f"tuning {len(jobs)} signatures for {fastconv.get_num_threads()} threads "
          f"(candidates: {', '.join(_auto.candidates())})", file=sys.stderr)
    started = time.perf_counter()
    for index, (label, op, signature) in enumerate(jobs, 1):
        tic = time.perf_counter()
        winner, seconds = _auto.tune(op, signature)
        timings = "  ".join(f"{name} {t * 1e3:.2f} ms" for name, t in seconds.items() if np.isfinite(t))
        print(f"[{index}/{len(jobs)}] {label:<36} -> {winner:<7} ({timings}; {time.perf_counter() - tic:.1f} s)")
    where = _tuning_store.path() or "memory only (FASTCONV_AUTOTUNE_CACHE is empty)"
    print(f"done in {time.perf_counter() - started:.0f} s; decisions stored in {where}")
    return 0
