"""The `fastconv` command line: `info`, `bench`, `check`, `tune`, and the subcommands other packages add (`train`)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module, help); the module defines `configure(parser)` (its options) and
# `run(args)`. Other packages add subcommands through the entry point group
# "fastconv.commands", naming such a module (with a HELP string).
SUBCOMMANDS = {
    "info": ("fastconv.info", "Version, backends (and why any is missing), threads, BLAS, CPU."),
    "bench": ("fastconv.bench", "Benchmark every backend (and PyTorch) side by side; save and compare baselines."),
    "check": ("fastconv.check", "Check a backend (a file of kernels, or a name) against naive and PyTorch."),
    "tune": ("fastconv.tune", "Let auto measure the suite's workloads now and store its decisions."),
}


def _plugged_in() -> dict:
    from importlib.metadata import entry_points
    return {point.name: point.value for point in entry_points(group="fastconv.commands")
            if point.name not in SUBCOMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description="fastconv: fast NumPy conv/pool kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {**SUBCOMMANDS, **{name: (module, None) for name, module in _plugged_in().items()}}
    for name, (module_name, help_text) in commands.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken plug-in must not take the other commands down
            if name in SUBCOMMANDS:
                raise
            print(f"fastconv: the {name!r} command ({module_name}) cannot load: {exc}", file=sys.stderr)
            continue
        help_text = help_text or getattr(module, "HELP", None)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sp)
        sp.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
