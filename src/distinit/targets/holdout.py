"""How well a distilled student agrees with its teachers on clips it never trains on."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distinit.engine import dist
from distinit.engine.runtime import Runtime
from distinit.targets.teachers import TeacherTargets, entropy


def agreement_counts(student: torch.Tensor, target: torch.Tensor,
                     clip_target: torch.Tensor) -> torch.Tensor:
    """(3,) counts over a batch of (B, K) scores, by top class: student = target, student =
    clip-level target, target = clip-level target (the most the first can reach when the
    student learned the clip-level view)."""
    s, t, c = student.argmax(-1), target.argmax(-1), clip_target.argmax(-1)
    return torch.stack([(s == t).sum(), (s == c).sum(), (t == c).sum()])


@torch.no_grad()
def holdout_agreement(student: nn.Module, targets: TeacherTargets, loader: Iterable[dict],
                      runtime: Runtime, per_clip: bool = False) -> dict:
    """The student (one head per teacher) against its teachers on held-out clips.

    For each teacher i, in %: `holdout_agree_t{i}`, clips where the student's top class is the
    top class of its target (the frames `targets.frames` picks); `holdout_agree_clip_t{i}`, the
    same against the teacher's clip-level target (its logits averaged over every frame);
    `holdout_ceiling_t{i}`, clips where the target's top class is the clip-level one: with one
    random frame, the teacher's own frame-to-frame consistency, which bounds the first. Also
    `holdout_loss_t{i}`, the distillation loss, `holdout_loss_clip_t{i}`, the same against the
    clip-level target (what a baseline that sees no frames, such as a per-video prior, is
    compared with), `holdout_classes_t{i}`, how many classes the student's top class takes
    (1: it answers one class whatever the clip), and `holdout_entropy_t{i}`, the mean entropy
    of the targets (nats); with `per_clip`, `entropies`: each teacher's target entropy of every
    clip. The student runs in eval mode (its BatchNorm statistics); sums are all-reduced
    across processes.
    """
    was_training = student.training
    student.eval()
    n_teachers = len(targets.teachers)
    # per teacher: agree, loss, entropy, count, agree_clip, ceiling, loss against the clip level
    sums = torch.zeros(n_teachers, 7, dtype=torch.float64)
    answered = [torch.zeros(k, dtype=torch.float64) for k in targets.num_classes]
    entropies: list[list[torch.Tensor]] = [[] for _ in range(n_teachers)]
    for batch in loader:
        b = runtime.batch(batch)
        picked, _ = targets(b)
        clip_level = targets.clip_logits(b)
        with runtime.autocast():
            student_logits = student(b["video"])
        for i, (s, t, c, ct) in enumerate(zip(student_logits, picked, clip_level,
                                              targets.clip_targets(clip_level), strict=True)):
            s = s.float()
            loss = targets.per_example_loss(s, t)
            ent = entropy(t if targets.loss == "ce" else t.softmax(-1)).cpu()
            entropies[i].append(ent)
            agree, agree_clip, ceiling = agreement_counts(s, t, c).tolist()
            sums[i] += torch.tensor([agree, loss.sum().item(), ent.sum().item(), len(s),
                                     agree_clip, ceiling,
                                     targets.per_example_loss(s, ct).sum().item()],
                                    dtype=torch.float64)
            answered[i] += torch.bincount(s.argmax(-1).cpu(), minlength=len(answered[i]))
    dist.all_reduce_sum(sums)
    for a in answered:
        dist.all_reduce_sum(a)
    student.train(was_training)
    out = {}
    for i, (agree, loss, ent, n, agree_clip, ceiling, loss_clip) in enumerate(sums.tolist()):
        n = max(n, 1.0)
        out.update({f"holdout_agree_t{i}": 100.0 * agree / n,
                    f"holdout_agree_clip_t{i}": 100.0 * agree_clip / n,
                    f"holdout_ceiling_t{i}": 100.0 * ceiling / n,
                    f"holdout_loss_t{i}": loss / n, f"holdout_loss_clip_t{i}": loss_clip / n,
                    f"holdout_classes_t{i}": int((answered[i] > 0).sum()),
                    f"holdout_entropy_t{i}": ent / n})
    if per_clip:  # this process's clips only (the demo and figures run in one process)
        out["entropies"] = [torch.cat(e).tolist() if e else [] for e in entropies]
    return out
