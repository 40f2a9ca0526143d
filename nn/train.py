"""`fastconv train` (nn plugs it into fastconv's command line): a network or a classic model on the digits data."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import time

import numpy as np

SOLVER_MODELS = ("cnn", "convnet", "fc")
NUMPY_MODELS = ("linear-svm", "softmax", "nielsen")  # plain NumPy models with their own training loops
MODELS = SOLVER_MODELS + NUMPY_MODELS
SOLVER_DEFAULTS = {"epochs": 8, "batch_size": 32, "lr": 3e-3, "lr_decay": 0.8}
HELP = "Train a network (or a linear classifier, or Nielsen's sigmoid network) on the digits data set (nn)."


def configure(parser) -> None:
    parser.add_argument("--model", choices=MODELS, default="cnn",
                        help="cnn: [conv3x3-batchnorm-relu] x 2 (8, 16 channels)-maxpool-fc(64)-relu-fc(10), "
                             "module API; convnet: nn.models.ThreeLayerConvNet (16 filters 3x3, hidden 64); "
                             "fc: nn.models.FullyConnectedNet (128, 64) with batchnorm; linear-svm, softmax: "
                             "nn.classifiers on the flattened pixels; nielsen: nn.nielsen.Network (64, 30, 10) "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number of epochs (default: 8; the NumPy models: their own, see nn.classifiers / "
                             "nn.nielsen DIGITS_DEFAULTS)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: 32, or the model's)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate: Adam's (default 3e-3), or the NumPy model's SGD step (its default)")
    parser.add_argument("--lr-decay", type=float, default=None,
                        help="learning-rate factor applied after each epoch (default: 0.8; cnn, convnet, fc)")
    parser.add_argument("--backend", default=None,
                        help="fastconv backend for conv and pool (default: the process default, 'auto'; "
                             "cnn, convnet, fc)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the kernels and BLAS (default: every usable core; calls too small "
                             "to be worth a thread stay on one)")
    parser.add_argument("--train-samples", type=int, default=None, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the init and the minibatch order")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="save a checkpoint (.npz) to PATH after every epoch (cnn, convnet, fc)")
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


def save_plot(path, loss_history, train_acc_history, val_acc_history, loss_xlabel="iteration") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(loss_history, linewidth=0.8)
    ax_loss.set(xlabel=loss_xlabel, ylabel="training loss", title="Loss")
    epochs = np.arange(len(train_acc_history))
    if len(epochs):
        ax_acc.plot(epochs, train_acc_history, marker="o", label="train")
        ax_acc.plot(epochs, val_acc_history, marker="o", label="val")
        ax_acc.legend()
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _error(message: str) -> int:
    print(f"fastconv train: error: {message}", file=sys.stderr)
    return 2


def _usage_error(args):
    """What is wrong with the arguments, or None."""
    if any(value is not None and value < 1 for value in (args.epochs, args.batch_size, args.threads,
                                                          args.train_samples)) \
            or any(value is not None and not value > 0 for value in (args.lr, args.lr_decay)):
        return "--epochs, --batch-size, --threads and --train-samples must be >= 1, --lr and --lr-decay > 0"
    if args.model in NUMPY_MODELS:
        solver_only = [flag for flag, value in (("--lr-decay", args.lr_decay), ("--backend", args.backend),
                                                ("--checkpoint", args.checkpoint), ("--resume", args.resume or None))
                       if value is not None]
        if solver_only:
            return f"{', '.join(solver_only)}: only for the models {', '.join(SOLVER_MODELS)}, not {args.model}"
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib, which is not installed: pip install 'fastconv[plot]'"
    if args.resume and args.checkpoint is None:
        return "--resume needs --checkpoint PATH"
    return None


def run(args) -> int:
    import fastconv
    from nn.data import load_digits

    problem = _usage_error(args)
    if problem:
        return _error(problem)
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
        trainer = _train_linear if args.model in ("linear-svm", "softmax") else \
            _train_nielsen if args.model == "nielsen" else _train_with_solver
        return trainer(args, data)


def _describe(args, data, runs_on) -> None:
    print(f"training {args.model} on digits ({len(data['y_train'])} train / {len(data['y_val'])} val / "
          f"{len(data['y_test'])} test), {runs_on}")


def _report(test_acc, num_test, seconds, best_val=None) -> None:
    best = "" if best_val is None else f"best val_acc {best_val:.4f}; "
    print(f"{best}test accuracy {test_acc:.4f} ({round(test_acc * num_test)}/{num_test}); "
          f"training time {seconds:.1f} s")


def _train_with_solver(args, data) -> int:
    import fastconv
    from nn.checkpoint import CheckpointError
    from nn.solver import Solver

    settings = {key: SOLVER_DEFAULTS[key] if getattr(args, key) is None else getattr(args, key)
                for key in SOLVER_DEFAULTS}
    solver = Solver(build_model(args.model, args.seed), data, update_rule="adam",
                    optim_config={"learning_rate": settings["lr"]}, lr_decay=settings["lr_decay"],
                    batch_size=settings["batch_size"], num_epochs=settings["epochs"], verbose=False, seed=args.seed,
                    progress=ProgressBar(settings["epochs"]), checkpoint_path=args.checkpoint)
    if args.resume:
        try:
            solver.load_checkpoint(args.checkpoint)
        except (FileNotFoundError, CheckpointError) as exc:
            return _error(str(exc))
        print(f"resumed from {args.checkpoint} after epoch {solver.epoch}")
    _describe(args, data, f"backend {fastconv.get_backend()}")
    start = time.perf_counter()
    while solver.epoch < solver.num_epochs:
        report = solver.train_epoch()
        print(f"epoch {report['epoch']}/{solver.num_epochs}  loss {report['loss']:.4f}  "
              f"train_acc {report['train_acc']:.4f}  val_acc {report['val_acc']:.4f}  ({report['seconds']:.1f} s)")
    solver.train()  # no epochs left: this only puts the best parameters (by val accuracy) back
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    _report(test_acc, len(data["y_test"]), time.perf_counter() - start, solver.best_val_acc)
    if args.plot is not None:
        save_plot(args.plot, solver.loss_history, solver.train_acc_history, solver.val_acc_history)
        print(f"curves saved to {args.plot}")
    return 0


def _train_linear(args, data) -> int:
    from nn import classifiers

    settings = dict(classifiers.DIGITS_DEFAULTS[args.model])
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    if args.lr is not None:
        settings["learning_rate"] = args.lr
    if args.epochs is not None:  # an epoch: as many minibatches as it takes to cover the training set once
        settings["num_iters"] = args.epochs * -(-len(data["y_train"]) // settings["batch_size"])
    features = classifiers.linear_features(data)
    model = (classifiers.LinearSVM if args.model == "linear-svm" else classifiers.Softmax)(rng=args.seed)
    _describe(args, data, f"SGD lr {settings['learning_rate']:g}, reg {settings['reg']:g}, "
                          f"{settings['num_iters']} iterations of {settings['batch_size']}")
    start = time.perf_counter()
    loss_history = model.train(features["X_train"], features["y_train"], **settings)
    seconds = time.perf_counter() - start
    accuracy = {split: float(np.mean(model.predict(features[f"X_{split}"]) == features[f"y_{split}"]))
                for split in ("train", "val", "test")}
    print(f"final loss {loss_history[-1]:.4f}  train_acc {accuracy['train']:.4f}  val_acc {accuracy['val']:.4f}")
    _report(accuracy["test"], len(data["y_test"]), seconds)
    if args.plot is not None:
        save_plot(args.plot, loss_history, [], [])
        print(f"curves saved to {args.plot}")
    return 0


def _train_nielsen(args, data) -> int:
    from nn import nielsen

    settings = dict(nielsen.DIGITS_DEFAULTS)
    for key, value in (("epochs", args.epochs), ("mini_batch_size", args.batch_size), ("eta", args.lr)):
        if value is not None:
            settings[key] = value
    training_data, validation_data, test_data = nielsen.digits_data(data)
    net = nielsen.Network(settings.pop("sizes"), rng=args.seed)
    _describe(args, data, f"sizes {net.sizes}, eta {settings['eta']:g}, lmbda {settings['lmbda']:g}, "
                          f"mini-batch {settings['mini_batch_size']}")
    start = time.perf_counter()
    _, val_correct, train_cost, train_correct = net.SGD(
        training_data, evaluation_data=validation_data, monitor_evaluation_accuracy=True,
        monitor_training_cost=True, monitor_training_accuracy=True, verbose=False, **settings)
    seconds = time.perf_counter() - start
    train_acc = [correct / len(training_data) for correct in train_correct]
    val_acc = [correct / len(validation_data) for correct in val_correct]
    for epoch, (cost, train, val) in enumerate(zip(train_cost, train_acc, val_acc), 1):
        print(f"epoch {epoch}/{settings['epochs']}  loss {cost:.4f}  train_acc {train:.4f}  val_acc {val:.4f}")
    _report(net.evaluate(test_data) / len(test_data), len(test_data), seconds)
    if args.plot is not None:
        save_plot(args.plot, train_cost, train_acc, val_acc, loss_xlabel="epoch")
        print(f"curves saved to {args.plot}")
    return 0
