"""The CS231n-style Solver: minibatch training of a ``.params`` / ``.loss`` model, with histories and checkpoints."""
from __future__ import annotations

import time

import numpy as np

from . import optim
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["Solver"]


class Solver:
    """Train ``model`` on ``data`` (X_train, y_train, X_val, y_val) with one of the :mod:`nn.optim` rules.

    The model needs ``.params`` (name -> array) and ``.loss(X, y=None)`` returning scores, or
    ``(loss, grads)`` with grads keyed like params. Each epoch visits a fresh random permutation
    of the training set in ``N // batch_size`` minibatches; then the learning rate is multiplied
    by ``lr_decay``, train/val accuracies are recorded (the first entries, before any training,
    are epoch 0), the best parameters by validation accuracy are kept, and a checkpoint is
    written if asked: ``checkpoint_name`` gives ``{checkpoint_name}_epoch_{epoch}.npz`` as in
    CS231n, ``checkpoint_path`` one file overwritten every epoch. ``train()`` ends by putting
    the best parameters into the model. :meth:`load_checkpoint` resumes a run.

    Beyond CS231n's arguments: ``seed`` (minibatch order; None draws it from ``np.random``) and
    ``progress``, a callable ``progress(epoch, iteration, iterations_per_epoch, loss)`` run after
    every step.
    """

    def __init__(self, model, data, update_rule="sgd", optim_config=None, lr_decay=1.0, batch_size=100,
                 num_epochs=10, num_train_samples=1000, num_val_samples=None, checkpoint_name=None,
                 print_every=10, verbose=True, *, seed=None, progress=None, checkpoint_path=None):
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise ValueError(f"data lacks {missing}")
        if isinstance(update_rule, str):
            if update_rule not in optim.UPDATE_RULES:
                raise ValueError(f"update_rule must be one of {sorted(optim.UPDATE_RULES)}, got {update_rule!r}")
            self.update_rule_name, update_rule = update_rule, optim.UPDATE_RULES[update_rule]
        else:
            self.update_rule_name = getattr(update_rule, "__name__", "custom")
        if not callable(update_rule):
            raise TypeError(f"update_rule must be a name or a callable, got {type(update_rule).__name__}")
        if batch_size < 1 or num_epochs < 0 or not lr_decay > 0:
            raise ValueError(f"need batch_size >= 1, num_epochs >= 0 and lr_decay > 0, got {batch_size}, "
                             f"{num_epochs}, {lr_decay}")
        self.model, self.update_rule = model, update_rule
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        self.lr_decay, self.batch_size, self.num_epochs = lr_decay, batch_size, num_epochs
        self.num_train_samples, self.num_val_samples = num_train_samples, num_val_samples
        self.checkpoint_name, self.checkpoint_path = checkpoint_name, checkpoint_path
        self.print_every, self.verbose, self.progress = print_every, verbose, progress
        self.seed = int(np.random.randint(2 ** 31)) if seed is None else int(seed)
        self.optim_configs = {name: dict(optim_config or {}) for name in model.params}
        self.epoch = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.loss_history, self.train_acc_history, self.val_acc_history = [], [], []

    @property
    def iterations_per_epoch(self) -> int:
        return max(self.X_train.shape[0] // self.batch_size, 1)

    def _step(self, X_batch, y_batch) -> float:
        loss, grads = self.model.loss(X_batch, y_batch)
        self.loss_history.append(float(loss))
        for name, w in self.model.params.items():
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], self.optim_configs[name])
            self.model.params[name] = next_w
        return float(loss)

    def check_accuracy(self, X, y, num_samples=None, batch_size=100) -> float:
        """Fraction of ``X`` classified as ``y`` (on a random subset of ``num_samples`` if given)."""
        n = X.shape[0]
        if num_samples is not None and n > num_samples:
            subset = np.random.default_rng([self.seed, self.epoch, 1]).choice(n, num_samples, replace=False)
            X, y, n = X[subset], y[subset], num_samples
        predictions = [np.argmax(self.model.loss(X[i:i + batch_size]), axis=1) for i in range(0, n, batch_size)]
        return float(np.mean(np.concatenate(predictions) == y)) if n else 0.0

    def _record_accuracies(self) -> None:
        train_acc = self.check_accuracy(self.X_train, self.y_train, num_samples=self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = max(val_acc, self.best_val_acc)
            self.best_params = {name: value.copy() for name, value in self.model.params.items()}

    def train_epoch(self) -> dict:
        """One epoch and its bookkeeping; returns ``epoch``, mean ``loss``, ``train_acc``, ``val_acc``, ``seconds``."""
        if not self.val_acc_history:
            self._record_accuracies()
        start = time.perf_counter()
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.X_train.shape[0])
        per_epoch, losses = self.iterations_per_epoch, []
        for it in range(per_epoch):
            batch = order[it * self.batch_size:(it + 1) * self.batch_size]
            losses.append(self._step(self.X_train[batch], self.y_train[batch]))
            t = self.epoch * per_epoch + it
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {self.num_epochs * per_epoch}) loss: {losses[-1]:f}")
            if self.progress is not None:
                self.progress(self.epoch + 1, it + 1, per_epoch, losses[-1])
        self.epoch += 1
        for config in self.optim_configs.values():
            if "learning_rate" in config:
                config["learning_rate"] *= self.lr_decay
        self._record_accuracies()
        if self.checkpoint_name is not None:
            self.save_checkpoint(f"{self.checkpoint_name}_epoch_{self.epoch}.npz")
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        if self.verbose:
            print(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {self.train_acc_history[-1]:f}; "
                  f"val_acc: {self.val_acc_history[-1]:f}")
        return {"epoch": self.epoch, "loss": float(np.mean(losses)), "train_acc": self.train_acc_history[-1],
                "val_acc": self.val_acc_history[-1], "seconds": time.perf_counter() - start}

    def train(self) -> None:
        """Run the remaining epochs, then put the best parameters (by validation accuracy) into the model."""
        while self.epoch < self.num_epochs:
            self.train_epoch()
        for name, value in self.best_params.items():
            self.model.params[name] = value.copy()

    def _model_state(self) -> dict:
        state_dict = getattr(self.model, "state_dict", None)
        return state_dict() if state_dict is not None else {k: v.copy() for k, v in self.model.params.items()}

    def save_checkpoint(self, path) -> None:
        """Model state, optimizer state, epoch, histories and best parameters to ``path`` (atomic ``.npz``)."""
        history = {"loss": self.loss_history, "train_acc": self.train_acc_history, "val_acc": self.val_acc_history}
        extra = {"update_rule": self.update_rule_name, "seed": self.seed, "best_val_acc": self.best_val_acc,
                 "best_params": self.best_params}
        save_checkpoint(path, self._model_state(), self.optim_configs, self.epoch, history, extra)

    def load_checkpoint(self, path) -> None:
        """Resume from a checkpoint of the same model and update rule (else :class:`CheckpointError`)."""
        checkpoint = load_checkpoint(path)
        extra = checkpoint.extra
        if extra.get("update_rule") != self.update_rule_name:
            raise CheckpointError(f"checkpoint {path!r} was trained with update rule {extra.get('update_rule')!r}, "
                                  f"this solver uses {self.update_rule_name!r}")
        params = self.model.params
        if set(checkpoint.optimizer_state) != set(params):
            raise CheckpointError(f"checkpoint {path!r} has optimizer state for {sorted(checkpoint.optimizer_state)}, "
                                  f"the model has parameters {sorted(params)}")
        for name, config in checkpoint.optimizer_state.items():
            for key, value in config.items():
                if isinstance(value, np.ndarray) and value.shape != params[name].shape:
                    raise CheckpointError(f"checkpoint {path!r}: optimizer state {name}/{key} has shape "
                                          f"{value.shape}, the parameter has {params[name].shape}")
        load_state_dict = getattr(self.model, "load_state_dict", None)
        try:
            if load_state_dict is not None:
                load_state_dict(checkpoint.model_state)
            else:
                _load_params(params, checkpoint.model_state)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path!r} does not match this model: {exc}") from exc
        self.optim_configs = checkpoint.optimizer_state
        self.epoch = checkpoint.epoch
        self.loss_history = list(checkpoint.history.get("loss", []))
        self.train_acc_history = list(checkpoint.history.get("train_acc", []))
        self.val_acc_history = list(checkpoint.history.get("val_acc", []))
        self.seed = int(extra.get("seed", self.seed))
        self.best_val_acc = float(extra.get("best_val_acc", 0.0))
        self.best_params = dict(extra.get("best_params", {}))


def _load_params(params: dict, state: dict) -> None:
    if set(state) != set(params):
        raise ValueError(f"parameters {sorted(state)} != {sorted(params)}")
    for name, value in state.items():
        if value.shape != params[name].shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {params[name].shape}")
        params[name] = value.astype(params[name].dtype, copy=True)
