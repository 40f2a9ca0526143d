"""Backends from outside the package: register_backend and entry points, result checks, check_backend, the
`fastconv check` and `fastconv bench --backend-module` commands, the pytest fixture."""
import contextlib
import importlib.metadata
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastconv
from fastconv import _auto, _plugins, _registry, cli
from fastconv.cases import assert_results_close
from fastconv.testing import CONV_GRID, POOL_GRID, check_backend, conv2d_results, naive_results, pool2d_results

ROOT = Path(fastconv.__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "im2col_rows.py")
BASIC = next(case for case in CONV_GRID if case.name == "basic")  # padding 1
POOL = next(case for case in POOL_GRID if case.name == "k3-s2-p1-odd")

# The example with the classic bug: one row and column too many of padding at the top and left
# (the output keeps its size, p.out_h / p.out_w, so only its values are wrong).
BROKEN_SOURCE = f'''
import importlib.util

spec = importlib.util.spec_from_file_location("im2col_rows_original", {EXAMPLE!r})
rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rows)


def conv2d_forward(x, w, b, p):
    return rows.conv2d_forward(x, w, b, p._replace(pad_h=p.pad_h + 1, pad_w=p.pad_w + 1))
'''
RAISING_SOURCE = '''
def conv2d_forward(x, w, b, p):
    raise NotImplementedError("the student has not written it yet")
'''


@pytest.fixture(scope="module")
def example():
    return _plugins.load_from_path(EXAMPLE)[1]


@pytest.fixture
def broken(example):
    def conv2d_forward(x, w, b, p):
        return example.conv2d_forward(x, w, b, p._replace(pad_h=p.pad_h + 1, pad_w=p.pad_w + 1))
    return SimpleNamespace(__name__="broken", conv2d_forward=conv2d_forward)


@pytest.fixture
def register():
    """fastconv.register_backend for this test only: what it registers is unregistered afterwards."""
    names = []

    def register(name, backend, fallback="im2col", **options):
        fastconv.register_backend(name, backend, fallback, **options)
        names.append(name)
        return name
    yield register
    for name in names:
        if _registry.is_registered(name):
            fastconv.unregister_backend(name)


@pytest.fixture
def variant_files(tmp_path):
    (tmp_path / "broken_padding.py").write_text(BROKEN_SOURCE)
    (tmp_path / "raising.py").write_text(RAISING_SOURCE)
    return SimpleNamespace(broken=str(tmp_path / "broken_padding.py"), raising=str(tmp_path / "raising.py"))


def test_the_example_is_a_backend_like_the_built_in_ones(register, example):
    name = register("rows", example)
    assert fastconv.available_backends()[-1] == name and not _registry.is_registered("im2col")
    with fastconv.use_backend(name):
        out, cache = fastconv.conv2d_forward(*BASIC.inputs()[:3], **BASIC.kwargs())
        assert cache.backend == name
        pooled = pool2d_results("max_pool2d", *POOL.inputs(), **POOL.kwargs())  # its fallback's (im2col)
    assert_results_close(conv2d_results(*BASIC.inputs(), name, **BASIC.kwargs()), naive_results(BASIC))
    assert_results_close(pooled, naive_results(POOL, op="max_pool2d"))
    report = check_backend(name)  # the full grid
    assert report.ok and report.failures == [] and report.checks > check_backend(name, quick=True).checks, str(report)
    assert set(report.worst_error) == {"conv2d", "max_pool2d", "avg_pool2d"}
    assert report.worst_error["conv2d"]["float64"] < 1e-12
    assert str(report).startswith("check_backend('rows'), full grid against naive") and "ok: all" in str(report)


def test_check_backend_takes_a_path_or_an_object_and_leaves_nothing_registered(example):
    before = fastconv.available_backends()
    assert check_backend(EXAMPLE, quick=True).ok
    report = check_backend(example, quick=True, torch=False)
    assert report.ok and report.references == ("naive",) and report.backend.startswith("im2col_rows")
    assert fastconv.available_backends() == before


