"""The layering: fastconv never imports nn; nn plugs its command and its benchmark workloads in."""
import subprocess
import sys

import fastconv
from fastconv import cli
from fastconv.bench import workloads as wl

_IMPORT_ALL = """
import importlib, pkgutil, sys
import fastconv
for info in pkgutil.walk_packages(fastconv.__path__, "fastconv."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional piece that is not built or installed here
        print("skipped", info.name, exc, file=sys.stderr)
print(sorted(name for name in sys.modules if name == "nn" or name.startswith("nn.")))
"""


def test_importing_every_fastconv_module_imports_no_nn():
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nn_adds_the_train_command_and_the_training_step_workloads():
    assert "train" in cli.build_parser().format_help()
    assert wl.TRAIN_STEP in wl.families()
    assert {w.case.name for w in wl.select(ops=[wl.TRAIN_STEP])} == {"digits", "cs231n", "vgg", "resnet20"}


def test_a_broken_plugged_in_command_is_reported_and_the_others_work(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_plugged_in", lambda: {"broken": "nn._no_such_module"})
    parser = cli.build_parser()
    assert "broken" in capsys.readouterr().err
    assert parser.parse_args(["info"]).command == "info"
    assert fastconv.available_backends()


def test_module_network_workloads_match_their_torch_mirror():
    """The first step of vgg and resnet20 on nn agrees with the same step of the torch peer built from it
    (same layers, parameter names and starting weights), as `fastconv bench` checks before timing."""
    import numpy as np
    import pytest
    pytest.importorskip("torch")
    from nn import networks
    for name in ("vgg", "resnet20"):
        network = networks.BY_NAME[name]
        backends = (fastconv.available_backends()[0], "torch")
        ours, theirs = (networks.make_call(network, np.float64, backend)() for backend in backends)
        assert len(ours) == len(theirs) > 10 and networks.agrees(ours, theirs, np.float64), name
