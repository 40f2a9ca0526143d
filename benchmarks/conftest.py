"""pytest-benchmark setup: fastconv's machine facts in saved runs, the `quick` marker, shared references, and
backends from files (--backend-module) beside the registered ones."""
from functools import lru_cache

import fastconv
from fastconv import _plugins
from fastconv.bench import runner
from fastconv.bench import workloads as wl

USABLE = wl.usable_backends()  # every row, registered backends too; again after pytest_configure


def pytest_addoption(parser):
    parser.addoption("--backend-module", action="append", default=[], metavar="PATH.py[:ATTR]",
                     help="also benchmark the backend in this file, as `fastconv bench --backend-module` does")


def pytest_configure(config):
    global USABLE
    config.addinivalue_line("markers", "quick: the workloads of `fastconv bench --quick` (pytest benchmarks/ -m quick)")
    for spec in config.getoption("backend_module"):  # registered for the whole session (the suite's process)
        fastconv.register_backend(*_plugins.load_from_path(spec), "im2col")
    USABLE = wl.usable_backends()


# Facts that stay put between runs on one machine (pytest-benchmark warns when saved ones differ).
STABLE_FACTS = ("fastconv", "numpy", "cpu", "cores", "threads", "available_backends", "blas", "torch")


def pytest_benchmark_update_machine_info(config, machine_info):
    from fastconv.info import collect
    facts = collect()
    # Load order and momentary thread pins vary from run to run: keep what identifies each library.
    facts["blas"] = sorted(({k: lib[k] for k in ("internal_api", "version", "filepath")} for lib in facts["blas"]),
                           key=lambda lib: lib["filepath"])
    machine_info["fastconv"] = {key: facts[key] for key in STABLE_FACTS if key in facts}


@lru_cache(maxsize=1)  # the backends of one workload run one after another: keep only its arrays
def inputs_and_reference(workload: wl.Workload):
    """(inputs, reference backend name or None, reference outputs or None) for ``workload``."""
    arrays = workload.inputs()
    return (arrays, *runner.reference_outputs(workload, USABLE, arrays))
