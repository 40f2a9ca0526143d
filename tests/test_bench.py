"""`fastconv bench`: the CLI end to end on tiny cases, the JSON schema, --compare, filters, --plot."""
import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastconv
from fastconv import _timing, cli
from fastconv.bench import compare as cmp
from fastconv.bench import report
from fastconv.bench import runner
from fastconv.bench import workloads as wl

TINY = ["--case", "small-pool2", "--op", "maxpool_fwd_bwd", "--dtype", "float32"]
FAST = ["--repeats", "3", "--budget", "0"]
TINY_BACKENDS = [name for name in wl.usable_backends() if name != wl.GEMM]  # GEMM is a conv_fwd peer only


def bench(*argv) -> int:
    return cli.main(["bench", *argv])


def rescaled(doc: dict, factor: float) -> dict:
    doc = json.loads(json.dumps(doc))
    for record in doc["results"]:
        record["median_s"] *= factor
    return doc


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `fastconv bench --quick` on a tiny case with every usable backend, and what it printed and wrote."""
    out_dir = tmp_path_factory.mktemp("bench")
    json_path, plot_path = out_dir / "run.json", out_dir / "run.png"
    argv = ["--quick", *TINY, *FAST, "--json", str(json_path), "--markdown", str(out_dir / "run.md")]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(plot_path)]
    except ImportError:
        plot_path = None
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = bench(*argv)
    return SimpleNamespace(status=status, stdout=stdout.getvalue(), doc=json.loads(json_path.read_text()),
                           plot=plot_path, markdown=(out_dir / "run.md").read_text())


def test_quick_run_succeeds_and_prints_one_row_per_backend(quick_run):
    status, stdout = quick_run.status, quick_run.stdout
    assert status == 0
    assert "small-pool2 · maxpool_fwd_bwd · float32" in stdout
    assert "median ms" in stdout and "GFLOP/s" in stdout and "vs naive" in stdout and "max abs err" in stdout
    for backend in TINY_BACKENDS:
        assert f"\n  {backend} " in stdout


def test_json_has_machine_facts_and_one_checked_record_per_row(quick_run):
    doc = quick_run.doc
    assert doc["schema"] == "fastconv-bench/1"
    for fact in ("cpu", "cores", "numpy", "blas", "threads", "available_backends", "fastconv", "python"):
        assert fact in doc["machine"]
    assert doc["settings"]["quick"] is True and doc["settings"]["min_repeats"] == 3
    records = doc["results"]
    assert [r["backend"] for r in records] == TINY_BACKENDS
    for record in records:
        assert (record["case"], record["op"], record["dtype"]) == ("small-pool2", "maxpool_fwd_bwd", "float32")
        assert record["median_s"] > 0 and record["min_s"] <= record["median_s"] and record["repeats"] >= 3
        assert record["reference"] == "naive" and record["ok"] is True and record["error"] is None
        assert record["max_abs_error"] == 0.0  # max-pool moves values, it does not round them
        assert math.isclose(record["gflops"], record["flops"] / record["median_s"] / 1e9)
        assert math.isclose(record["speedup_vs_naive"] * record["median_s"],
                            next(r["median_s"] for r in records if r["backend"] == "naive"))
        if "torch" in TINY_BACKENDS:
            assert record["speedup_vs_torch"] > 0


def test_markdown_table_has_a_column_per_backend(quick_run):
    markdown = quick_run.markdown
    assert "**maxpool_fwd_bwd** — median ms (speedup vs torch)" in markdown
    assert "| case | dtype | " + " | ".join(TINY_BACKENDS) + " |" in markdown
    assert "| small-pool2 | float32 | " in markdown


def test_plot_file_is_a_png(quick_run):
    plot_path = quick_run.plot
    if plot_path is None:
        pytest.skip("matplotlib is not installed")
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert bench(*TINY, "--plot", str(tmp_path / "p.png")) == 2
    assert "--plot needs matplotlib: pip install 'fastconv[plot]'" in capsys.readouterr().err


def test_without_torch_there_is_no_torch_row(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert wl.TORCH not in wl.usable_backends()
    assert bench(*TINY, *FAST, "--json", str(tmp_path / "r.json")) == 0
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["backend"] for r in records] == [name for name in TINY_BACKENDS if name != wl.TORCH]
    assert all(r["speedup_vs_torch"] is None and r["speedup_vs_naive"] > 0 for r in records)


def test_compare_fails_when_the_baseline_was_much_faster(quick_run, tmp_path, capsys):
    # Times divided by 10 (not 2) so a noisy machine cannot make this run look as fast as that.
    baseline = write(tmp_path, "fast.json", rescaled(quick_run.doc, 0.1))
    assert bench(*TINY, *FAST, "--backend", "naive", "--compare", baseline) == 1
    out = capsys.readouterr()
    assert "SLOWER" in out.out and "REGRESSION: 1 of 1 row(s)" in out.out
    assert "re-measuring small-pool2 maxpool_fwd_bwd float32 naive" in out.err and "try 3/3" in out.err


def test_a_row_that_is_fast_again_when_re_timed_passes(quick_run, tmp_path, monkeypatch, capsys):
    doc = rescaled(quick_run.doc, 0.1)
    baseline = write(tmp_path, "fast.json", doc)
    naive_baseline = next(r["median_s"] for r in doc["results"] if r["backend"] == "naive")
    timings = iter([10 * naive_baseline, naive_baseline])  # still slow on the first re-timing, then fine
    monkeypatch.setattr(runner, "remeasure", lambda workload, backend, settings: next(timings))
    json_out = tmp_path / "now.json"
    assert bench(*TINY, *FAST, "--backend", "naive", "--compare", baseline, "--json", str(json_out)) == 0
    assert "try 2/3" in capsys.readouterr().err
    (record,) = json.loads(json_out.read_text())["results"]
    assert record["remeasured_s"] == [10 * naive_baseline, naive_baseline]


def test_compare_passes_when_the_baseline_was_slower(quick_run, tmp_path, capsys):
    baseline = write(tmp_path, "slow.json", rescaled(quick_run.doc, 10.0))
    assert bench(*TINY, *FAST, "--backend", "naive", "--compare", baseline) == 0
    out = capsys.readouterr()
    assert "OK: no row slower than 15 % over the baseline (1 compared)" in out.out
    assert "SLOWER" not in out.out and "re-measuring" not in out.err


def test_compare_reports_rows_missing_on_either_side(quick_run, tmp_path, capsys):
    doc = rescaled(quick_run.doc, 100.0)  # multi-threaded rows swing widely on a busy machine
    doc["results"] = [r for r in doc["results"] if r["backend"] != "naive"]
    doc["results"].append(dict(doc["results"][0], case="res-c128", op="conv_fwd_bwd"))
    baseline = write(tmp_path, "partial.json", doc)
    json_out = tmp_path / "now.json"
    assert bench(*TINY, *FAST, "--compare", baseline, "--json", str(json_out)) == 0
    out = capsys.readouterr().out
    assert "row(s) only in the baseline (not run now): res-c128 conv_fwd_bwd float32" in out
    assert "1 row(s) new (not in the baseline): small-pool2 maxpool_fwd_bwd float32 naive" in out
    comparison = json.loads(json_out.read_text())["comparison"]
    assert comparison["failed"] is False and len(comparison["only_in_current"]) == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ([1, 2], 'must be a JSON object with a "results" list'),
    ({"results": [{"case": "small-pool2", "op": "maxpool_fwd_bwd", "dtype": "float32"}]}, "needs a string 'backend'"),
    ({"results": [{"case": "a", "op": "b", "dtype": "c", "backend": "d", "median_s": "fast"}]},
     "needs a positive number 'median_s'"),
    ({"results": [{"case": "a", "op": "b", "dtype": "c", "backend": "d", "median_s": -1}]},
     "needs a positive number 'median_s'"),
], ids=["not-json", "not-an-object", "no-backend", "text-median", "negative-median"])
def test_malformed_baseline_is_a_clear_error_before_anything_runs(tmp_path, capsys, content, message):
    assert bench(*TINY, "--compare", write(tmp_path, "bad.json", content)) == 2
    err = capsys.readouterr().err
    assert message in err and "fastconv bench: error:" in err
    assert "[1/" not in err  # failed fast, before timing anything


def test_missing_baseline_file_is_a_clear_error(tmp_path, capsys):
    assert bench(*TINY, "--compare", str(tmp_path / "nowhere.json")) == 2
    assert "cannot read baseline" in capsys.readouterr().err


def test_compare_logic_on_halved_doubled_and_equal_baselines():
    now = {("c", "op", "float64", "b1"): 2.0, ("c", "op", "float64", "b2"): 1.0}
    halved = {key: seconds / 2 for key, seconds in now.items()}
    doubled = {key: seconds * 2 for key, seconds in now.items()}
    assert len(cmp.compare(now, halved, 15).slower) == 2
    assert not cmp.compare(now, now, 15).failed and not cmp.compare(now, doubled, 15).failed
    assert [d.key for d in cmp.compare(now, {**now, ("c", "op", "float64", "b2"): 0.8}, 15).slower] == [
        ("c", "op", "float64", "b2")]  # 25 % slower fails at 15 %...
    assert not cmp.compare(now, {**now, ("c", "op", "float64", "b2"): 0.8}, 30).failed  # ...not at 30 %


def test_filters_select_workloads():
    quick = wl.select(quick=True)
    assert {w.key for w in quick} == set(wl.QUICK)
    assert len(wl.select()) == len(wl.all_workloads()) > len(quick)
    picked = wl.select(cases=["small-*,pool2-s2"], ops=["maxpool_fwd_bwd"], dtypes=["float64"])
    assert {w.case.name for w in picked} == {"small-pool2", "small-pool3-pad", "pool2-s2"}
    assert {(w.op, w.dtype) for w in picked} == {("maxpool_fwd_bwd", "float64")}
    assert {w.case.name for w in wl.select(quick=True, cases=["res-c128"])} == {"res-c128"}  # named: whole suite
    for bad in (dict(ops=["conv"]), dict(dtypes=["float16"]), dict(cases=["nope*"])):
        with pytest.raises(ValueError):
            wl.select(**bad)


def test_list_shows_the_plan_and_naive_only_on_small_cases(capsys):
    assert bench("--case", "small-s2,vgg-c64", "--op", "conv_fwd", "--dtype", "float32", "--list") == 0
    lines = dict(line.split(None, 3)[0::3] for line in capsys.readouterr().out.splitlines())
    assert "naive" in lines["small-s2"].split() and "naive" not in lines["vgg-c64"].split()
    assert "gemm" in lines["vgg-c64"].split()


@pytest.mark.parametrize("argv, message", [
    (["--backend", "nosuch"], "backend 'nosuch' cannot run here"),
    (["--op", "conv"], "unknown op 'conv'"),
    (["--case", "vgg-c64", "--backend", "naive"], "nothing to run"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--fail-over", "-5"], "--fail-over must be >= 0"),
    (["--remeasure", "-1"], "--remeasure must be >= 0"),
])
def test_bad_options_exit_2_with_a_message(capsys, argv, message):
    assert bench(*argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("timing", _timing.MODES)
def test_measure_interleaves_rotates_and_respects_repeats_and_budget(monkeypatch, timing):
    monkeypatch.setattr(_timing, "SETTLE_SECONDS", 0.0)  # settled: one settling call per visit too
    monkeypatch.setattr(_timing, "LOOP_WARM_SECONDS", 0.0)  # loop: likewise
    per_visit = runner.Settings().samples_per_visit
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = runner.measure(calls, runner.Settings(min_repeats=2 * per_visit, max_repeats=2 * per_visit,
                                                    budget_s=0.0, timing=timing))
    assert {name: len(s) for name, s in samples.items()} == dict.fromkeys("abc", 2 * per_visit)
    visit = {name: name * (1 + per_visit) for name in "abc"}  # an untimed call, then the timed ones
    assert "".join(order) == "".join(visit[name] for name in "abc" "bca")
    samples = runner.measure(calls, runner.Settings(min_repeats=1, max_repeats=7, budget_s=60.0))
    assert {len(s) for s in samples.values()} == {7}


def test_a_loop_visit_warms_each_backend_up_before_timing_it(monkeypatch):
    # Each call takes 0.02 s of a fake clock: a visit runs untimed calls until LOOP_WARM_SECONDS
    # have passed (cores up to speed after the previous row), then the timed ones.
    clock = [0.0]
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock[0])
    order = []

    def call(name):
        order.append(name)
        clock[0] += 0.02
    calls = {name: (lambda name=name: call(name)) for name in "ab"}
    runner.measure(calls, runner.Settings(min_repeats=2, max_repeats=2, budget_s=0.0, samples_per_visit=2))
    warm = 1 + int(_timing.LOOP_WARM_SECONDS / 0.02 - 1e-9)  # calls until the warm time has passed
    assert _timing.LOOP_WARM_SECONDS >= 0.05 and warm >= 3
    assert "".join(order) == "a" * (warm + 2) + "b" * (warm + 2)


def test_a_wrong_or_crashing_backend_is_flagged_not_hidden(monkeypatch):
    workload = wl.select(cases=["small-pool2"], ops=["avgpool_fwd_bwd"], dtypes=["float64"])[0]
    real_make_call = wl.make_call

    def make_call(workload, backend, arrays):
        if backend == "off-by-one":
            return lambda: tuple(a + 1 for a in real_make_call(workload, "naive", arrays)())
        if backend == "crashing":
            return lambda: 1 / 0
        return real_make_call(workload, backend, arrays)
    monkeypatch.setattr(wl, "make_call", make_call)
    records = runner.run_workload(workload, ["naive", "off-by-one", "crashing"], ("naive",),
                                  runner.Settings(min_repeats=1, max_repeats=1, budget_s=0))
    by_name = {r["backend"]: r for r in records}
    assert by_name["naive"]["ok"] is True
    assert by_name["off-by-one"]["ok"] is False and by_name["off-by-one"]["max_abs_error"] == pytest.approx(1.0)
    assert by_name["crashing"]["ok"] is False and "ZeroDivisionError" in by_name["crashing"]["error"]
    assert by_name["crashing"]["median_s"] is None


def test_gemm_row_is_timed_unchecked_and_reported_as_a_share(capsys):
    case = wl.cases_by_name()["small-s2"]
    rows, inner, columns = wl.gemm_shape(case)
    assert 2.0 * rows * inner * columns == case.flops()
    assert bench("--case", "small-s2", "--op", "conv_fwd", "--dtype", "float64", "--backend", "naive,gemm",
                 "--repeats", "1", "--budget", "0") == 0
    out = capsys.readouterr().out
    assert "numpy matmul of the same GEMM size (not a conv)" in out
    assert "Conv forward GFLOP/s as a share of the same-size numpy GEMM:" in out


def test_reference_is_naive_on_small_cases_and_a_verified_backend_on_large_ones():
    small, large = wl.select(cases=["small-s2"], ops=["conv_fwd"], dtypes=["float64"])[0], \
        wl.select(cases=["vgg-c64"], ops=["conv_fwd"], dtypes=["float64"])[0]
    assert wl.reference_backend(small, ("numba", "im2col", "naive", "torch")) == "naive"
    assert wl.reference_backend(large, ("numba", "im2col", "naive", "torch")) == "im2col"
    assert wl.reference_backend(large, ("numba", "naive", "torch")) == "torch"
    assert wl.reference_backend(large, ("numba", "naive")) is None


@pytest.mark.parametrize("op", wl.CONV_OPS + wl.POOL_OPS)
def test_torch_row_matches_naive(op):
    pytest.importorskip("torch")
    workload = wl.select(cases=["small-dil-groups" if op in wl.CONV_OPS else "small-pool3-pad"], ops=[op],
                         dtypes=["float64"])[0]
    arrays = workload.inputs()
    expected = wl.make_call(workload, "naive", arrays)()
    assert wl.agrees(wl.make_call(workload, "torch", arrays)(), expected, np.float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_steps_of_every_row_agree_and_a_wrong_one_does_not(dtype):
    workload = wl.select(cases=["digits"], ops=[wl.TRAIN_STEP], dtypes=[dtype])[0]
    expected = wl.make_call(workload, "im2col", {})()
    assert len(expected) == 7  # the loss and the six parameters' gradients
    rows = [name for name in wl.usable_backends() if wl.runs_on(workload, name) and name != wl.GEMM]
    for backend in rows:
        assert wl.agrees(wl.make_call(workload, backend, {})(), expected, dtype, wl.TRAIN_STEP), backend
    wrong = list(expected)
    wrong[3] = wrong[3] * 1.05  # one gradient 5 % off
    assert not wl.agrees(tuple(wrong), expected, dtype, wl.TRAIN_STEP)


def test_a_training_step_call_trains_on_a_new_batch_each_time():
    workload = wl.select(cases=["digits"], ops=[wl.TRAIN_STEP], dtypes=["float64"])[0]
    call = wl.make_call(workload, "cython" if "cython" in fastconv.available_backends() else "im2col", {})
    trainer = call.trainer
    before = {name: value.copy() for name, value in trainer.weights().items()}
    assert len(call()) == 7 and call() == ()  # the first call also returns what it computed
    assert all(not np.array_equal(before[name], value) for name, value in trainer.weights().items())
    assert call.count == 2


def test_pytest_benchmark_suite_checks_and_runs(tmp_path):
    root = Path(fastconv.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "small-pool2-maxpool_fwd_bwd-float32"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(TINY_BACKENDS)} passed" in result.stdout


def test_auto_is_compared_with_the_best_single_backend_on_large_cases():
    def row(case, backend, ms):
        return dict(case=case, op="conv_fwd_bwd", dtype="float64", backend=backend, median_s=ms / 1e3)
    records = [row("vgg-c64", "cython", 10), row("vgg-c64", "numba", 8), row("vgg-c64", wl.AUTO, 8.8),
               row("vgg-c64", wl.TORCH, 4), row("small-s2", "numba", 1), row("small-s2", wl.AUTO, 5)]
    text = report.format_auto_vs_best(records)
    assert "worst 1.10" in text and "(best: numba)" in text
    assert "small-s2" not in text  # the small cases are there for the naive reference only
    assert report.format_auto_vs_best([row("vgg-c64", "numba", 8)]) == ""
