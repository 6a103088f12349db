"""MoDist (Xiao et al. 2021): contrastive learning of a visual (RGB) pathway and a motion (optical
flow) pathway, with cross-modal terms that distill motion into the RGB representation.

As reimplemented in MSCL (`mmaction/models/recognizers/modist.py`): two MoCo v2 pathways, each
with its own momentum key encoder and queue. The loss is the two within-modality InfoNCE terms
plus the two cross-modal ones (RGB query against flow keys and queue, flow query against RGB keys
and queue). `motion=false` drops the flow pathway: the RGB-only MoCo baseline. `distill_weight`
adds DistInit's soft-target loss on the RGB pathway, so DistInit + MoDist is one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distinit.build import clip_dataset, init_student, make_student
from distinit.config import MAX_QUEUE, QUEUE_WHY, Config, DistillConfig, checked
from distinit.data.clips.views import View
from distinit.data.flow.render import flow_channels
from distinit.data.video.io import list_videos
from distinit.engine.checks import Check, info_nce_checks, teacher_losses
from distinit.engine.method import Method, Pretraining
from distinit.errors import UserError
from distinit.losses.contrastive import info_nce
from distinit.methods.heads import Pathway
from distinit.methods.momentum import (
    MOMENTUM_SCHEDULES,
    encode_keys,
    momentum_at,
    momentum_copy,
    momentum_update,
)
from distinit.methods.queue import KeyQueue
from distinit.models.students import feature_dim, forward_features
from distinit.targets.teachers import TeacherTargets, build_teachers


@dataclass
class ModistConfig:
    dim: int = checked(128, min=1, max=8192)  # projection size
    queue: int = checked(16384, min=1, max=MAX_QUEUE, why=QUEUE_WHY)  # negatives per pathway
    momentum: float = checked(0.999, min=0, lt=1)  # key encoders' EMA; the schedule's start
    # constant, or cosine from `momentum` to 1 (MSCL: mmaction/models/recognizers/moco.py:413-414)
    momentum_schedule: str = checked("constant", choices=MOMENTUM_SCHEDULES)
    temperature: float = checked(0.07, gt=0)  # MoCo's; MSCL uses 0.07-0.1
    motion: bool = True  # false: no flow pathway, the RGB-only contrastive baseline
    weight_rgb: float = checked(1.0, min=0)
    weight_flow: float = checked(1.0, min=0)
    weight_cross: float = checked(1.0, min=0)  # each of the two cross-modal terms
    # > 0: add DistInit's soft-target loss from the `distill` section's teachers, on RGB clips
    distill_weight: float = checked(0.0, min=0)
    # Chunks each process's (shuffled) key batch is encoded in, each with its own BatchNorm
    # statistics, at any world size; 1 = MoCo's shuffling BN alone, which
    # does nothing in a single process (see `momentum.encode_keys`).
    key_chunks: int = checked(2, min=1)


class ModistNet(nn.Module):
    """What the optimiser trains: the online RGB pathway, the online flow pathway (None without
    motion) and, when distilling, one linear head per teacher on the RGB encoder's features.
    One forward for all of them, since DDP only syncs gradients of a forward it ran."""

    def __init__(self, rgb: Pathway, flow: Pathway | None, head_classes: Sequence[int] = ()):
        super().__init__()
        self.rgb, self.flow = rgb, flow
        d = feature_dim(rgb.encoder)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in head_classes)

    def forward(self, video: torch.Tensor, flow: torch.Tensor | None = None) -> dict:
        f = forward_features(self.rgb.encoder, video)  # (B, D), shared by projection and heads
        out = {"rgb": F.normalize(self.rgb.head(f).float(), dim=1),  # (B, dim)
               "logits": [head(f) for head in self.heads]}
        if self.flow is not None:
            out["flow"] = self.flow(flow)  # (B, dim)
        return out


@torch.no_grad()
def positive_accuracy(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Share of queries whose positive logit beats every queued negative: top-1 retrieval,
    chance 1 / (K + 1). In float32 like the loss's logits (autocast would round them to bf16)."""
    with torch.autocast(query.device.type, enabled=False):
        positive = (query.float() * key.float()).sum(dim=1)  # (B,)
        return (positive > (query.float() @ queue.float().T).amax(dim=1)).float().mean()


