"""The `fastconv bench` command: options, the run loop with progress, exit codes."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

import fastconv
from fastconv import _registry

from . import compare as cmp
from . import plot, report, runner
from . import workloads as wl

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def configure(parser) -> None:
    parser.epilog = ("Exit status: 0 all good; 1 a row got slower than --fail-over, or a backend's result "
                     "disagrees with the reference; 2 bad options or an unusable baseline.")
    parser.add_argument("--quick", action="store_true",
                        help="a run under a minute: a few headline workloads, fewer repeats "
                             "(with --case, the named cases from the whole suite)")
    many = dict(action="append", metavar="A[,B]")
    parser.add_argument("--backend", **many, help="only these backends (torch = PyTorch's row; registered "
                                                   "backends and entry points too)")
    parser.add_argument("--backend-module", action="append", metavar="PATH.py[:ATTR]", default=[],
                        help="also time the backend in this file (named after the file, or ATTR, an object in it "
                             "with the kernel functions); the kernels it lacks run on im2col")
    parser.add_argument("--op", **many, help=f"only these operations: {', '.join(wl.all_ops())}")
    parser.add_argument("--dtype", **many, help=f"only these dtypes: {', '.join(wl.DTYPES)}")
    parser.add_argument("--case", **many, help="only these cases (shell patterns like 'small-*')")
    parser.add_argument("--threads", type=int, metavar="N", help="fastconv.set_num_threads(N) first (PyTorch follows)")
    parser.add_argument("--repeats", type=int, metavar="N", help="minimum timed calls per row")
    parser.add_argument("--timing", choices=("loop", "settled"), default="loop",
                        help="loop (default): each visit runs the call untimed for 0.15 s (other threads gone, "
                             "cores up to speed), then times calls back to back, as a training loop runs them; "
                             "settled: 0.1 s of untimed calls per visit first (the earlier tables' method)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="time each row until it used this much (after the minimum repeats)")
    parser.add_argument("--json", metavar="FILE", help="write machine facts and every row to FILE")
    parser.add_argument("--compare", metavar="BASELINE.json",
                        help="compare each row with the same row of a --json file; exit 1 on a slowdown")
    parser.add_argument("--fail-over", type=float, default=15.0, metavar="PCT",
                        help="a row fails --compare when its median is more than PCT %% slower (default 15)")
    parser.add_argument("--remeasure", type=int, default=3, metavar="N",
                        help="before --compare fails a row, time it again up to N times (stopping once it "
                             "is within --fail-over) and keep its best median (default 3; 0 = never)")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of speedups per case and backend")
    parser.add_argument("--markdown", metavar="FILE.md", help="write the results as Markdown tables (for a README)")
    parser.add_argument("--list", action="store_true", help="list the selected workloads and backends, then exit")


def _error(message: str) -> int:
    print(f"fastconv bench: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _settings(args) -> runner.Settings:
    settings = runner.QUICK if args.quick else runner.FULL
    settings = dataclasses.replace(settings, timing=args.timing)
    if args.repeats is not None:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        settings = dataclasses.replace(settings, min_repeats=args.repeats,
                                       max_repeats=max(args.repeats, settings.max_repeats))
    if args.budget is not None:
        if args.budget < 0:
            raise ValueError(f"--budget must be >= 0, got {args.budget}")
        settings = dataclasses.replace(settings, budget_s=args.budget)
    return settings


def _backends(args, usable) -> list[str]:
    names = wl.split_values(args.backend)
    if names:  # a --backend-module's backend runs whatever --backend says
        names += args.backend_names
    for name in names:
        if name not in usable:
            reasons = _registry.unavailable_reasons()
            why = reasons.get(name) or ("PyTorch is not installed" if name == wl.TORCH else "unknown backend")
            raise ValueError(f"backend {name!r} cannot run here ({why}); usable: {', '.join(usable)}")
    return [name for name in usable if not names or name in names]


def run(args) -> int:
    with contextlib.ExitStack() as registered:  # backend modules are registered for this run only
        try:
            args.backend_names = [registered.enter_context(_registered_module(spec)) for spec in args.backend_module]
        except (ValueError, TypeError) as exc:
            return _error(str(exc))
        return _run(args)


@contextlib.contextmanager
def _registered_module(spec: str):
    """A --backend-module file's backend, registered (falling back to im2col) until the run ends."""
    from fastconv import _plugins
    name, source = _plugins.load_from_path(spec)
    if name in _registry.available_backends():
        raise ValueError(f"--backend-module {spec}: a backend named {name!r} exists already; name the "
                         f"object to use with {spec}:ATTR or rename the file")
    _registry.register_backend(name, source, "im2col")
    try:
        yield name
    finally:
        _registry.unregister_backend(name)


