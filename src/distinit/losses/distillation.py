"""The DistInit losses (paper, Section 3.1): the student against its teachers' targets.

The targets themselves (Eq. 1, the entropy filter) are `distinit.targets.teachers`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor,
                              temperature: float = 1.0) -> torch.Tensor:
    """Eq. 2 per example: -sum_k y_k log f_k. (B, K), (B, K) -> (B,).

    Equal to KL(y || f) plus the entropy of y, so it has the same gradient as the KL divergence.
    """
    return F.cross_entropy(student_logits.float() / temperature, targets, reduction="none")


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student logits and frame-averaged teacher logits: (B,)."""
    return (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)


def weighted_mean(per_example: torch.Tensor, weights: torch.Tensor,
                  total: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the kept examples; zero (with a gradient path) when every example is dropped.

    Dividing by the kept count rather than the batch size keeps the step size independent of how
    many examples the entropy filter dropped. `total` replaces this batch's kept count with
    another normaliser: the kept count of the whole global batch, per micro-batch, so that the
    micro-batches' losses add up to the global batch's mean.
    """
    total = weights.sum() if total is None else total
    return (per_example * weights).sum() / total.clamp_min(1e-6)