class MoDist(Method):
    """The MoDist loss over the views `video`, `video2` (two clips of a video) and `flow`,
    `flow2` (their optical flow). Queries come from the first clip, keys from the second.

    Key encoders and queues are plain submodules: outside DDP and the optimiser, saved in the
    method state of a checkpoint. Teachers (distill_weight > 0) are the frozen part `targets`. Each
    forward enqueues its keys (MoCo), so with optim.accum_steps > 1 a step's later micro-batches
    see its earlier ones' keys as negatives, which more processes at the same global batch don't.
    """

    def __init__(self, net: ModistNet, cfg: ModistConfig, teachers: Sequence[nn.Module] = (),
                 teacher_weights: Sequence[float] = (), distill: DistillConfig | None = None,
                 mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.25,) * 3):
        super().__init__(net)
        if cfg.motion != (net.flow is not None):
            raise ValueError(f"motion={cfg.motion} needs a flow pathway exactly when motion is on")
        if not (len(teachers) == len(teacher_weights) == len(net.heads)):
            raise ValueError(f"{len(teachers)} teachers, {len(teacher_weights)} weights and "
                             f"{len(net.heads)} heads: give one of each per teacher")
        self.cfg, self.distill = cfg, distill or DistillConfig()
        self.total_steps = 1  # the run's length, from `begin`; the momentum schedule's span
        self.key_rgb = momentum_copy(net.rgb)
        self.queue_rgb = KeyQueue(cfg.queue, cfg.dim)
        if cfg.motion:
            self.key_flow = momentum_copy(net.flow)
            self.queue_flow = KeyQueue(cfg.queue, cfg.dim)
        # DistInit's targets of the RGB clips `video`, unfiltered (build refuses max_entropy)
        d = self.distill
        self.freeze("targets", TeacherTargets(teachers, mean, std, d.frames, d.num_frames,
                                              d.temperature, d.loss, view="video"))
        self.teacher_weights = list(teacher_weights)

    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        out = self.trainable(batch["video"], batch["flow"] if cfg.motion else None)
        k_rgb = encode_keys(self.key_rgb, batch["video2"], cfg.key_chunks)  # (B, dim)
        neg_rgb = self.queue_rgb()  # (K, dim), a copy: enqueue below must not touch it
        # name: (query, positive key, negatives, weight)
        terms = {"rgb": (out["rgb"], k_rgb, neg_rgb, cfg.weight_rgb)}
        if cfg.motion:
            k_flow = encode_keys(self.key_flow, batch["flow2"], cfg.key_chunks)
            neg_flow = self.queue_flow()
            terms["flow"] = (out["flow"], k_flow, neg_flow, cfg.weight_flow)
            terms["rgb_flow"] = (out["rgb"], k_flow, neg_flow, cfg.weight_cross)
            terms["flow_rgb"] = (out["flow"], k_rgb, neg_rgb, cfg.weight_cross)
        total = out["rgb"].new_zeros(())
        logs = {}
        for name, (q, k, negatives, weight) in terms.items():
            loss = info_nce(q, k, negatives, cfg.temperature)
            total = total + weight * loss
            logs[f"loss_{name}"] = loss.detach()
            logs[f"acc_{name}"] = positive_accuracy(q, k, negatives)
        if self.teacher_weights:
            targets, _ = self.targets(batch)
            for i, (w, s, t) in enumerate(zip(self.teacher_weights, out["logits"], targets,
                                              strict=True)):
                loss = self.targets.per_example_loss(s, t).mean()
                total = total + cfg.distill_weight * w * loss
                logs[f"loss_t{i}"] = loss.detach()
        # MoCo enqueues in the forward: the loss above saw the queue before this step's keys
        self.queue_rgb.enqueue(k_rgb)
        if cfg.motion:
            self.queue_flow.enqueue(k_flow)
        return {"loss": total, **logs}

    def begin(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def after_step(self, step: int) -> None:
        cfg = self.cfg
        m = momentum_at(step, self.total_steps, cfg.momentum,
                        cfg.momentum_schedule)
        momentum_update(self.key_rgb, self.student.rgb, m)
        if cfg.motion:
            momentum_update(self.key_flow, self.student.flow, m)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.rgb.encoder.state_dict()


SECTION = ("modist", ModistConfig)


def checks(cfg: Config, run: Path) -> list[Check]:
    """Each InfoNCE term against its queue (and the teachers' losses when distilling)."""
    mc = cfg.modist
    terms = ("rgb", "flow", "rgb_flow", "flow_rgb") if mc.motion else ("rgb",)
    out = [c for t in terms for c in info_nce_checks(t, mc.queue)]
    return out + (teacher_losses(cfg, run) if mc.distill_weight > 0 else [])


def build(cfg: Config) -> Pretraining:
    """MoDist's plugin: both pathways (the RGB encoder from `model.init`), their key encoders and
    queues, the teachers when distilling, and two clips of each video with their flow."""
    mc, dc, dcfg = cfg.modist, cfg.data, cfg.distill
    if not dc.videos:
        raise UserError("modist needs data.videos: a folder of videos or a list file")
    if mc.motion and not dc.flow_dir:
        raise UserError("modist reads optical flow: run `distinit flow VIDEOS FLOW_DIR` and set "
                        "data.flow_dir=FLOW_DIR (or modist.motion=false for the RGB-only baseline)")
    if dc.input != "rgb":
        raise UserError("modist pretrains an RGB encoder (its flow pathway is modist.motion): "
                        "set data.input=rgb")
    distilling = mc.distill_weight > 0
    if distilling and not dcfg.teachers:
        raise UserError("modist.distill_weight > 0 needs distill.teachers (e.g. - {spec: "
                        "'torchvision:resnet50'}), or set modist.distill_weight=0")
    if distilling and dcfg.max_entropy > 0:
        raise UserError("modist does not filter teacher targets by entropy: set "
                        "distill.max_entropy=0")
    teachers = build_teachers(dcfg.teachers) if distilling else []
    encoder = make_student(cfg.model, num_classes=0)
    init_student(encoder, cfg.model)  # MoDist can start from an inflated or distilled init
    flow = None
    if mc.motion:  # the motion pathway always starts from scratch
        channels = flow_channels(dc.flow_format)  # (dx, dy), or a colour-wheel image
        flow = Pathway(make_student(cfg.model, num_classes=0, in_channels=channels), mc.dim,
                       channels)
    net = ModistNet(Pathway(encoder, mc.dim), flow, [t.num_classes for t in teachers])
    method = MoDist(net, mc, teachers, [t.weight for t in dcfg.teachers] if distilling else [],
                    dcfg, dc.mean, dc.std)
    views = [View("video"), View("video2")]
    if mc.motion:  # clip A and its flow (same frames, same crop), clip B and its flow
        views = [View("video"), View("flow", "flow", frames_of="video"),
                 View("video2"), View("flow2", "flow", frames_of="video2")]
    videos = list_videos(dc.videos, dc.extensions)
    return Pretraining(method, clip_dataset(dc, videos, None, True, cfg.seed, views=views))