def test_off_by_one_padding_is_reported_case_by_case(broken):
    report = check_backend(broken, quick=True)
    assert not report.ok and report.failures
    assert {failure.op for failure in report.failures} == {"conv2d"}  # pooling runs on the fallback, right
    basic = [f for f in report.failures if f.arguments["case"] == "basic" and f.check == "naive"]
    assert {f.dtype for f in basic} == {"float32", "float64"}
    assert basic[0].arguments["padding"] == 1 and "result 0" in basic[0].error  # out; the gradients are right
    assert report.worst_error["conv2d"]["float64"] > 1
    text = str(report)
    assert "FAILED:" in text and "FAIL conv2d float64 [naive] case=basic" in text and "Mismatched elements" in text


def test_a_raising_variant_is_reported_and_the_other_checks_still_run():
    raising = SimpleNamespace(__name__="raising", conv2d_forward=lambda x, w, b, p: 1 / 0)
    report = check_backend(raising, quick=True, torch=False)
    assert not report.ok and report.checks > len(report.failures) > 0
    assert "BackendError: backend 'raising': conv2d_forward raised ZeroDivisionError" in report.failures[0].error
    assert report.worst_error["max_pool2d"]["float64"] < 1e-12  # the pooling checks ran, on im2col


def test_a_raising_kernel_is_re_raised_naming_the_backend(register):
    name = register("raising", SimpleNamespace(conv2d_forward=lambda x, w, b, p: 1 / 0))
    with pytest.raises(fastconv.BackendError, match="backend 'raising': conv2d_forward raised ZeroDivisionError"):
        fastconv.conv2d_forward(*BASIC.inputs()[:3], backend=name)


@pytest.mark.parametrize("returned, message", [
    (lambda x, w, b, p: (np.zeros((1, 2, 3, 4), x.dtype), None), r"result 0 has shape \(1, 2, 3, 4\).*expected shape"),
    (lambda x, w, b, p: (np.zeros((x.shape[0], w.shape[0], p.out_h, p.out_w)), None),
     "dtype float64, expected .*float32"),
    (lambda x, w, b, p: np.zeros((x.shape[0], w.shape[0], p.out_h, p.out_w), x.dtype), "where a tuple of 2 results"),
    (lambda x, w, b, p: ([[0.0]], None), "result 0 should be an ndarray"),
], ids=["shape", "dtype", "not-a-pair", "not-an-array"])
def test_a_wrong_result_is_a_clear_error_naming_the_backend(register, returned, message):
    name = register("wrong", SimpleNamespace(conv2d_forward=returned))
    x, w, b, _ = BASIC.inputs(np.float32)
    with pytest.raises(fastconv.BackendError, match=f"backend 'wrong': conv2d_forward returned .*{message}"):
        fastconv.conv2d_forward(x, w, b, backend=name, **BASIC.kwargs())


def test_a_wrong_gradient_shape_is_caught_too(register):
    name = register("wrong", SimpleNamespace(max_pool2d_backward=lambda dout, x, ctx, p: dout))
    out, cache = fastconv.max_pool2d_forward(POOL.inputs()[0], backend=name, **POOL.kwargs())
    with pytest.raises(fastconv.BackendError, match="max_pool2d_backward returned its result has shape"):
        fastconv.max_pool2d_backward(np.ones_like(out), cache)


def test_half_a_pair_is_completed_by_the_fallback(register, example):
    # The variant's forward context is its own (here: the patch rows); the fallback's backward gets
    # the fallback's context instead, and a variant's backward alone gets None.
    def max_pool2d_backward(dout, x, ctx, p):
        assert ctx is None
        naive = _registry.get_module("naive")
        return naive.max_pool2d_backward(dout, x, naive.max_pool2d_forward(x, p)[1], p)
    name = register("half", SimpleNamespace(conv2d_forward=example.conv2d_forward,
                                            max_pool2d_backward=max_pool2d_backward))
    assert_results_close(conv2d_results(*BASIC.inputs(), name, **BASIC.kwargs()), naive_results(BASIC))
    assert_results_close(pool2d_results("max_pool2d", *POOL.inputs(), name, **POOL.kwargs()),
                         naive_results(POOL, op="max_pool2d"))
    fused, _ = fastconv.conv2d_forward(*BASIC.inputs()[:3], backend=name, activation="relu", **BASIC.kwargs())
    np.testing.assert_allclose(fused, np.maximum(naive_results(BASIC)[0], 0), rtol=1e-12)


