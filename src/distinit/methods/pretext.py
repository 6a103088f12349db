"""Pretext tasks that classify how a clip was sampled (the ones auxSKD is added to):

- `vspp`: Video Segment Pace Prediction (auxSKD): which of `max_segment` segments plays faster,
  and at which speed (1..`max_speed`); two cross-entropy heads.
- `pace`: playback pace prediction (the VideoPace / PRP family): the pace (1..`max_pace`) of the
  whole clip.
- `vcop`: clip order prediction: `n_clips` clips in shuffled order; VCOP's head, a shared
  layer on each pair of clip features, concatenated, then a classifier over the n! orders.
  `crop_per_clip` (default, as the official code: xudejing/video-clip-order-prediction
  datasets/ucf101.py:267-281, a seed per clip at :272) cuts each clip from its own crop box; off,
  one box serves the tuple and the clips' edges line up, a low-level cue to their order.

The sampler (`data/clips/pretext.py`) draws the frames and the labels; the encoder starts from
`model.init` (e.g. the backbone of an auxSKD run), and `backbone_state_dict` hands it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import factorial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distinit.build import clip_dataset, corpus_encoder
from distinit.config import MAX_CLIP_LEN, Config, checked
from distinit.data.clips.views import View
from distinit.engine.checks import Check
from distinit.engine.method import Method, Pretraining
from distinit.errors import UserError
from distinit.models.students import feature_dim, forward_features


@dataclass
class PretextConfig:
    max_segment: int = checked(4, min=1, max=64)  # vspp: segments of a clip
    max_speed: int = checked(4, min=2, max=64)  # vspp: the altered segment plays at 1..max_speed
    max_pace: int = checked(4, min=2, max=64)  # pace: the clip plays at 1..max_pace
    n_clips: int = checked(3, min=2, max=64)  # vcop: clips to order
    interval: int = checked(8, min=0, max=MAX_CLIP_LEN)  # vcop: frames between consecutive clips
    hidden: int = checked(512, min=1, max=65536)  # vcop: width of the pairwise layer
    dropout: float = checked(0.5, min=0, lt=1)  # vcop: before the order classifier
    crop_per_clip: bool = True  # vcop: each clip its own crop and flip; false: one for the tuple


class PretextNet(nn.Module):
    """An encoder with one linear head per label; with `n_clips`, VCOP's pairwise order head
    on clips (B, n, C, T, H, W)."""

    def __init__(self, encoder: nn.Module, heads: dict[str, int], n_clips: int = 0,
                 hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.encoder, self.n_clips = encoder, n_clips
        d = feature_dim(encoder)
        if n_clips:
            pairs = len(list(combinations(range(n_clips), 2)))
            self.pair = nn.Linear(2 * d, hidden)
            self.dropout = nn.Dropout(dropout)
            d = pairs * hidden
        self.heads = nn.ModuleDict({k: nn.Linear(d, n) for k, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.n_clips:
            B, n = x.shape[:2]
            f = forward_features(self.encoder, x.flatten(0, 1)).view(B, n, -1)
            pairs = [F.relu(self.pair(torch.cat([f[:, i], f[:, j]], dim=1)))
                     for i, j in combinations(range(n), 2)]
            f = self.dropout(torch.cat(pairs, dim=1))
        else:
            f = forward_features(self.encoder, x)
        return {k: head(f) for k, head in self.heads.items()}


class Pretext(Method):
    """Cross-entropy on each label the sampler drew for the view `video`."""

    def forward(self, batch: dict) -> dict:
        logits = self.trainable(batch["video"])
        total, logs = None, {}
        for name, z in logits.items():
            y = batch[f"video_{name}"]
            loss = F.cross_entropy(z.float(), y)
            total = loss if total is None else total + loss
            logs[f"loss_{name}"] = loss.detach()
            logs[f"acc_{name}"] = (z.argmax(-1) == y).float().mean()
        return {"loss": total, **logs}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.encoder.state_dict()


def task_heads(name: str, pc: PretextConfig) -> dict[str, int]:
    """Task `name`'s heads, {label: classes}: each logs `acc_LABEL`, chance 1 / classes."""
    if name == "vspp":
        return {"speed": pc.max_speed, "segment": pc.max_segment}
    if name == "pace":
        return {"pace": pc.max_pace}
    return {"order": factorial(pc.n_clips)}


def _task(name: str, pc: PretextConfig) -> tuple[View, dict[str, int], int]:
    """(the view, its heads {label: classes}, clips per sample) of task `name`."""
    heads = task_heads(name, pc)
    if name == "vspp":
        options = (("max_segment", pc.max_segment), ("max_speed", pc.max_speed))
        return View("video", sampler="vspp", options=options), heads, 0
    if name == "pace":
        return View("video", sampler="pace", options=(("max_pace", pc.max_pace),)), heads, 0
    options = (("n_clips", pc.n_clips), ("interval", pc.interval))
    view = View("video", sampler="vcop", options=options, crop_per_clip=pc.crop_per_clip)
    return view, heads, pc.n_clips


def build(cfg: Config, task: str) -> Pretraining:
    pc, dc = cfg.pretext, cfg.data
    if task == "vspp" and pc.max_segment > dc.clip_len:
        raise UserError(f"pretext.max_segment={pc.max_segment} segments do not fit in "
                        f"data.clip_len={dc.clip_len} frames")
    view, heads, n_clips = _task(task, pc)
    encoder, videos = corpus_encoder(cfg, task)  # e.g. from the auxSKD stage's backbone
    net = PretextNet(encoder, heads, n_clips, pc.hidden, pc.dropout)
    return Pretraining(Pretext(net), clip_dataset(dc, videos, None, True, cfg.seed, views=[view]))


class _Task:
    """The plugin of one task (`methods.METHODS` names it as `pretext:VSPP` etc.)."""

    SECTION = ("pretext", PretextConfig)

    def __init__(self, name: str):
        self.name = name

    def build(self, cfg: Config) -> Pretraining:
        return build(cfg, self.name)

    def checks(self, cfg: Config, run: Path) -> list[Check]:
        """Each head's accuracy against a uniform guess over its classes."""
        return [Check(f"acc_{h}", 1 / n) for h, n in task_heads(self.name, cfg.pretext).items()]


VSPP, PACE, VCOP = _Task("vspp"), _Task("pace"), _Task("vcop")
