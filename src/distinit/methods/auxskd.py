"""auxSKD (Dadashzadeh et al. 2022): the auxiliary stage, similarity-based knowledge
distillation as in ISD, before a pretext task (`vspp`, `pace`, `vcop`).

A student (encoder + projection + predictor, 128-d, normalised) sees one clip of a video; the
teacher (encoder + projection) another clip of the same video. The teacher's similarities to a
queue of its past keys, softmax at `t_teacher` (0.02), are the target of the student's
similarities to the same queue at `t_student` (0.1): KL divergence. The teacher is the
student's momentum copy (without the predictor), or, with `teacher=CHECKPOINT`, a frozen
pretrained video encoder (that run's backbone) with a frozen projection drawn at the start.

As the official code (github.com/Plrbear/auxSKD, `auxSKD/train.py`, `auxSKD/datasets/ucf101.py`)
runs it:
- **Views** (`views=vspp`): both clips are VSPP clips (ucf101.py:32-75): each has its own
  random start, one of `max_segment` segments played at 1..`max_speed`, and the second clip's
  speed and segment differ from the first's (ucf101.py:35-37, 64-66). So the pair differs in
  pace. That does not explain why VSPP learns less after this stage on the synthetic world:
  pairs at the same pace (`views=rate`, `rate=1`) did no better (docs/REPRODUCTION.md,
  auxskd-factors).
  `views=rate` keeps our first reading of the paper: the teacher's clip at `rate` times the
  student's playback rate.
- **Predictor** (train.py:83-90, 142, 197): only the student has an MLP after its projection,
  128 -> 2 x the backbone's feature size (1,024 for R3D-18) -> BatchNorm -> ReLU -> 128. The
  released code builds it only in its `r3d` branch (train.py:123-142), which cannot run
  (`R3DNet` is never imported, train.py:17, 124); its default `r21d` branch builds none and then
  fails on it (train.py:175, 197). So the predictor is our reconstruction of a branch no
  released run executed, and `predictor=false` has an equal claim (docs/SOURCES.md).
- **Projection**: the official encoders end in one linear layer to 128 (`with_classifier=True,
  num_classes=128`, train.py:120-125); ours is MoCo v2's two-layer MLP (`heads.Pathway`), which
  the other contrastive methods share. Kept: a deviation, named here and in docs/REPRODUCTION.md.
- **Colour jitter**: per frame, ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8 (train.py:284-285,
  ucf101.py:85-103): `data.color_jitter` with `data.color_per_frame: true` in the recipes.
- **Momentum**: constant 0.999 (train.py:62). `momentum_schedule=cosine` (BYOL's, from
  `momentum` to 1) is ours, for short runs: 0.999 over the demo's ~300 steps leaves 0.999^300 =
  74% of the random initial teacher in place (the paper's ~27,000 steps: none). `init_left` in
  the logs is that share, the product of the momenta so far.

Defaults follow the paper and its code (queue 15,360; SGD, momentum 0.9, wd 5e-3, step every
6 epochs is the recipe's `optim`); the synthetic world scales them down by configuration.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distinit.build import clip_dataset, corpus_encoder, init_student, make_student
from distinit.config import MAX_QUEUE, QUEUE_WHY, Config, checked
from distinit.data.clips.views import View
from distinit.engine.checks import Check
from distinit.engine.method import Method, Pretraining
from distinit.errors import UserError
from distinit.losses.contrastive import similarity_distillation
from distinit.methods.heads import Pathway
from distinit.methods.momentum import (
    MOMENTUM_SCHEDULES,
    encode_keys,
    momentum_at,
    momentum_copy,
    momentum_update,
)
from distinit.methods.queue import KeyQueue
from distinit.models.students import forward_features


@dataclass
class AuxSKDConfig:
    dim: int = checked(128, min=1, max=8192)
    queue: int = checked(15360, min=1, max=MAX_QUEUE, why=QUEUE_WHY)
    momentum: float = checked(0.999, min=0, lt=1)  # the teacher's; the schedule's start
    momentum_schedule: str = checked("constant", choices=MOMENTUM_SCHEDULES)
    t_student: float = checked(0.1, gt=0)
    t_teacher: float = checked(0.02, gt=0)
    views: str = checked("vspp", choices=("vspp", "rate"))  # how the two clips are cut
    max_segment: int = checked(4, min=1, max=64)  # views=vspp: segments of a clip
    max_speed: int = checked(4, min=2, max=64)  # views=vspp: the altered segment plays at 1..max_speed
    rate: int = checked(2, min=1, max=64)  # views=rate: the teacher's playback rate (the student's: 1)
    predictor: bool = True  # the student's predictor MLP (the official code's `predict_q_c`)
    teacher: str = ""  # a checkpoint whose backbone is a frozen teacher; "": momentum copy
    key_chunks: int = checked(2, min=1)  # see `momentum.encode_keys`


class Predicted(nn.Module):
    """A pathway whose projection is followed by a predictor MLP: clips -> unit vectors (B, dim).
    The momentum teacher copies `pathway` only (`momentum_update(teacher, student.pathway)`)."""

    def __init__(self, pathway: Pathway, dim: int):
        super().__init__()
        hidden = 2 * pathway.head[0].in_features  # train.py:135: hidden_dim = feat_dim * 2
        self.pathway = pathway
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    @property
    def encoder(self) -> nn.Module:
        return self.pathway.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pathway.head(forward_features(self.pathway.encoder, x))  # (B, dim), not unit
        return F.normalize(self.predictor(z).float(), dim=1)


class AuxSKD(Method):
    """Views `video` (the student's clip) and `video2` (the teacher's)."""

    def __init__(self, student: Pathway | Predicted, cfg: AuxSKDConfig,
                 teacher: Pathway | None = None):
        super().__init__(student)
        self.cfg = cfg
        self.moving = teacher is None
        if self.moving:
            self.teacher = momentum_copy(student.pathway if isinstance(student, Predicted)
                                         else student)
        else:
            self.freeze("teacher", teacher)
        self.queue = KeyQueue(cfg.queue, cfg.dim)
        # The share of the initial teacher still in it: the product of the momenta so far.
        self.register_buffer("init_left", torch.ones((), dtype=torch.float64))
        self.total_steps, self.step = 1, 0

    @property
    def pathway(self) -> Pathway:
        """The student's encoder and projection: what the momentum teacher copies."""
        student = self.student
        return student.pathway if isinstance(student, Predicted) else student

    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        q = self.trainable(batch["video"])  # (B, dim)
        k = encode_keys(self.teacher, batch["video2"], cfg.key_chunks)  # (B, dim)
        keys = self.queue()  # (K, dim): the loss sees the queue before this step's keys
        loss = similarity_distillation(q, k, keys, cfg.t_student, cfg.t_teacher)
        # Does the student's nearest queued key match the teacher's? In float32: under bf16
        # autocast the matmul would round the similarities and tie near neighbours.
        with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
            agree = ((q.float() @ keys.float().T).argmax(1)
                     == (k.float() @ keys.float().T).argmax(1)).float().mean()
            # Collapse watch: unit vectors spread over `dim` directions have a per-dimension std
            # near dim ** -0.5 across the batch; a student mapping every clip alike, near 0.
            spread = q.float().std(0).mean() * cfg.dim ** 0.5
            # The loss against a student that knows nothing: uniform similarities score
            # KL(teacher || uniform) = log K - H(teacher). 1 = no better than that, 0 = the
            # teacher's distribution matched.
            target = torch.softmax(k.float() @ keys.float().T / cfg.t_teacher, dim=1)
            h = -(target * target.clamp_min(1e-12).log()).sum(1).mean()
            vs_uniform = loss.detach().float() / (math.log(keys.shape[0]) - h).clamp_min(1e-6)
        self.queue.enqueue(k)
        logs = {"loss": loss, "agree_nn": agree, "spread": spread, "loss_vs_uniform": vs_uniform}
        if self.moving:
            logs["init_left"] = self.init_left.float()
            logs["momentum"] = momentum_at(self.step + 1, self.total_steps, cfg.momentum,
                                           cfg.momentum_schedule)
        return logs

    def begin(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def after_step(self, step: int) -> None:
        self.step = step
        if self.moving:
            m = momentum_at(step, self.total_steps, self.cfg.momentum, self.cfg.momentum_schedule)
            momentum_update(self.teacher, self.pathway, m)
            self.init_left.mul_(m)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.pathway.encoder.state_dict()


SECTION = ("auxskd", AuxSKDConfig)


def checks(cfg: Config, run: Path) -> list[Check]:
    """agree_nn: the student's nearest of K queued keys is the teacher's (chance 1 / K);
    spread: 0 when every clip maps alike (collapse), near 1 when spread over all directions;
    loss_vs_uniform: the KL loss over a student with uniform similarities' (1 = chance)."""
    return [Check("agree_nn", 1 / cfg.auxskd.queue), Check("spread", 0.0, share=0.5),
            Check("loss_vs_uniform", 1.0, best=0.0),
            Check("init_left", window=0), Check("momentum", window=0)]


def _views(ac: AuxSKDConfig, clip_len: int) -> list[View]:
    if ac.views == "rate":
        return [View("video"), View("video2", rate=ac.rate)]
    if ac.max_segment > clip_len:
        raise UserError(f"auxskd.max_segment={ac.max_segment} segments do not fit in "
                        f"data.clip_len={clip_len} frames")
    options = (("max_segment", ac.max_segment), ("max_speed", ac.max_speed))
    return [View("video", sampler="vspp", options=options),
            View("video2", sampler="vspp", options=(*options, ("unlike", "video")))]


def build(cfg: Config) -> Pretraining:
    ac, dc = cfg.auxskd, cfg.data
    views = _views(ac, dc.clip_len)
    encoder, videos = corpus_encoder(cfg, "auxskd")
    pathway = Pathway(encoder, ac.dim)
    teacher = None
    if ac.teacher:
        frozen = make_student(cfg.model, num_classes=0)
        init_student(frozen, replace(cfg.model, init="checkpoint", weights=ac.teacher))
        teacher = Pathway(frozen, ac.dim)
        teacher.head = copy.deepcopy(pathway.head)  # the projection drawn at the start
    student = Predicted(pathway, ac.dim) if ac.predictor else pathway
    return Pretraining(AuxSKD(student, ac, teacher),
                       clip_dataset(dc, videos, None, True, cfg.seed, views=views))