def _run(args) -> int:
    try:
        if args.fail_over < 0:
            raise ValueError(f"--fail-over must be >= 0, got {args.fail_over}")
        if args.remeasure < 0:
            raise ValueError(f"--remeasure must be >= 0, got {args.remeasure}")
        if args.threads is not None:
            fastconv.set_num_threads(args.threads)
        settings = _settings(args)
        workloads = wl.select(args.quick, args.case, args.op, args.dtype)
        usable = wl.usable_backends()
        backends = _backends(args, usable)
        baseline = cmp.load_baseline(args.compare) if args.compare else None
        if args.plot:
            plot.require_matplotlib()
    except (ValueError, TypeError, cmp.BaselineError, plot.PlotUnavailable) as exc:
        return _error(str(exc))
    plan = [(workload, [b for b in backends if wl.runs_on(workload, b)]) for workload in workloads]
    plan = [(workload, names) for workload, names in plan if names]
    if not plan:
        return _error("nothing to run with these filters (naive runs only on the small cases)")
    if args.list:
        for workload, names in plan:
            print(f"{workload.label:<40} {' '.join(names)}")
        return EXIT_OK

    from fastconv.info import collect
    machine = collect()
    _precompile_numba(plan)
    records = _run_plan(plan, usable, settings)
    print(report.format_report(records))
    status = EXIT_OK
    if any(r["ok"] is False for r in records):
        print("\nSome backends disagree with the reference (MISMATCH/ERROR rows above).")
        status = EXIT_FAILED

    comparison = None
    if baseline is not None:
        comparison = _compare(records, baseline, machine, args, settings, {w.key: w for w, _ in plan})
        if comparison.failed:
            status = EXIT_FAILED
    if args.json:
        settings_doc = dict(dataclasses.asdict(settings), quick=args.quick, threads=fastconv.get_num_threads(),
                            backend_modules=dict(zip(args.backend_names, args.backend_module)))
        report.write_json(args.json, report.document(
            machine, settings_doc, records, comparison.as_dict() if comparison else None))
        print(f"\nWrote {args.json}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(report.format_markdown(records))
        print(f"Wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        try:
            peer = plot.write_plot(records, args.plot)
        except ValueError as exc:
            return _error(str(exc))
        print(f"Wrote {args.plot} (speedups vs {peer})", file=sys.stderr)
    return status


def _precompile_numba(plan) -> None:
    """Compile the numba kernels the plan runs before timing starts, split over two processes by
    kernel (each kernel's disk-cache entry has one writer): on a fresh install this halves the
    wait; later runs only load them from the cache."""
    workloads = [workload for workload, names in plan if "numba" in names]
    if not workloads:
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from fastconv._threads import usable_cores
    from fastconv.backends import _numba_runtime
    from fastconv.backends import numba as numba_backend

    parts = {"conv_fwd": ("conv_forward",), "conv_fwd_bwd": ("conv_forward", "conv_backward"),
             "maxpool_fwd_bwd": ("max_pool",), "avgpool_fwd_bwd": ("avg_pool",)}
    needed = sorted({(part, workload.dtype) for workload in workloads
                     for part in (parts[workload.op] if workload.family is None
                                  else getattr(workload.case, "kernel_sets", ()))})
    direct = any(workload.op in wl.CONV_OPS and numba_backend.uses_direct_loops(workload.case.w_shape,
                                                                               workload.case.groups)
                 for workload in workloads)
    jobs = numba_backend.split_compile_work(needed, 2)
    tic = time.perf_counter()
    print(f"numba: compiling (or loading from its cache) {len(needed)} kernel sets ...", end="",
          file=sys.stderr, flush=True)
    if len(jobs) > 1 and usable_cores() > 1 and _numba_runtime.CACHE_ENABLED:
        with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(numba_backend.precompile, job, direct) for job in jobs]:
                future.result()
    numba_backend.precompile(needed, direct)  # from the cache when the workers filled it
    print(f" {time.perf_counter() - tic:.1f} s", file=sys.stderr, flush=True)


def _run_plan(plan, usable, settings) -> list[dict]:
    records = []
    started = time.perf_counter()
    for index, (workload, names) in enumerate(plan, 1):
        print(f"[{index:>{len(str(len(plan)))}}/{len(plan)}] {workload.label}: {' '.join(names)} ...",
              end="", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        records.extend(runner.run_workload(workload, names, usable, settings))
        print(f" {time.perf_counter() - tic:.1f} s", file=sys.stderr, flush=True)
    print(f"Done in {time.perf_counter() - started:.1f} s\n", file=sys.stderr, flush=True)
    return records


def _compare(records, baseline, machine, args, settings, workloads_by_key) -> cmp.Comparison:
    for difference in cmp.machine_differences(baseline.machine, machine):
        print(f"note: machine differs from the baseline's, {difference}", file=sys.stderr)
    current = {report.row_key(r): r["median_s"] for r in records if r["median_s"]}
    result = cmp.compare(current, baseline.medians, args.fail_over)
    # A slow median can be another process's noise: time a suspect row again, a few times if
    # need be, and keep its best median. A real slowdown stays slow every time.
    for attempt in range(1, args.remeasure + 1):
        for delta in result.slower:
            print(f"re-measuring {' '.join(delta.key)} ({100 * delta.change:+.1f}%, "
                  f"try {attempt}/{args.remeasure}) ...", file=sys.stderr, flush=True)
            record = next(r for r in records if report.row_key(r) == delta.key)
            seconds = runner.remeasure(workloads_by_key[delta.key[:3]], delta.key[3], settings)
            record.setdefault("remeasured_s", []).append(seconds)
            current[delta.key] = min(current[delta.key], seconds)
        result = cmp.compare(current, baseline.medians, args.fail_over)
    print("\n" + cmp.format_comparison(result, args.compare))
    return result
