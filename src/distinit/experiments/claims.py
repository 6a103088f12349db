"""The claims experiments test, typed, and the one rule that judges them.

A claim compares two rows by their per-seed video top-1: `better` minus `worse`, seed by seed.
Its `kind` says what it asserts:
- `better`: the first row scores higher. **holds** when the mean margin is positive, larger
  than its spread (sample std over seeds) and ahead in most seeds; **does not hold** when the
  same is true the other way round; **within the noise** otherwise. With one seed there is no
  spread: the sign decides.
- `not_worse`: the first row does not score lower ("holds or helps"). **does not hold** when
  the margin is negative, larger than its spread and behind in most seeds; **holds** otherwise.
- `equal`: the two score about the same. **holds** when |margin| is at most its spread or
  `margin` points (the paper's own such gap, Table 4, is 0.4); **does not hold** otherwise.
The rule is the same for the demo, Table 1 and every `distinit reproduce` table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("better", "not_worse", "equal")


@dataclass(frozen=True)
class Claim:
    text: str
    better: str  # row label (or its start)
    worse: str
    kind: str = "better"
    margin: float = 1.0  # `equal`: points within which two rows count as the same

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim kind {self.kind!r}: one of {KINDS}")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def clear(mean: float, std: float, ahead: int, n: int) -> bool:
    """Is a positive mean margin resolved: above its spread, ahead in most seeds?"""
    return mean > 0 and (n == 1 or (mean > std and ahead > n / 2))


def judge(claim: Claim, diffs: list[float]) -> str:
    """The verdict on `claim` from its per-seed margins (better minus worse)."""
    mean, std = mean_std(diffs)
    ahead, behind = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    if claim.kind == "equal":
        return "holds" if abs(mean) <= max(std, claim.margin) else "does not hold"
    reversed_ = clear(-mean, std, behind, len(diffs))
    if claim.kind == "not_worse":
        return "does not hold" if reversed_ else "holds"
    if clear(mean, std, ahead, len(diffs)):
        return "holds"
    return "does not hold" if reversed_ else "within the noise"


def verdict_line(claim: Claim, diffs: list[float]) -> str:
    """`claim: **verdict** (margin +m +- s over n seeds, ahead in k)`."""
    mean, std = mean_std(diffs)
    ahead = sum(d > 0 for d in diffs)
    seeds = f"over {len(diffs)} seeds, ahead in {ahead}" if len(diffs) > 1 else "one seed"
    return f"{claim.text}: **{judge(claim, diffs)}** (margin {mean:+.1f} +- {std:.1f} {seeds})"
