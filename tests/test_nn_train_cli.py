"""`fastconv train` through fastconv.cli.main: tiny runs, checkpoint/resume, plot, and clear errors."""
import re
import sys

import pytest

import fastconv
from fastconv.cli import main
from nn.checkpoint import load_checkpoint

QUICK = ["train", "--epochs", "1", "--train-samples", "300", "--batch-size", "20"]


def test_one_quick_epoch(capsys):
    assert main(QUICK + ["--model", "cnn"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"epoch 1/1 \[#+\] 15/15 loss", captured.err)  # the progress bar
    assert re.search(r"epoch 1/1  loss \d\.\d{4}  train_acc \d\.\d{4}  val_acc \d\.\d{4}", captured.out)
    test_acc = float(re.search(r"test accuracy (\d\.\d+)", captured.out).group(1))
    assert test_acc > 0.5  # 300 images, one epoch: far above the 0.1 of chance


@pytest.mark.parametrize("model", ["convnet", "fc"])
def test_cs231n_models_and_backend_choice(model, capsys):
    backend = fastconv.available_backends()[0]
    assert main(QUICK + ["--model", model, "--backend", backend]) == 0
    assert f"backend {backend}" in capsys.readouterr().out
    assert fastconv.get_backend() == "auto"  # the CLI's choices do not leak into the caller


@pytest.mark.parametrize("model", ["linear-svm", "softmax", "nielsen"])
def test_numpy_models_reach_93_percent_with_their_defaults(model, capsys):
    assert main(["train", "--model", model]) == 0
    out = capsys.readouterr().out
    assert f"training {model} on digits" in out
    assert float(re.search(r"test accuracy (\d\.\d+)", out).group(1)) >= 0.93


def test_numpy_model_options_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    assert main(QUICK + ["--model", "nielsen", "--epochs", "2", "--lr", "0.3", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "eta 0.3" in out and "mini-batch 20" in out and "epoch 2/2" in out and "epoch 3/" not in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(QUICK + ["--model", "softmax", "--lr", "0.5"]) == 0  # one epoch of 300 images in batches of 20
    assert "SGD lr 0.5, reg 0.0001, 15 iterations of 20" in capsys.readouterr().out


def test_numpy_models_refuse_solver_options(tmp_path, capsys):
    for extra in (["--checkpoint", str(tmp_path / "x.npz")], ["--lr-decay", "0.5"], ["--backend", "naive"]):
        assert main(QUICK + ["--model", "linear-svm"] + extra) == 2
        assert f"{extra[0]}: only for the models cnn, convnet, fc" in capsys.readouterr().err


def test_checkpoint_resume_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    checkpoint, plot = tmp_path / "run.npz", tmp_path / "curves.png"
    assert main(QUICK + ["--checkpoint", str(checkpoint)]) == 0
    assert load_checkpoint(checkpoint).epoch == 1
    capsys.readouterr()
    args = ["train", "--epochs", "2", "--train-samples", "300", "--batch-size", "20"]
    assert main(args + ["--checkpoint", str(checkpoint), "--resume", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch 2/2" in out and "epoch 1/2" not in out
    saved = load_checkpoint(checkpoint)
    assert saved.epoch == 2 and len(saved.history["val_acc"]) == 3
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_clear(tmp_path, capsys, monkeypatch):
    assert main(QUICK + ["--backend", "nonsense"]) == 2
    assert "backend must be one of" in capsys.readouterr().err
    assert main(QUICK + ["--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert main(QUICK + ["--checkpoint", str(tmp_path / "absent.npz"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    assert main(QUICK + ["--checkpoint", str(corrupt), "--resume"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(QUICK + ["--plot", str(tmp_path / "x.png")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
