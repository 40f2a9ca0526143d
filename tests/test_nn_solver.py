"""nn.solver and nn.checkpoint: a short real training run, histories, decay, atomic safe checkpoints, resume."""
import os
import zipfile

import numpy as np
import pytest

import nn
from nn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nn.data import load_digits
from nn.models import FullyConnectedNet, ModuleClassifier, ThreeLayerConvNet
from nn.solver import Solver


@pytest.fixture(scope="module")
def digits():
    data = load_digits(seed=0)
    keep = {"X_train": 400, "y_train": 400, "X_val": 100, "y_val": 100}
    return {k: data[k][:n] for k, n in keep.items()}


def small_convnet(seed=0):
    np.random.seed(seed)
    return ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=8, filter_size=3, hidden_dim=32, weight_scale=0.2)


def test_short_training_learns_digits(digits):
    solver = Solver(small_convnet(), digits, update_rule="adam", optim_config={"learning_rate": 1e-2},
                    lr_decay=0.9, batch_size=50, num_epochs=3, verbose=False, seed=0)
    solver.train()
    assert len(solver.loss_history) == 3 * 8
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 4  # epochs 0 (untrained) to 3
    assert np.mean(solver.loss_history[-4:]) < 0.7 * np.mean(solver.loss_history[:4])
    assert solver.best_val_acc > 0.5  # chance is 0.1
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert solver.optim_configs["W1"]["learning_rate"] == pytest.approx(1e-2 * 0.9 ** 3)
    assert solver.check_accuracy(digits["X_val"], digits["y_val"]) == pytest.approx(solver.best_val_acc)


def test_solver_trains_module_api_networks(digits):
    model = ModuleClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 32, rng=0), nn.BatchNorm1d(32), nn.ReLU(),
                                           nn.Linear(32, 10, rng=1)))
    solver = Solver(model, digits, update_rule="sgd_momentum", optim_config={"learning_rate": 0.1},
                    batch_size=50, num_epochs=2, verbose=False, seed=0)
    solver.train()
    assert solver.best_val_acc > 0.6
    assert set(model.params) == {"1.weight", "1.bias", "2.weight", "2.bias", "4.weight", "4.bias"}


def test_verbose_output(digits, capsys):
    Solver(small_convnet(), digits, batch_size=100, num_epochs=1, print_every=2, seed=0).train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 4) loss:" in out and "(Iteration 3 / 4)" in out and "(Epoch 1 / 1) train acc:" in out


def test_solver_rejects_bad_arguments(digits):
    with pytest.raises(ValueError, match="update_rule"):
        Solver(small_convnet(), digits, update_rule="lbfgs")
    with pytest.raises(ValueError, match="X_val"):
        Solver(small_convnet(), {"X_train": digits["X_train"], "y_train": digits["y_train"]})


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck.npz"
    model_state = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "0.weight": np.ones(2)}
    optim_state = {"W1": {"learning_rate": 1e-3, "t": 7, "m": np.full((2, 3), 0.5, np.float32)}}
    history = {"loss": [2.3, 1.1], "val_acc": [0.1, 0.9]}
    save_checkpoint(path, model_state, optim_state, epoch=3, history=history, extra={"rule": "adam"})
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert loaded.epoch == 3 and loaded.history == history and loaded.extra == {"rule": "adam"}
    np.testing.assert_array_equal(loaded.model_state["W1"], model_state["W1"])
    assert loaded.model_state["W1"].dtype == np.float32
    config = loaded.optimizer_state["W1"]
    assert config["t"] == 7 and isinstance(config["t"], int) and config["learning_rate"] == 1e-3
    np.testing.assert_array_equal(config["m"], optim_state["W1"]["m"])
    with np.load(path, allow_pickle=False) as archive:  # plain arrays only: loads without pickle
        assert "optim/W1/m" in archive.files


def test_checkpoint_never_pickles(tmp_path):
    with pytest.raises(TypeError, match="plain numeric"):
        save_checkpoint(tmp_path / "ck.npz", {"W": np.array([object()])})
    assert not any(tmp_path.iterdir())


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    good = tmp_path / "good.npz"
    save_checkpoint(good, {"W": np.ones((50, 50))})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-500])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    flipped = bytearray(good.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # inside the array data: caught by the zip CRC
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_checkpoint(corrupt)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, W=np.ones(3))
    with pytest.raises(CheckpointError, match="not a fastconv nn checkpoint"):
        load_checkpoint(foreign)
    with zipfile.ZipFile(foreign) as archive:
        assert archive.namelist() == ["W.npy"]


def test_solver_checkpoints_and_resumes(digits, tmp_path):
    path = tmp_path / "run.npz"
    kwargs = dict(update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=50, num_epochs=2,
                  verbose=False, seed=5)
    straight = Solver(small_convnet(), digits, **kwargs)
    straight.train_epoch()
    straight.train_epoch()
    first = Solver(small_convnet(), digits, checkpoint_path=path, checkpoint_name=str(tmp_path / "cs231n"), **kwargs)
    first.train_epoch()
    assert (tmp_path / "cs231n_epoch_1.npz").exists()
    resumed = Solver(small_convnet(seed=9), digits, **kwargs)
    resumed.load_checkpoint(path)
    assert resumed.epoch == 1 and resumed.optim_configs["W1"]["t"] == 8
    assert resumed.loss_history == first.loss_history
    resumed.train_epoch()
    # same data order, same optimizer state: resuming reproduces the uninterrupted run
    np.testing.assert_allclose(resumed.loss_history, straight.loss_history, rtol=1e-5)
    for name, value in straight.model.params.items():
        np.testing.assert_allclose(resumed.model.params[name], value, rtol=1e-4, atol=1e-6)


def test_resume_rejects_mismatches(digits, tmp_path):
    path = tmp_path / "run.npz"
    solver = Solver(small_convnet(), digits, update_rule="adam", batch_size=100, num_epochs=1, verbose=False)
    solver.train_epoch()
    solver.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="update rule"):
        Solver(small_convnet(), digits, update_rule="sgd").load_checkpoint(path)
    np.random.seed(0)
    wider = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=6, filter_size=3, hidden_dim=32)
    with pytest.raises(CheckpointError, match="shape"):
        Solver(wider, digits, update_rule="adam").load_checkpoint(path)
    other = FullyConnectedNet([8], input_dim=64)
    with pytest.raises(CheckpointError, match="optimizer state"):
        Solver(other, digits, update_rule="adam").load_checkpoint(path)
    assert os.path.getsize(path) > 0
