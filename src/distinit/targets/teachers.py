"""The teachers' targets (paper, Section 3.1): frozen image teachers built from
`distill.teachers`, Eq. 1 (frame-averaged logits, softmax at temperature tau), the entropy
filter, and `TeacherTargets`, the part a method registers to turn a batch into targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distinit.config import TeacherConfig
from distinit.losses.distillation import logit_mse, soft_target_cross_entropy
from distinit.models.teachers import Teacher, TeacherError, build_teacher, first_check
from distinit.targets.frames import FRAME_CHOICES, frame_indices, gather_frames, unnormalize


def build_teachers(specs: Sequence[TeacherConfig]) -> list[Teacher]:
    """The frozen teachers `distill.teachers` names."""
    return [build_teacher(t.spec, weights=t.weights or None, arch=t.arch or None,
                          input_size=t.input_size or None, mean=t.mean or None,
                          std=t.std or None) for t in specs]


def teacher_targets(frame_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. 1: average the teacher's logits over the frames, then softmax at temperature tau.

    frame_logits: (B, T', K) logits of T' frames of each clip. Returns (B, K) probabilities.
    """
    return F.softmax(frame_logits.float().mean(dim=1) / temperature, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of (B, K) probabilities."""
    # Not torch.special.entr: it takes log(p) below the 1e-12 clamp, measured to change the last
    # bits of confident teachers' entropies (results.json `entropies`, the filter's decisions).
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def confidence_weights(targets: torch.Tensor, max_entropy: float) -> torch.Tensor:
    """Zero weight for examples whose target entropy is above `max_entropy` (<= 0: keep all)."""
    if max_entropy <= 0:
        return torch.ones(targets.shape[0], device=targets.device)
    return (entropy(targets) <= max_entropy).float()


class TeacherTargets(nn.Module):
    """Frozen teachers and the targets they give for a batch; a method registers it with
    `Method.freeze`, so it is never trained, saved or wrapped in DDP.

    The teachers read the view `view` of a batch, (B, 3, T, H, W) normalised for the student
    with `mean`/`std`: the frames `frames` picks (`frame_indices`, seeded by the batch's
    `rng_seed`), as [0, 1] pixels. A batch from a target cache (`targets.cache`) holds each
    teacher's logits of every frame of the clip, `teacher_logits{i}` (B, T, K): the same frames
    are picked from those, and no teacher runs. `loss` says what the target is: the softmax of
    Eq. 1 for `ce`, the frame-averaged logits for `mse`.

    Each teacher's first logits in this process, live or cached, are checked (`check_logits`):
    (N, C), finite, C its `num_classes`; a bad teacher or cache is one line, not a run that
    trains on nothing (a one-class head) or on NaN. Later batches only test a flag.
    """

    def __init__(self, teachers: Sequence[nn.Module], mean: Sequence[float],
                 std: Sequence[float], frames: str = "random", num_frames: int = 4,
                 temperature: float = 1.0, loss: str = "ce", max_entropy: float = 0.0,
                 view: str = "video", tau_squared: bool = True):
        super().__init__()
        if loss not in ("ce", "mse"):
            raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
        if frames not in FRAME_CHOICES:
            raise ValueError(f"frames must be one of {FRAME_CHOICES}, got {frames!r}")
        self.teachers = nn.ModuleList(teachers)
        self.frames, self.num_frames = frames, num_frames
        self.temperature, self.loss, self.max_entropy = temperature, loss, max_entropy
        self.view, self.tau_squared = view, tau_squared
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)
        self._cache_checked = [False] * len(self.teachers)

    @property
    def num_classes(self) -> list[int]:
        return [t.num_classes for t in self.teachers]

    @torch.no_grad()
    def forward(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(targets, keep): per teacher, (B, K) targets and the (B,) entropy filter's weights."""
        clip = batch[self.view]  # (B, 3, T, H, W)
        B, T = clip.shape[0], clip.shape[2]
        idx = frame_indices(B, T, self.frames, self.num_frames, batch.get("rng_seed"))  # (B, T')
        pixels = None
        if "teacher_logits0" not in batch:  # live teachers: their frames of the clip
            frames = gather_frames(clip.transpose(1, 2), idx)  # (B, T', C, H, W)
            pixels = unnormalize(frames, self.mean, self.std).flatten(0, 1)  # (B*T', C, H, W)
        targets, keeps = [], []
        for i, teacher in enumerate(self.teachers):
            if pixels is None:  # the cache's logits of the same frames and crop
                t_logits = gather_frames(self._cached(batch, i), idx)
            else:
                t_logits = self._live(teacher, pixels).view(B, idx.shape[1], -1)  # (B, T', K)
            t = teacher_targets(t_logits, self.temperature)  # (B, K)
            # MSE regresses the frame-averaged logits; CE matches the softmax targets
            targets.append(t_logits.mean(dim=1) if self.loss == "mse" else t)
            keeps.append(confidence_weights(t, self.max_entropy))
        return targets, keeps

    @torch.no_grad()
    def clip_logits(self, batch: dict) -> list[torch.Tensor]:
        """Per teacher, its logits averaged over every frame of the clip (B, K): the teacher's
        clip-level view, whatever frames the targets are drawn from."""
        if "teacher_logits0" in batch:
            return [self._cached(batch, i).mean(dim=1) for i in range(len(self.teachers))]
        clip = batch[self.view]  # (B, 3, T, H, W)
        B, T = clip.shape[0], clip.shape[2]
        pixels = unnormalize(clip.transpose(1, 2), self.mean, self.std).flatten(0, 1)  # (B*T, C, H, W)
        return [self._live(teacher, pixels).view(B, T, -1).mean(dim=1) for teacher in self.teachers]

    def clip_targets(self, clip_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """The targets `clip_logits` (per teacher, (B, K) logits averaged over every frame)
        give, in the loss's form: softmax at the temperature (Eq. 1), or the logits for MSE."""
        return [c if self.loss == "mse" else teacher_targets(c[:, None], self.temperature)
                for c in clip_logits]

    @staticmethod
    def _live(teacher: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """(N, K) float logits of a live teacher; its first output is checked (a `Teacher`
        checks its own), so a (N, 1, K) output is never silently reshaped into targets."""
        logits = teacher(pixels)
        first_check(teacher, logits, len(pixels))
        return logits.float()

    def _cached(self, batch: dict, i: int) -> torch.Tensor:
        """Teacher i's (B, T, K) float logits from the target cache, checked on the first batch."""
        logits = batch[f"teacher_logits{i}"].float()
        if not self._cache_checked[i]:
            teacher = self.teachers[i]
            name = getattr(teacher, "name", f"{i}")
            declared = getattr(teacher, "num_classes", None)
            if logits.ndim != 3 or (declared is not None and logits.shape[-1] != declared):
                raise TeacherError(
                    f"the teacher-target cache (distill.target_cache) holds logits of shape "
                    f"{tuple(logits.shape)} for teacher {name}, which declares {declared} "
                    "classes; rebuild the cache with distinit cache-targets")
            if not bool(torch.isfinite(logits).all()):
                raise TeacherError(
                    f"the teacher-target cache (distill.target_cache) holds NaN or infinite "
                    f"logits of teacher {name}; delete it, check the teacher, and rebuild it "
                    "with distinit cache-targets")
            self._cache_checked[i] = True
        return logits

    def per_example_loss(self, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The distillation loss (Eq. 2, or MSE on the logits) of each example: (B,)."""
        if self.loss == "ce":
            loss = soft_target_cross_entropy(student_logits, target, self.temperature)
            # Hinton et al. (2015, Sec. 2): the gradients of soft targets at temperature tau
            # scale as 1 / tau^2; multiplying by tau^2 keeps the step size of tau = 1 (exact: at
            # tau = 1 the factor is 1.0, and every run at tau = 1 is unchanged bit for bit).
            return loss * self.temperature ** 2 if self.tau_squared else loss
        return logit_mse(student_logits, target)
