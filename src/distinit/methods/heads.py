"""Heads that several methods put on a video backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distinit.models.students import feature_dim, forward_features


class MultiHeadStudent(nn.Module):
    """A video backbone with one linear head per teacher on its pooled features.

    The backbone's own classifier is removed: it would get no gradient (and DDP refuses
    parameters that get none); fine-tuning puts a fresh one on the distilled backbone.
    """

    def __init__(self, backbone: nn.Module, head_classes: Sequence[int]):
        super().__init__()
        dim = feature_dim(backbone)
        if callable(getattr(backbone, "reset_head", None)):
            backbone.reset_head(0)
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(dim, k) for k in head_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = forward_features(self.backbone, x)  # (B, D)
        return [head(f) for head in self.heads]


class Pathway(nn.Module):
    """An encoder and MoCo v2's projection head: clips (B, C, T, H, W) -> unit vectors (B, dim)."""

    def __init__(self, encoder: nn.Module, dim: int, in_channels: int = 3):
        super().__init__()
        d = feature_dim(encoder, (1, in_channels, 8, 112, 112))
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(forward_features(self.encoder, x)).float(), dim=1)
