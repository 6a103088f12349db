"""Does each pretraining stage do its own job? A stage's metrics, read back from its run's
metrics.jsonl, against what a uniform guess would score.

A metric's value is the mean of the lines that log it within the last `WINDOW` steps of those
lines (with `log_every: 25`, the last 4 lines); measurements made once per epoch or that only
move one way (held-out agreement, `init_left`, `momentum`) take their last value instead.
A metric is *learnt* when it has moved at least `share` of the way from chance towards perfect:
(value - chance) / (best - chance) >= share, with best 1 (accuracies), 100 (agreement, %) or 0
(losses). Informational metrics (no chance level) are shown and not judged.

Each method is one entry of `CHECKS`: its metrics and their chance levels, from the run's config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distinit.config import load_config
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
from distinit.methods import config_class
from distinit.methods.pretext import task_heads

WINDOW = 100  # steps a per-step metric is averaged over, back from the last line logging it
SHARE = 0.1  # learnt: at least this share of the way from chance to perfect


@dataclass(frozen=True)
class Check:
    metric: str  # its key in metrics.jsonl
    chance: float | None = None  # a uniform guess's score; None: shown, not judged
    best: float = 1.0  # a perfect score: 1 for accuracies, 100 for %, 0 for losses
    share: float = SHARE
    window: int = WINDOW  # 0: the last logged value

    def learnt(self, value: float) -> bool | None:
        if self.chance is None or self.chance == self.best or math.isnan(value):
            return None
        return (value - self.chance) / (self.best - self.chance) >= self.share


def _info_nce(name: str, k: int) -> list[Check]:
    """An InfoNCE term against K queued negatives: a uniform guess over the positive and the K
    negatives has loss log(K + 1) and picks the positive with probability 1 / (K + 1)."""
    return [Check(f"loss_{name}", math.log(k + 1), best=0.0), Check(f"acc_{name}", 1 / (k + 1))]


def _head_classes(run: Path) -> list[int]:
    """Classes of each teacher's head (`heads.{i}`) in the run's checkpoint."""
    path = run / "last.pt"
    if not path.is_file():
        return []
    model = load_checkpoint(path, mmap=True)["model"]
    classes: list[int] = []
    while f"heads.{len(classes)}.weight" in model:
        classes.append(model[f"heads.{len(classes)}.weight"].shape[0])
    return classes


def _teacher_losses(cfg, run: Path) -> list[Check]:
    """Each teacher's soft-target cross-entropy: log(classes) for a uniform student."""
    ce = cfg.distill.loss == "ce"
    return [Check(f"loss_t{i}", math.log(c) if ce else None, best=0.0)
            for i, c in enumerate(_head_classes(run))]


def _distinit(cfg, run: Path) -> list[Check]:
    out = []
    for i, c in enumerate(_head_classes(run)):  # held out, in %: measured after each epoch
        out += [Check(f"holdout_agree_t{i}", 100 / c, best=100, window=0),
                Check(f"holdout_agree_clip_t{i}", 100 / c, best=100, window=0),
                Check(f"holdout_ceiling_t{i}", window=0)]
    return out + _teacher_losses(cfg, run)


def _modist(cfg, run: Path) -> list[Check]:
    mc = cfg.modist
    terms = ("rgb", "flow", "rgb_flow", "flow_rgb") if mc.motion else ("rgb",)
    out = [c for t in terms for c in _info_nce(t, mc.queue)]
    return out + (_teacher_losses(cfg, run) if mc.distill_weight > 0 else [])


def _auxskd(cfg, run: Path) -> list[Check]:
    # agree_nn: the student's nearest of K queued keys is the teacher's (chance 1 / K); spread:
    # 0 when every clip maps alike (collapse), near 1 when spread over all directions.
    # loss_vs_uniform: the KL loss over a student with uniform similarities' (1 = chance).
    return [Check("agree_nn", 1 / cfg.auxskd.queue), Check("spread", 0.0, share=0.5),
            Check("loss_vs_uniform", 1.0, best=0.0),
            Check("init_left", window=0), Check("momentum", window=0)]


def _rspnet(cfg, run: Path) -> list[Check]:
    k = cfg.rspnet.queue
    return [Check("acc_rsp", 0.5), Check("acc_avid", 1 / (k + 1)),
            Check("acc_avid_other", 1 / (k + 1))]


def _pretext(task: str) -> Callable:
    def checks(cfg, run: Path) -> list[Check]:
        return [Check(f"acc_{h}", 1 / n) for h, n in task_heads(task, cfg.pretext).items()]
    return checks


# method -> (its run's config, its run folder) -> its checks
CHECKS: dict[str, Callable[..., list[Check]]] = {
    "distinit": _distinit, "modist": _modist, "auxskd": _auxskd, "rspnet": _rspnet,
    "vspp": _pretext("vspp"), "pace": _pretext("pace"), "vcop": _pretext("vcop"),
}


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
    if method not in CHECKS:
        raise UserError(f"no diagnostics for method {method!r}; valid: {', '.join(CHECKS)}")
    run = Path(run)
    log = run / "metrics.jsonl"
    if not log.is_file():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    cfg = load_config(run / "config.yaml", cls=config_class(method))
    rows = []
    for check in CHECKS[method](cfg, run):
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
