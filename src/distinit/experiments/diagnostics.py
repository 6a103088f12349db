"""Does each pretraining stage do its own job? A stage's metrics, read back from its run's
metrics.jsonl, against what a uniform guess would score (each method module's
`checks(cfg, run)`, with `engine/checks.py`'s `Check`).

A metric's value is the mean of the lines that log it within the last `WINDOW` steps of those
lines (with `log_every: 25`, the last 4 lines); measurements made once per epoch or that only
move one way (held-out agreement, `init_left`, `momentum`) take their last value instead.
A metric is *learnt* when it has moved at least `share` of the way from chance towards perfect
(`Check.learnt`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from distinit.config import load_config
from distinit.engine.checks import SHARE, WINDOW
from distinit.errors import UserError
from distinit.methods import METHODS, config_class, get_method


def has_checks(method: str) -> bool:
    """Does `method` (a stage kind) declare what shows that it learnt its task?"""
    return method in METHODS and hasattr(get_method(method), "checks")


def stage_value(lines: list[dict], metric: str, window: int = WINDOW) -> float | None:
    """The mean of `metric` over the lines logging it within the last `window` steps (0: its
    last value); None when no line logs it."""
    logged = [(line["step"], line[metric]) for line in lines if metric in line]
    if not logged:
        return None
    last = logged[-1][0]
    values = [v for s, v in logged if s > last - window] if window else [logged[-1][1]]
    return sum(values) / len(values)


def diagnose(run: str | Path, method: str) -> list[dict]:
    """The stage run in folder `run` with `method`: one row {metric, value, chance, learnt} per
    metric its log holds."""
    if not has_checks(method):
        valid = [m for m in METHODS if has_checks(m)]
        raise UserError(f"no diagnostics for method {method!r}; valid: {', '.join(valid)}")
    run = Path(run)
    log = run / "metrics.jsonl"
    if not log.is_file():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    cfg = load_config(run / "config.yaml", cls=config_class(method))
    rows = []
    for check in get_method(method).checks(cfg, run):
        value = stage_value(lines, check.metric, check.window)
        if value is not None:
            rows.append({"metric": check.metric, "value": value, "chance": check.chance,
                         "learnt": check.learnt(value)})
    return rows


def describe(rows: list[dict]) -> str:
    """One line for a log: `acc_speed 0.62 (chance 0.25, learnt), momentum 0.999`."""
    return ", ".join(f"{r['metric']} {r['value']:.3g}" + (
        "" if r["chance"] is None else
        f" (chance {r['chance']:.3g}, {'learnt' if r['learnt'] else 'NOT learnt'})")
        for r in rows)


def over_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """A variant's stages over seeds, from each seed's [{stage, checks: diagnose(...)}]:
    [{stage, metrics: [{metric, mean, per_seed, chance, learnt: seeds that learnt it}]}]."""
    out = []
    for i, first in enumerate(per_seed[0] if per_seed else []):
        seeds = [stages[i]["checks"] if i < len(stages) else [] for stages in per_seed]
        metrics = []
        for row in first["checks"]:
            found = [next((r for r in checks if r["metric"] == row["metric"]), None)
                     for checks in seeds]
            values = [math.nan if r is None else r["value"] for r in found]
            kept = [v for v in values if not math.isnan(v)]
            metrics.append({
                "metric": row["metric"], "chance": row["chance"], "per_seed": values,
                "mean": sum(kept) / len(kept) if kept else math.nan,
                "learnt": None if row["chance"] is None else sum(
                    bool(r and r["learnt"]) for r in found)})
        out.append({"stage": first["stage"], "metrics": metrics})
    return out


def _num(v: float | None) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.3g}"


def markdown(rows: list[dict]) -> list[str]:
    """The "Does each stage do its job?" table of a summary's rows (each with `stages`)."""
    if not any(r.get("stages") for r in rows):
        return []
    lines = ["### Does each stage do its job?", "",
             f"Each pretraining stage's own task, from its metrics.jsonl: a metric's mean over "
             f"the lines of its last {WINDOW} steps (held-out agreement, `init_left`, `momentum`: "
             "the last value), against chance: a uniform guess (1 / classes for a head's "
             "accuracy, 1 / (K + 1) for picking the positive key among K queued negatives and "
             "log(K + 1) for its InfoNCE loss, 1 / K for `agree_nn`, log(classes) for a "
             "soft-target loss; `spread`: 0, a collapse). Learnt: at least "
             f"{SHARE:.0%} of the way from chance to perfect (1, 100% or a loss of 0; `spread`: "
             "half the way to 1).", "",
             "| variant | stage | metric | mean | per seed | chance | learnt in |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for stage in r.get("stages", []):
            for j, m in enumerate(stage["metrics"]):
                learnt = ("" if m["learnt"] is None
                          else f"{m['learnt']} of {len(m['per_seed'])}")
                head = f"| {r['variant']} | {stage['stage']} |" if j == 0 else "| | |"
                lines.append(f"{head} {m['metric']} | {_num(m['mean'])} | "
                             f"{', '.join(_num(v) for v in m['per_seed'])} | "
                             f"{_num(m['chance'])} | {learnt} |")
    return lines
