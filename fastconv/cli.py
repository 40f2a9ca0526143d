"""The `fastconv` command line: `info` (and the subcommands registered in SUBCOMMANDS)."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> "module:function" taking the parsed args; each module adds its own options
# through a `configure(parser)` function beside it.
SUBCOMMANDS = {
    "info": ("fastconv.info", "Version, backends (and why any is missing), threads, BLAS, CPU."),
    "bench": ("fastconv.bench", "Benchmark every backend (and PyTorch) side by side; save and compare baselines."),
    "tune": ("fastconv.tune", "Let auto measure the suite's workloads now and store its decisions."),
    "train": ("fastconv.train", "Train a CNN on the digits data set."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description="fastconv: fast NumPy conv/pool kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sp)
        sp.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
