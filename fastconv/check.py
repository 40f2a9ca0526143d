"""`fastconv check`: the conformance grid (fastconv.testing.check_backend) run against one backend, as a report."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def configure(parser) -> None:
    parser.epilog = "Exit status: 0 every check passed; 1 some failed; 2 the backend cannot be loaded."
    parser.add_argument("backend", metavar="PATH.py[:ATTR] | NAME",
                        help="a file with kernel functions (or ATTR, an object in it that has them), "
                             "or the name of an available backend")
    parser.add_argument("--quick", action="store_true", help="a few cases of each kind instead of the whole grid")
    parser.add_argument("--fallback", default="im2col", metavar="NAME",
                        help="the backend whose kernels a file's backend lacks are run (default im2col)")
    parser.add_argument("--no-torch", action="store_true", help="check against the naive reference only")


def run(args) -> int:
    from .conformance import check_backend
    try:
        report = check_backend(args.backend, quick=args.quick, fallback=args.fallback,
                               torch=False if args.no_torch else None)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"fastconv check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(report)
    return EXIT_OK if report.ok else EXIT_FAILED
