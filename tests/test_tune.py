"""`fastconv tune` and the autotune facts of `fastconv info`: decisions measured ahead of time and stored."""
import json

import pytest

from fastconv import _auto, _tuning_store, cli


@pytest.fixture(autouse=True)
def own_file(monkeypatch, tmp_path):
    monkeypatch.setenv(_tuning_store.ENV_PATH, str(tmp_path / "autotune.json"))
    _auto.clear()
    yield
    _auto.clear()


def test_list_shows_each_signature_once_without_measuring(capsys):
    assert cli.main(["tune", "--list", "--case", "cs231n-s2,pool2-s2", "--dtype", "float32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # conv (forward-only shares forward+backward's decision), max and avg pool
    assert any("conv2d x=(100,3,31,31) w=(25,3,3,3)" in line for line in lines)
    assert not (_tuning_store.load())


def test_default_list_covers_the_kernel_suite_not_the_training_steps(capsys):
    assert cli.main(["tune", "--list"]) == 0  # nn's train_step workloads are in the suite too
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(" conv2d " in line or "_pool2d " in line for line in lines)
    assert not any(line.startswith(("digits", "cs231n ", "vgg ")) for line in lines)


def test_tune_stores_a_decision_that_a_new_process_uses(capsys, monkeypatch):
    assert cli.main(["tune", "--case", "pool2-s2", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "[2/2]" in out and "decisions stored in" in out
    entries = _tuning_store.load()
    assert len(entries) == 2
    _auto.clear()
    monkeypatch.setattr(_auto, "_measure", lambda *args: pytest.fail("a stored decision was measured again"))
    from fastconv.tune import signatures
    for _, op, signature in signatures(["pool2-s2"], ["float32"]):
        assert _auto.choose(op, signature) == next(e["backend"] for k, e in entries.items()
                                                  if k.startswith(_auto.describe(op, signature)))


def test_clear_deletes_the_stored_decisions(capsys):
    _tuning_store.save({"k": {"backend": "im2col"}})
    assert cli.main(["tune", "--clear", "--case", "pool2-s2", "--dtype", "float64", "--list"]) == 0
    assert _tuning_store.load() == {"k": {"backend": "im2col"}}  # --list changes nothing
    assert cli.main(["tune", "--clear", "--case", "small-pool2"]) == 0  # small cases: nothing to tune
    assert _tuning_store.load() == {}


def test_bad_options_exit_2(capsys):
    assert cli.main(["tune", "--dtype", "float16"]) == 2
    assert "float16" in capsys.readouterr().err


def test_info_shows_where_decisions_are_and_how_many(capsys):
    _tuning_store.save({"a": {"backend": "im2col"}, "b": {"backend": "cython"}})
    assert cli.main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["autotune"]
    assert facts["file"] == _tuning_store.path() and facts["decisions"] == 2 and facts["for_this_setting"] == 0