def test_registration_rules(register, example):
    for name in ("im2col", "auto", "torch", "gemm", "not a name"):
        with pytest.raises(ValueError, match="backend name"):
            fastconv.register_backend(name, example)
    register("rows", example)
    with pytest.raises(ValueError, match="registered already"):
        fastconv.register_backend("rows", example)
    register("rows", example, "naive", replace=True)
    assert _registry.get_module("rows").fallback == "naive"
    with pytest.raises(TypeError, match="none of the kernel functions"):
        fastconv.register_backend("empty", object())
    with pytest.raises(TypeError, match="conv2d_forward must be a function"):
        fastconv.register_backend("bad", SimpleNamespace(conv2d_forward=3))
    with pytest.raises(ValueError, match="backend must be one of"):
        fastconv.register_backend("other", example, fallback="nosuch")
    with pytest.raises(ValueError, match="another concrete backend"):
        fastconv.register_backend("other", example, fallback="auto")
    fastconv.set_backend("rows")
    fastconv.unregister_backend("rows")
    assert fastconv.get_backend() == "auto" and "rows" not in fastconv.available_backends()
    with pytest.raises(ValueError, match="no registered backend named 'rows'"):
        fastconv.unregister_backend("rows")
    with pytest.raises(ValueError, match="no registered backend named 'naive'"):
        fastconv.unregister_backend("naive")


def test_auto_considers_a_variant_only_when_asked_to(register, example, monkeypatch):
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")  # decisions without timing: the first candidate
    signature = ((1, 1, 4, 4), (1, 1, 2, 2), False, fastconv._params.ConvParams(1, 1, 0, 0, 1, 1, 1, 3, 3, 2, 2), "d")
    _auto.choose("conv2d", signature)
    register("rows", example)
    assert "rows" not in _auto.candidates() and "rows" not in _auto.environment()["backends"]
    assert _auto.decisions() == {}  # registering forgot them
    _auto.choose("conv2d", signature)
    register("tuned", example, auto=True)
    assert _auto.decisions() == {}
    assert _auto.candidates()[-1] == "tuned" and "tuned" in _auto.environment()["backends"]
    assert "tuned" in _auto._store_key("conv2d", signature, _auto.environment())  # stored decisions see it
    fastconv.unregister_backend("tuned")
    assert "tuned" not in _auto.candidates()


@pytest.fixture
def entry_points(monkeypatch, tmp_path):
    """Pretend two packages declare backends: one that loads (a copy of the example), one that does not."""
    (tmp_path / "third_party_variant.py").write_text(Path(EXAMPLE).read_text() + "\nAUTO = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [importlib.metadata.EntryPoint("thirdparty", "third_party_variant", "fastconv.backends"),
              importlib.metadata.EntryPoint("broken_plugin", "no_such_module_here", "fastconv.backends")]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [point for point in points if point.group == group])
    monkeypatch.setattr(_registry, "_discovered", False)
    monkeypatch.setattr(_registry, "_failed", dict(_registry._failed))
    yield
    if _registry.is_registered("thirdparty"):
        fastconv.unregister_backend("thirdparty")


def test_entry_point_backends_are_found_and_a_broken_one_is_reported(entry_points):
    assert "thirdparty" in fastconv.available_backends() and "broken_plugin" not in fastconv.available_backends()
    assert _registry.get_module("thirdparty").auto and "thirdparty" in _auto.candidates()
    assert_results_close(conv2d_results(*BASIC.inputs(), "thirdparty", **BASIC.kwargs()), naive_results(BASIC))
    assert "no_such_module_here" in _registry.unavailable_reasons()["broken_plugin"]
    with pytest.raises(fastconv.BackendUnavailableError, match="broken_plugin.*not available"):
        fastconv.conv2d_forward(*BASIC.inputs()[:3], backend="broken_plugin")


