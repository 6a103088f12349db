"""The DistInit objective (paper, Section 3.1): teacher targets and distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_targets(frame_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. 1: average the teacher's logits over the frames, then softmax at temperature tau.

    frame_logits: (B, T', K) logits of T' frames of each clip. Returns (B, K) probabilities.
    """
    return F.softmax(frame_logits.float().mean(dim=1) / temperature, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of (B, K) probabilities."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def soft_target_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor,
                              temperature: float = 1.0) -> torch.Tensor:
    """Eq. 2 per example: -sum_k y_k log f_k. (B, K), (B, K) -> (B,).

    Equal to KL(y || f) plus the entropy of y, so it has the same gradient as the KL divergence.
    """
    log_f = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(targets * log_f).sum(dim=-1)


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student logits and frame-averaged teacher logits: (B,)."""
    return (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)


def confidence_weights(targets: torch.Tensor, max_entropy: float) -> torch.Tensor:
    """Zero weight for examples whose target entropy is above `max_entropy` (<= 0: keep all)."""
    if max_entropy <= 0:
        return torch.ones(targets.shape[0], device=targets.device)
    return (entropy(targets) <= max_entropy).float()


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
