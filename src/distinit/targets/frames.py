"""What the teachers see of a clip: its frames picked per clip, back in [0, 1] pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FRAME_CHOICES = ("center", "random", "multi")


def frame_indices(batch: int, length: int, how: str, num_frames: int = 1,
                  seeds: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T') indices of the frames the teachers see in each clip of `length` frames.

    center: the middle frame; random: one random frame per clip; multi: `num_frames` random
    frames per clip (drawn without replacement, so at most T). With `seeds` (one per clip, from
    the dataset) a clip's frames depend on the clip alone, not on the process or the batch it is
    in, so one process and several give the same targets, and so do live and cached teachers.
    """
    if how not in FRAME_CHOICES:
        raise ValueError(f"frames must be one of {FRAME_CHOICES}, got {how!r}")
    n = 1 if how == "random" else min(num_frames, length)
    if how == "center":
        return torch.full((batch, 1), length // 2, dtype=torch.long)
    if seeds is None:
        return torch.rand(batch, length).argsort(dim=1)[:, :n]
    return torch.stack([torch.randperm(length, generator=torch.Generator().manual_seed(int(s)))[:n]
                        for s in seeds.tolist()])


def gather_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` (B, T') of the frame axis 1 of x (B, T, ...) -> (B, T', ...)."""
    idx = idx.to(x.device)
    return x[torch.arange(len(x), device=x.device)[:, None], idx]


def select_frames(clip: torch.Tensor, how: str, num_frames: int = 1,
                  seeds: torch.Tensor | None = None) -> torch.Tensor:
    """Frames of each clip for the teachers: (B, C, T, H, W) -> (B, T', C, H, W)."""
    B, _, T = clip.shape[:3]
    return gather_frames(clip.transpose(1, 2), frame_indices(B, T, how, num_frames, seeds))


def unnormalize(frames: torch.Tensor, mean: torch.Tensor | Sequence[float],
                std: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Frames (..., C, H, W) normalised for the student -> float pixels in [0, 1].

    Teachers take [0, 1] pixels and apply their own normalisation (`models.teachers.Teacher`).
    """
    mean = torch.as_tensor(mean, dtype=torch.float32, device=frames.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=frames.device).view(-1, 1, 1)
    return (frames.float() * std + mean).clamp(0, 1)
