"""RSPNet (Chen et al., AAAI 2021): relative speed perception (RSP) and appearance-focused video
instance discrimination (A-VID), after the official code, PeihaoChen/RSPNet
(`moco/builder_diffspeed_diffloss.py:MoCoDiffLossTwoFc`, `Loss`; `moco/split_wrapper.py`).

Each sample is a query clip and, from another window of the same video, a key clip at the
query's speed and one at the other speed (normal or `speed` times faster; `data/clips/rspnet_sampling.py`
cuts them). One encoder, two linear projections to unit vectors (`split_wrapper.py:108-110`,
fc_type linear), a momentum key encoder and a queue:

- RSP, a margin ranking on similarities / temperature: the query is closer to the key at its
  own speed than to the key at the other speed, which has the same frames' window, crop and
  augmentation as the positive, so only the speed tells them apart (`builder...py:523-538`,
  `nn.MarginRankingLoss(margin=2.0)` at `pretrain.py:49-53`).
- A-VID, MoCo's InfoNCE against the queue, twice: the keys at both speeds are positives, so
  the projection must ignore speed and keep appearance (`builder...py:521-537`). The queue
  takes the other-speed keys (`builder...py:545`).
Loss = weight_avid * (both InfoNCE terms) + weight_rsp * RSP (`loss_lambda.libsonnet`, A = M = 1).

Deviations from the official code, and why:
- Speeds are drawn per sample by the sampler (a fair coin for the query's speed), not as
  exactly half of each batch (`builder...py:424-426`): the dataset draws per item. One fast
  speed (`moco.diff_speed: [2]`, `config/pretrain/moco-train-base.jsonnet:33`); the official
  per-batch choice from a list (`[4, 2, 1]`, which with 1 makes both clips alike) is not offered.
- A video shorter than the fast clip repeats its last frame instead of looping or stretching
  (`datasets/transforms_video/transforms_temporal.py:16-22`): a stretched clip plays at another
  speed than its label says.
- Augmentation: the official code crops 40-100% of the frame per clip, then applies grayscale
  (p 0.2), colour jitter (0.4, 0.4, 0.4, hue 0.4) on every clip and flips
  (`datasets/classification/__init__.py:173-202`, the `aug_plus: false` branch), one draw per
  clip; ours is `data.scale`, `data.flip`, `data.grayscale_p`, `data.color_jitter` with
  `color_jitter_p: 1` (the paper recipe sets them all), but grayscale comes after the jitter
  (`data/clips/color.py`, MoCo v2's order). A grayed clip comes out the same either way (brightness
  and contrast commute with graying, saturation and hue leave gray alone) except where the hue
  shift or clamping changes the luma before graying.
- The key encoder moves after each optimizer step (the same sequence as the official move at the
  start of each forward, `builder...py:508`) and takes the online BatchNorm buffers, unused by a
  key encoder in train mode; keys are encoded in `key_chunks` shuffled chunks, so BatchNorm
  hides the positive in one process too (the official shuffle needs DDP, `builder...py:361-406`).
- Both keys of a sample go through the key encoder in one BatchNorm batch (its window at both
  speeds, exactly half of the clips fast); the official encodes them as two batches
  (`builder...py:445, 512`). Two batches' statistics shift all the keys of each alike: in one
  process at the demo's size RSP's accuracy swung from 0.36 to 0.78 between batches and, after
  ~300 steps, was 0.60 on 512 fresh clips against 0.56 untrained (one batch: 0.63 against 0.58,
  and A-VID's top-1 0.72 against 0.63).
- The queue wraps around; the official trims its size to a multiple of the global batch
  (`utils/moco.py:8-21`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distinit.build import clip_dataset, corpus_encoder
from distinit.config import MAX_QUEUE, QUEUE_WHY, Config, checked
from distinit.data.clips.views import View
from distinit.engine.checks import Check
from distinit.engine.method import Method, Pretraining
from distinit.losses.contrastive import info_nce
from distinit.methods.momentum import encode_keys, momentum_copy, momentum_update
from distinit.methods.queue import KeyQueue
from distinit.models.students import feature_dim, forward_features


@dataclass
class RSPNetConfig:  # defaults: config/pretrain/moco-train-base.jsonnet:27-36, pretrain.py:49-53
    dim: int = checked(128, min=1, max=8192)  # moco.dim
    queue: int = checked(16384, min=1, max=MAX_QUEUE, why=QUEUE_WHY)  # moco.k
    momentum: float = checked(0.999, min=0, lt=1)  # moco.m
    temperature: float = checked(0.07, gt=0)  # moco.t, for both tasks
    speed: int = checked(2, min=2, max=64)  # moco.diff_speed: the fast clip plays every speed-th frame
    margin: float = checked(2.0, min=0)  # RSP's margin on similarity / temperature
    weight_avid: float = checked(1.0, min=0)  # loss_lambda.A
    weight_rsp: float = checked(1.0, min=0)  # loss_lambda.M
    key_chunks: int = checked(2, min=1)  # see `momentum.encode_keys`


class RSPNetNet(nn.Module):
    """An encoder and RSPNet's two linear projections: clips (..., C, T, H, W) -> unit vectors
    (..., 2, dim), [..., 0, :] for A-VID and [..., 1, :] for RSP."""

    def __init__(self, encoder: nn.Module, dim: int):
        super().__init__()
        d = feature_dim(encoder)
        self.encoder = encoder
        self.avid, self.rsp = nn.Linear(d, dim), nn.Linear(d, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-4]  # (B,) or (B, 2) clips
        f = forward_features(self.encoder, x.reshape(-1, *x.shape[-4:]))  # (N, D)
        z = torch.stack([self.avid(f), self.rsp(f)], dim=1)  # (N, 2, dim)
        return F.normalize(z.float(), dim=-1).view(*lead, 2, -1)


def relative_speed_loss(query: torch.Tensor, same: torch.Tensor, other: torch.Tensor,
                        temperature: float, margin: float) -> torch.Tensor:
    """RSP: mean over B of max(0, margin - (q.same - q.other) / temperature), for unit vectors
    query, same (the key at the query's speed) and other (the key at the other speed), (B, D)."""
    with torch.autocast(query.device.type, enabled=False):
        positive = (query.float() * same.float()).sum(dim=1) / temperature  # (B,)
        negative = (query.float() * other.float()).sum(dim=1) / temperature
    return F.margin_ranking_loss(positive, negative, torch.ones_like(positive), margin=margin)


@torch.no_grad()
def _beats_queue(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Share of queries whose positive beats every queued negative (MoCo's top-1 accuracy,
    chance 1 / (K + 1)), in float32 like the loss's logits."""
    with torch.autocast(query.device.type, enabled=False):
        positive = (query.float() * key.float()).sum(dim=1)  # (B,)
        return (positive > (query.float() @ queue.float().T).amax(dim=1)).float().mean()


class RSPNet(Method):
    """Views `video` (the query, with its speed label `video_speed`: 0 normal, 1 fast) and
    `video2` (B, 2, C, T, H, W): the keys' window at normal speed, then fast."""

    def __init__(self, net: RSPNetNet, cfg: RSPNetConfig):
        super().__init__(net)
        self.cfg = cfg
        self.key = momentum_copy(net)
        self.queue = KeyQueue(cfg.queue, cfg.dim)

    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        q = self.trainable(batch["video"])  # (B, 2, dim)
        # Both keys of a sample in one BatchNorm batch: see the module's docstring.
        keys = encode_keys(self.key, batch["video2"], cfg.key_chunks)  # (B, 2 speeds, 2, dim)
        fast = batch["video_speed"]  # (B,)
        rows = torch.arange(len(fast), device=fast.device)
        k, n = keys[rows, fast], keys[rows, 1 - fast]  # (B, 2, dim): same speed, other speed
        negatives = self.queue()  # (K, dim), before this step's keys
        avid_same = info_nce(q[:, 0], k[:, 0], negatives, cfg.temperature)
        avid_other = info_nce(q[:, 0], n[:, 0], negatives, cfg.temperature)
        rsp = relative_speed_loss(q[:, 1], k[:, 1], n[:, 1], cfg.temperature, cfg.margin)
        loss = cfg.weight_avid * (avid_same + avid_other) + cfg.weight_rsp * rsp
        with torch.no_grad():
            # RSP's accuracy (chance 0.5): the query is closer to the key at its own speed
            acc_rsp = ((q[:, 1] * k[:, 1]).sum(1) > (q[:, 1] * n[:, 1]).sum(1)).float().mean()
        logs = {"loss_avid": (avid_same + avid_other).detach(), "loss_rsp": rsp.detach(),
                "acc_rsp": acc_rsp, "acc_avid": _beats_queue(q[:, 0], k[:, 0], negatives),
                "acc_avid_other": _beats_queue(q[:, 0], n[:, 0], negatives)}
        self.queue.enqueue(n[:, 0])
        return {"loss": loss, **logs}

    def after_step(self, step: int) -> None:
        momentum_update(self.key, self.student, self.cfg.momentum)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.encoder.state_dict()


SECTION = ("rspnet", RSPNetConfig)


def checks(cfg: Config, run: Path) -> list[Check]:
    """RSP's pair accuracy (chance 0.5) and A-VID's positive against its queue."""
    k = cfg.rspnet.queue
    return [Check("acc_rsp", 0.5), Check("acc_avid", 1 / (k + 1)),
            Check("acc_avid_other", 1 / (k + 1))]


def build(cfg: Config) -> Pretraining:
    rc, dc = cfg.rspnet, cfg.data
    encoder, videos = corpus_encoder(cfg, "rspnet")
    speed = (("speed", rc.speed),)
    views = [View("video", sampler="rspnet_query", options=speed),
             View("video2", sampler="rspnet_keys", options=speed)]
    return Pretraining(RSPNet(RSPNetNet(encoder, rc.dim), rc),
                       clip_dataset(dc, videos, None, True, cfg.seed, views=views))
