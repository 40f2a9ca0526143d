"""How `fastconv bench` shows results: a table per workload, a summary vs PyTorch, the JSON document."""
from __future__ import annotations

import json
import math
from itertools import groupby

from . import workloads as wl

SCHEMA = "fastconv-bench/1"
KEY_FIELDS = ("case", "op", "dtype", "backend")


def row_key(record: dict) -> tuple:
    return tuple(record[field] for field in KEY_FIELDS)


def _speedup(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}x" if value < 1 else f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"


def _status(record: dict) -> str:
    if record["backend"] == wl.GEMM:
        return "numpy matmul of the same GEMM size (not a conv)"
    if record["error"]:
        return "ERROR " + record["error"]
    if record["ok"] is False:
        return "MISMATCH vs " + record["reference"]
    if record["ok"] is None:
        return "unchecked (no reference here)"
    return ""


def format_table(records: list[dict]) -> str:
    """One workload's rows: backend, median ms, GFLOP/s, speedups, max abs error vs the reference."""
    first = records[0]
    title = f"{first['case']} · {first['op']} · {first['dtype']}   {first['shape']}"
    if first["reference"]:
        title += f"   (reference: {first['reference']})"
    width = max(8, *(len(r["backend"]) for r in records))  # a registered backend's name may be longer
    header = (f"  {'backend':<{width}} {'median ms':>10} {'GFLOP/s':>8} {'vs naive':>9} {'vs torch':>9} "
              f"{'max abs err':>12}")
    lines = [title, header]
    for r in records:
        timed = r["median_s"] is not None
        error = "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.1e}"
        lines.append(
            f"  {r['backend']:<{width}} {r['median_s'] * 1e3 if timed else float('nan'):>10.3f} "
            f"{r['gflops'] if timed else float('nan'):>8.2f} {_speedup(r['speedup_vs_naive']):>9} "
            f"{_speedup(r['speedup_vs_torch']):>9} {error:>12}  {_status(r)}".rstrip())
    return "\n".join(lines)


def by_workload(records: list[dict]) -> list[list[dict]]:
    """Records grouped into workloads, in run order."""
    return [list(group) for _, group in groupby(records, key=lambda r: (r["case"], r["op"], r["dtype"]))]


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_summary(records: list[dict]) -> str:
    """Geometric mean of speedup vs PyTorch per backend, op and dtype over the large cases.

    The issues' target metric; the small cases (there for the naive reference) stay out of it.
    """
    cells: dict[tuple, list[float]] = {}
    for r in records:
        if r["speedup_vs_torch"] and r["backend"] not in (wl.TORCH, wl.GEMM, "naive") \
                and r["case"] not in wl.SMALL_CASES:
            cells.setdefault((r["op"], r["dtype"], r["backend"]), []).append(r["speedup_vs_torch"])
    if not cells:
        return ""
    width = max(8, *(len(backend) for _, _, backend in cells))
    lines = ["Geometric mean of speedup vs torch (large cases where both ran):",
             f"  {'op':<16} {'dtype':<8} {'backend':<{width}} {'speedup':>8} {'cases':>5}"]
    for (op, dtype, backend), values in cells.items():
        lines.append(f"  {op:<16} {dtype:<8} {backend:<{width}} {_speedup(geometric_mean(values)):>8} "
                     f"{len(values):>5}")
    return "\n".join(lines)


def format_gemm_fractions(records: list[dict]) -> str:
    """Conv forward GFLOP/s of each backend as a fraction of numpy's GEMM of the same size, same run."""
    lines = []
    for group in by_workload(records):
        gemm = next((r for r in group if r["backend"] == wl.GEMM and r["gflops"]), None)
        if gemm is None:
            continue
        shares = [f"{r['backend']} {100 * r['gflops'] / gemm['gflops']:.0f}%" for r in group
                  if r["gflops"] and r["backend"] not in (wl.GEMM, "naive")]
        lines.append(f"  {group[0]['case']:<17} {group[0]['dtype']:<8} GEMM {gemm['gflops']:7.1f} GFLOP/s: "
                     + ", ".join(shares))
    return "\n".join(["Conv forward GFLOP/s as a share of the same-size numpy GEMM:"] + lines) if lines else ""


def format_auto_vs_best(records: list[dict]) -> str:
    """`auto`'s median over the best single backend's (of those it chooses from), per large workload."""
    lines = []
    for group in by_workload(records):
        if group[0]["case"] in wl.SMALL_CASES:
            continue
        medians = {r["backend"]: r["median_s"] for r in group if r["median_s"]}
        singles = {name: t for name, t in medians.items() if name not in (wl.AUTO, wl.TORCH, wl.GEMM, "naive")}
        if wl.AUTO not in medians or not singles:
            continue
        best = min(singles, key=singles.get)
        lines.append((medians[wl.AUTO] / singles[best], f"  {group[0]['case']:<17} {group[0]['op']:<16} "
                      f"{group[0]['dtype']:<8} {medians[wl.AUTO] / singles[best]:5.2f}  (best: {best})"))
    if not lines:
        return ""
    worst = max(ratio for ratio, _ in lines)
    return "\n".join([f"auto median / best single backend's median (worst {worst:.2f}):"]
                     + [line for _, line in lines])


def format_report(records: list[dict]) -> str:
    parts = [format_table(group) for group in by_workload(records)]
    summaries = [format_summary(records), format_gemm_fractions(records), format_auto_vs_best(records)]
    return "\n\n".join(parts + [summary for summary in summaries if summary])


def format_markdown(records: list[dict]) -> str:
    """Tables for a README: per op, one row per case and dtype, median ms (speedup vs torch) per backend."""
    sections = []
    for op in dict.fromkeys(r["op"] for r in records):
        rows = [r for r in records if r["op"] == op]
        backends = list(dict.fromkeys(r["backend"] for r in rows))
        lines = [f"**{op}** — median ms (speedup vs torch)", "",
                 "| case | dtype | " + " | ".join(backends) + " |", "|---|---|" + "---:|" * len(backends)]
        for group in by_workload(rows):
            cells = {r["backend"]: r for r in group}
            lines.append(f"| {group[0]['case']} | {group[0]['dtype']} | " + " | ".join(
                _markdown_cell(cells.get(name)) for name in backends) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _markdown_cell(record) -> str:
    if record is None or not record["median_s"]:
        return "-"
    ms = record["median_s"] * 1e3
    cell = f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"
    if record["speedup_vs_torch"] and record["backend"] != wl.TORCH:
        cell += f" ({_speedup(record['speedup_vs_torch'])})"
    return cell


def document(machine: dict, settings: dict, records: list[dict], comparison: dict | None = None) -> dict:
    """The --json document: machine facts (``fastconv info``), run settings, one record per row."""
    doc = {"schema": SCHEMA, "machine": machine, "settings": settings, "results": records}
    if comparison is not None:
        doc["comparison"] = comparison
    return doc


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as fh:
        json.dump(_finite(doc), fh, indent=1, allow_nan=False)
        fh.write("\n")


def _finite(value):
    """JSON has no inf/NaN: they become null (e.g. the error of a result with the wrong shape)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
