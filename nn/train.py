"""`fastconv train` (nn plugs it into fastconv's command line): a small CNN on scikit-learn's digits, by nn.Solver."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import time

import numpy as np

MODELS = ("cnn", "convnet", "fc")
HELP = "Train a CNN on the digits data set (nn)."


def configure(parser) -> None:
    parser.add_argument("--model", choices=MODELS, default="cnn",
                        help="cnn: [conv3x3-batchnorm-relu] x 2 (8, 16 channels)-maxpool-fc(64)-relu-fc(10), "
                             "module API; convnet: nn.models.ThreeLayerConvNet (16 filters 3x3, hidden 64); "
                             "fc: nn.models.FullyConnectedNet (128, 64) with batchnorm (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="number of epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--lr-decay", type=float, default=0.8,
                        help="learning-rate factor applied after each epoch (default: %(default)s)")
    parser.add_argument("--backend", default=None,
                        help="fastconv backend for conv and pool (default: the process default, 'auto')")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the kernels and BLAS (default: every usable core; calls too small "
                             "to be worth a thread stay on one)")
    parser.add_argument("--train-samples", type=int, default=None, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the init and the minibatch order")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="save a checkpoint (.npz) to PATH after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from the --checkpoint file")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="save loss and train/val accuracy curves (needs matplotlib: pip install 'fastconv[plot]')")


def build_model(name: str, seed: int):
    """The model ``--model name`` asks for, initialized from ``seed``."""
    import nn
    from nn.models import FullyConnectedNet, ModuleClassifier, ThreeLayerConvNet, seeded_global_rng

    if name == "cnn":
        rng = np.random.default_rng(seed)
        return ModuleClassifier(nn.Sequential(
            # no conv bias: the batchnorm right after it has its own shift
            nn.Conv2d(1, 8, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 64, rng=rng), nn.ReLU(),
            nn.Linear(64, 10, rng=rng)))
    with seeded_global_rng(seed):
        if name == "convnet":
            return ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=16, filter_size=3, hidden_dim=64,
                                     weight_scale=0.1, dtype=np.float32)
        return FullyConnectedNet([128, 64], input_dim=64, normalization="batchnorm", weight_scale=0.1,
                                 dtype=np.float32, seed=seed)


class ProgressBar:
    """``epoch 3/10 [########------------] 16/39 loss 0.1234`` redrawn in place on a stream (stderr)."""

    def __init__(self, num_epochs: int, stream=None, width: int = 24):
        self.num_epochs, self.stream, self.width = num_epochs, stream or sys.stderr, width

    def __call__(self, epoch, iteration, total, loss) -> None:
        filled = self.width * iteration // total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\repoch {epoch}/{self.num_epochs} [{bar}] {iteration}/{total} loss {loss:.4f}")
        if iteration == total:
            self.stream.write("\n")
        self.stream.flush()


def save_plot(path, solver) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(solver.loss_history, linewidth=0.8)
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="Loss")
    epochs = np.arange(len(solver.train_acc_history))
    ax_acc.plot(epochs, solver.train_acc_history, marker="o", label="train")
    ax_acc.plot(epochs, solver.val_acc_history, marker="o", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _error(message: str) -> int:
    print(f"fastconv train: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    import fastconv
    from nn.checkpoint import CheckpointError
    from nn.data import load_digits
    from nn.solver import Solver

    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0 or not args.lr_decay > 0 \
            or (args.threads is not None and args.threads < 1) \
            or (args.train_samples is not None and args.train_samples < 1):
        return _error("--epochs, --batch-size, --threads and --train-samples must be >= 1, --lr and --lr-decay > 0")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        return _error("--plot needs matplotlib, which is not installed: pip install 'fastconv[plot]'")
    if args.resume and args.checkpoint is None:
        return _error("--resume needs --checkpoint PATH")
    with contextlib.ExitStack() as scope:
        scope.callback(fastconv.set_num_threads, fastconv.get_num_threads())
        fastconv.set_num_threads(args.threads)
        if args.backend is not None:
            try:
                scope.enter_context(fastconv.use_backend(args.backend))
            except (ValueError, TypeError, ImportError) as exc:
                return _error(str(exc))
        data = load_digits(seed=args.seed)
        if args.train_samples is not None:
            for key in ("X_train", "y_train"):
                data[key] = data[key][:args.train_samples]
        solver = Solver(build_model(args.model, args.seed), data, update_rule="adam",
                        optim_config={"learning_rate": args.lr}, lr_decay=args.lr_decay, batch_size=args.batch_size,
                        num_epochs=args.epochs, verbose=False, seed=args.seed, progress=ProgressBar(args.epochs),
                        checkpoint_path=args.checkpoint)
        if args.resume:
            try:
                solver.load_checkpoint(args.checkpoint)
            except (FileNotFoundError, CheckpointError) as exc:
                return _error(str(exc))
            print(f"resumed from {args.checkpoint} after epoch {solver.epoch}")
        print(f"training {args.model} on digits ({len(data['y_train'])} train / {len(data['y_val'])} val / "
              f"{len(data['y_test'])} test), backend {fastconv.get_backend()}")
        start = time.perf_counter()
        while solver.epoch < solver.num_epochs:
            report = solver.train_epoch()
            print(f"epoch {report['epoch']}/{solver.num_epochs}  loss {report['loss']:.4f}  "
                  f"train_acc {report['train_acc']:.4f}  val_acc {report['val_acc']:.4f}  ({report['seconds']:.1f} s)")
        solver.train()  # no epochs left: this only puts the best parameters (by val accuracy) back
        test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
        print(f"best val_acc {solver.best_val_acc:.4f}; test accuracy {test_acc:.4f} "
              f"({round(test_acc * len(data['y_test']))}/{len(data['y_test'])}); "
              f"training time {time.perf_counter() - start:.1f} s")
    if args.plot is not None:
        save_plot(args.plot, solver)
        print(f"curves saved to {args.plot}")
    return 0
