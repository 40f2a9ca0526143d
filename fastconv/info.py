"""`fastconv info`: what this installation can do on this machine."""
from __future__ import annotations

import json
import os
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect() -> dict:
    """Machine and installation facts (also recorded in benchmark JSON files)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    import fastconv
    from fastconv import _registry

    backends = fastconv.available_backends()
    facts = {
        "fastconv": fastconv.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": fastconv.get_num_threads(),
        "default_backend": fastconv.get_backend(),
        "available_backends": list(backends),
        "unavailable_backends": _registry.unavailable_reasons(),
        "blas": [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
                 for lib in threadpool_info() if lib.get("user_api") == "blas"],
    }
    for name in backends:
        details = getattr(_registry.get_module(name), "build_info", None)
        if details is not None:
            facts[f"{name}_build"] = details()
    facts["autotune"] = autotune_facts()
    try:
        import torch
        facts["torch"] = torch.__version__
    except ImportError:
        facts["torch"] = None
    return facts


def autotune_facts() -> dict:
    """Where auto's decisions are stored and how many there are (in all, and for this machine's setting)."""
    from fastconv import _auto, _tuning_store

    entries = _tuning_store.load()
    here = _auto.environment()
    matching = sum(all(entry.get(k) == v for k, v in here.items()) for entry in entries.values())
    return {"enabled": _auto.autotune_enabled(), "file": _tuning_store.path(), "decisions": len(entries),
            "for_this_setting": matching}


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def run(args) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    for key, value in facts.items():
        if key == "blas":
            for lib in value:
                print(f"{'blas':<22} {lib['internal_api']} {lib['version']} ({lib['architecture']}, "
                      f"{lib['num_threads']} threads) {lib['filepath']}")
        elif key == "unavailable_backends":
            for name, why in value.items():
                print(f"{'unavailable':<22} {name}: {why}")
        else:
            print(f"{key:<22} {value}")
    return 0
