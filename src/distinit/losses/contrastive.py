"""Contrastive losses against a queue of negative keys: MoCo's InfoNCE (MoDist) and ISD's
similarity distillation (auxSKD). Inputs are L2-normalised embeddings; outputs are scalars."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _similarities(x: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of each row of x (B, D) to each queued key (K, D): (B, K), float32.

    Autocast is switched off here because it would run the matmul in bf16 even on float32
    inputs, and at a temperature of 0.07 a bf16 rounding of the logits (about 3 significant
    digits) is large enough to change the softmax.
    """
    with torch.autocast(x.device.type, enabled=False):
        return x.float() @ queue.float().T


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: each query must pick its own key out of the queue's negatives.

    query (B, D), key (B, D) its positive, queue (K, D) negatives. Logits [q.k, q.queue^T] / t,
    cross-entropy with the positive at index 0, mean over B.
    """
    with torch.autocast(query.device.type, enabled=False):
        positive = (query.float() * key.float()).sum(dim=1, keepdim=True)  # (B, 1)
    logits = torch.cat([positive, _similarities(query, queue)], dim=1) / temperature  # (B, 1+K)
    labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def similarity_distillation(student_q: torch.Tensor, teacher_k: torch.Tensor,
                            queue: torch.Tensor, t_student: float,
                            t_teacher: float) -> torch.Tensor:
    """ISD: the student matches the teacher's similarity distribution over the queued keys.

    student_q (B, D), teacher_k (B, D), queue (K, D). KL(softmax(teacher_k.queue^T / t_teacher)
    || softmax(student_q.queue^T / t_student)), summed over K and averaged over B. The target
    is detached: the teacher is only ever moved by momentum, never by this gradient.
    """
    target = F.softmax(_similarities(teacher_k, queue).detach() / t_teacher, dim=1)  # (B, K)
    log_student = F.log_softmax(_similarities(student_q, queue) / t_student, dim=1)  # (B, K)
    return F.kl_div(log_student, target, reduction="batchmean")
