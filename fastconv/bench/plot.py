"""`fastconv bench --plot`: a bar chart of speedups per workload and backend (needs matplotlib)."""
from __future__ import annotations

from .report import by_workload

# The peer every bar is measured against: PyTorch when it ran, else the naive reference.
BASELINE_ORDER = ("torch", "naive", "im2col")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'fastconv[plot]' "
                              "(or pip install matplotlib)") from None


def write_plot(records: list[dict], path: str) -> str:
    """Draw speedups vs the first of BASELINE_ORDER that ran; returns that baseline's name."""
    require_matplotlib()
    from matplotlib.figure import Figure

    timed = [r for r in records if r["median_s"] and r["backend"] != "gemm"]
    present = {r["backend"] for r in timed}
    peer = next((name for name in BASELINE_ORDER if name in present), None)
    if peer is None:
        raise ValueError("nothing to plot: no torch, naive or im2col row was timed")
    labels, speedups = [], {}
    for group in by_workload(timed):
        medians = {r["backend"]: r["median_s"] for r in group}
        if peer not in medians:
            continue
        labels.append(f"{group[0]['case']}\n{group[0]['op']} {group[0]['dtype']}")
        for backend, seconds in medians.items():
            if backend == peer:  # 1.0 by definition: the vertical line at 1 stands for it
                continue
            speedups.setdefault(backend, {})[len(labels) - 1] = medians[peer] / seconds
    if not speedups:
        raise ValueError(f"nothing to plot: no backend ran beside {peer}")
    backends = list(speedups)
    height = 0.8 / len(backends)
    figure = Figure(figsize=(9, 1.2 + 0.22 * len(labels) * len(backends)), layout="constrained")
    axes = figure.add_subplot()
    for i, backend in enumerate(backends):
        rows = sorted(speedups[backend])
        axes.barh([row + i * height for row in rows], [speedups[backend][row] for row in rows],
                  height=height, label=backend)
    axes.set_yticks([row + 0.4 - height / 2 for row in range(len(labels))], labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"speedup vs {peer} (median time of {peer} / median time of the backend; log scale)")
    axes.set_title("fastconv bench")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    return peer