def run_cli(*argv):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(list(argv))
    return status, stdout.getvalue()


TINY_CONV = ["--case", "small-dil-groups", "--op", "conv_fwd_bwd", "--dtype", "float64", "--repeats", "1",
             "--budget", "0"]


def test_bench_times_a_backend_module_beside_the_others(tmp_path):
    status, out = run_cli("bench", "--backend-module", EXAMPLE, "--quick", "--backend", "im2col", *TINY_CONV,
                          "--json", str(tmp_path / "run.json"))
    assert status == 0, out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "im2col_rows" in rows and "im2col" in rows and "MISMATCH" not in out
    doc = json.loads((tmp_path / "run.json").read_text())
    assert [r["backend"] for r in doc["results"]] == ["im2col", "im2col_rows"]
    assert doc["settings"]["backend_modules"] == {"im2col_rows": EXAMPLE}
    assert "im2col_rows" not in fastconv.available_backends()  # registered for the run only


def test_bench_flags_a_wrong_or_raising_backend_module_and_runs_the_rest(variant_files):
    status, out = run_cli("bench", "--backend-module", variant_files.broken, "--backend-module",
                          variant_files.raising, "--backend", "im2col", *TINY_CONV)
    assert status == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "MISMATCH vs naive" in rows["broken_padding"]
    assert "ERROR BackendError: backend 'raising': conv2d_forward raised NotImplementedError" in rows["raising"]
    assert "MISMATCH" not in rows["im2col"] and "ERROR" not in rows["im2col"]


def test_bench_backend_module_errors_are_usage_errors(capsys, tmp_path):
    assert cli.main(["bench", "--backend-module", str(tmp_path / "nowhere.py"), *TINY_CONV]) == 2
    assert "expected path/to/file.py" in capsys.readouterr().err
    assert cli.main(["bench", "--backend-module", f"{EXAMPLE}:nothing", *TINY_CONV]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err


def test_check_command_exit_status(variant_files):
    status, out = run_cli("check", EXAMPLE, "--quick")
    assert status == 0 and "ok: all" in out
    status, out = run_cli("check", variant_files.broken, "--quick", "--no-torch")
    assert status == 1 and "FAILED" in out and "case=basic" in out
    assert cli.main(["check", "nosuch_backend"]) == 2


PLUGIN_TESTS = f'''
import importlib.util

def load(path):
    spec = importlib.util.spec_from_file_location("variant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def test_example_conforms(backend_conformance):
    assert backend_conformance(load({EXAMPLE!r}), quick=True, torch=False).ok

def test_broken_fails(backend_conformance):
    backend_conformance({{broken!r}}, quick=True, torch=False)
'''


def test_pytest_fixture_runs_the_conformance_grid(tmp_path, variant_files):
    (tmp_path / "test_variant.py").write_text(PLUGIN_TESTS.format(broken=variant_files.broken))
    plugins = importlib.metadata.entry_points(group="pytest11")
    installed = any(entry.value == "fastconv.pytest_plugin" for entry in plugins)
    load_plugin = [] if installed else ["-p", "fastconv.pytest_plugin"]  # a checkout used without installing
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *load_plugin, "-p", "no:cacheprovider",
                             "test_variant.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "check_backend('broken_padding'), quick grid against naive: FAILED" in result.stdout


def test_a_step_kernel_of_a_variant_is_checked_too(register):
    name = register("upcasting", SimpleNamespace(relu_forward=lambda x: np.maximum(x, 0).astype(np.float64)))
    with pytest.raises(fastconv.BackendError, match="backend 'upcasting': relu_forward returned .*dtype float64"):
        fastconv.relu_forward(np.ones(3, np.float32), backend=name)
    assert fastconv.relu_forward(np.ones(3), backend=name)[0].dtype == np.float64  # right where it is right
