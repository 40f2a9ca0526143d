"""`fastconv bench --compare`: like-for-like rows against a baseline JSON, and the regression verdict."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .report import KEY_FIELDS, row_key


class BaselineError(ValueError):
    """The baseline file cannot be used (unreadable, not JSON, or not a fastconv bench document)."""


@dataclass(frozen=True)
class Baseline:
    medians: dict  # (case, op, dtype, backend) -> median seconds
    machine: dict


def load_baseline(path: str) -> Baseline:
    """Read a file written by ``fastconv bench --json``; BaselineError says what is wrong with it."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise BaselineError(f'baseline {path} must be a JSON object with a "results" list '
                            "(a file written by `fastconv bench --json`)")
    medians = {}
    for index, record in enumerate(doc["results"]):
        where = f"baseline {path}: results[{index}]"
        if not isinstance(record, dict):
            raise BaselineError(f"{where} must be an object, got {type(record).__name__}")
        for name in KEY_FIELDS:
            if not isinstance(record.get(name), str):
                raise BaselineError(f"{where} needs a string {name!r}, got {record.get(name)!r}")
        median = record.get("median_s")
        if median is None:  # a row that failed when the baseline was taken: nothing to compare
            continue
        if isinstance(median, bool) or not isinstance(median, (int, float)) or not math.isfinite(median) \
                or median <= 0:
            raise BaselineError(f"{where} needs a positive number 'median_s', got {median!r}")
        key = row_key(record)
        if key in medians:
            raise BaselineError(f"{where} repeats the row {' '.join(key)}")
        medians[key] = float(median)
    machine = doc.get("machine") if isinstance(doc.get("machine"), dict) else {}
    return Baseline(medians, machine)


@dataclass(frozen=True)
class Delta:
    key: tuple
    baseline_s: float
    current_s: float

    @property
    def change(self) -> float:
        """Relative change of the time: +0.25 means 25 % slower than the baseline."""
        return self.current_s / self.baseline_s - 1.0


@dataclass
class Comparison:
    fail_over_pct: float
    deltas: list = field(default_factory=list)
    only_in_baseline: list = field(default_factory=list)
    only_in_current: list = field(default_factory=list)

    @property
    def slower(self) -> list:
        return [d for d in self.deltas if d.change * 100 > self.fail_over_pct]

    @property
    def failed(self) -> bool:
        return bool(self.slower)

    def as_dict(self) -> dict:
        return {
            "fail_over_pct": self.fail_over_pct,
            "failed": self.failed,
            "rows": [dict(zip(KEY_FIELDS, d.key), baseline_s=d.baseline_s, current_s=d.current_s,
                          change_pct=100 * d.change, slower=d in self.slower) for d in self.deltas],
            "only_in_baseline": [dict(zip(KEY_FIELDS, k)) for k in self.only_in_baseline],
            "only_in_current": [dict(zip(KEY_FIELDS, k)) for k in self.only_in_current],
        }


def compare(current: dict, baseline: dict, fail_over_pct: float) -> Comparison:
    """Compare ``{row key: seconds}`` maps; a row fails when it is more than ``fail_over_pct`` % slower."""
    result = Comparison(fail_over_pct)
    for key, seconds in current.items():
        if key in baseline:
            result.deltas.append(Delta(key, baseline[key], seconds))
        else:
            result.only_in_current.append(key)
    result.only_in_baseline = [key for key in baseline if key not in current]
    return result


def format_comparison(result: Comparison, baseline_path: str) -> str:
    lines = [f"Compared with {baseline_path} (a row fails when more than {result.fail_over_pct:g} % slower):",
             f"  {'case':<17} {'op':<16} {'dtype':<8} {'backend':<8} {'base ms':>10} {'now ms':>10} {'change':>8}"]
    for d in result.deltas:
        verdict = "SLOWER" if d in result.slower else ""
        case, op, dtype, backend = d.key
        lines.append(f"  {case:<17} {op:<16} {dtype:<8} {backend:<8} {d.baseline_s * 1e3:>10.3f} "
                     f"{d.current_s * 1e3:>10.3f} {100 * d.change:>+7.1f}%  {verdict}".rstrip())
    for keys, where in ((result.only_in_baseline, "only in the baseline (not run now)"),
                        (result.only_in_current, "new (not in the baseline)")):
        if keys:
            lines.append(f"  {len(keys)} row(s) {where}: " + "; ".join(" ".join(k) for k in keys))
    if result.failed:
        lines.append(f"REGRESSION: {len(result.slower)} of {len(result.deltas)} row(s) slower than "
                     f"{result.fail_over_pct:g} % over the baseline")
    else:
        lines.append(f"OK: no row slower than {result.fail_over_pct:g} % over the baseline "
                     f"({len(result.deltas)} compared)")
    return "\n".join(lines)


def machine_differences(baseline: dict, current: dict) -> list[str]:
    """Facts that make timings hard to compare (another CPU, thread count or library version)."""
    keys = ("cpu", "cores", "threads", "numpy", "fastconv", "torch")
    return [f"{k}: baseline {baseline[k]!r}, now {current.get(k)!r}"
            for k in keys if k in baseline and baseline[k] != current.get(k)]
