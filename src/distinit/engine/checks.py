"""What tells that a pretraining stage learnt its own task: a metric it logs in metrics.jsonl and
the score a uniform guess would get. Each method module declares its own in
`checks(cfg, run) -> list[Check]`; `experiments/diagnostics.py` reads them back.

A metric is *learnt* when it has moved at least `share` of the way from chance towards perfect:
(value - chance) / (best - chance) >= share, with best 1 (accuracies), 100 (agreement, %) or 0
(losses). Informational metrics (no chance level) are shown and not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from distinit.engine.checkpoint import load_checkpoint

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


def info_nce_checks(name: str, k: int) -> list[Check]:
    """An InfoNCE term against K queued negatives: a uniform guess over the positive and the K
    negatives has loss log(K + 1) and picks the positive with probability 1 / (K + 1)."""
    return [Check(f"loss_{name}", math.log(k + 1), best=0.0), Check(f"acc_{name}", 1 / (k + 1))]


def head_classes(run: Path) -> list[int]:
    """Classes of each teacher's head (`heads.{i}`) in the run's checkpoint."""
    path = run / "last.pt"
    if not path.is_file():
        return []
    model = load_checkpoint(path, mmap=True)["model"]
    classes: list[int] = []
    while f"heads.{len(classes)}.weight" in model:
        classes.append(model[f"heads.{len(classes)}.weight"].shape[0])
    return classes


def teacher_losses(cfg, run: Path) -> list[Check]:
    """Each teacher's soft-target cross-entropy: log(classes) for a uniform student."""
    ce = cfg.distill.loss == "ce"
    return [Check(f"loss_t{i}", math.log(c) if ce else None, best=0.0)
            for i, c in enumerate(head_classes(run))]
