"""auxSKD (Dadashzadeh et al. 2022): the auxiliary stage, similarity-based knowledge
distillation as in ISD, before a pretext task (`vspp`, `pace`, `vcop`).

A student (encoder + MoCo v2 projection, 128-d, normalised) sees one clip of a video; the
teacher sees another clip of the same video at another playback rate (`rate`). The teacher's
similarities to a queue of its past keys, softmax at `t_teacher` (0.02), are the target of the
student's similarities to the same queue at `t_student` (0.1): KL divergence. The teacher is
the student's momentum copy (0.999), or, with `teacher=CHECKPOINT`, a frozen pretrained video
encoder (that run's backbone) with a frozen projection drawn at the start (random, as the
momentum teacher's is at step 0; similarities survive a random projection).

Defaults follow the paper and its code (queue 15,360; SGD, momentum 0.9, wd 5e-3, step every
6 epochs is the recipe's `optim`); the synthetic world scales them down by configuration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from distinit.build import clip_dataset, corpus_encoder, init_student, make_student
from distinit.config import Config, checked
from distinit.data.views import View
from distinit.engine.method import Method, Pretraining
from distinit.losses.contrastive import similarity_distillation
from distinit.methods.heads import Pathway
from distinit.methods.momentum import encode_keys, momentum_copy, momentum_update
from distinit.methods.queue import KeyQueue


@dataclass
class AuxSKDConfig:
    dim: int = checked(128, min=1)
    queue: int = checked(15360, min=1)
    momentum: float = checked(0.999, min=0, lt=1)
    t_student: float = checked(0.1, gt=0)
    t_teacher: float = checked(0.02, gt=0)
    rate: int = checked(2, min=1)  # playback rate of the teacher's clip (the student's: 1)
    teacher: str = ""  # a checkpoint whose backbone is a frozen teacher; "": momentum copy
    key_chunks: int = checked(2, min=1)  # see `momentum.encode_keys`


class AuxSKD(Method):
    """Views `video` (the student's clip) and `video2` (the teacher's, at another rate)."""

    def __init__(self, student: Pathway, cfg: AuxSKDConfig, teacher: Pathway | None = None):
        super().__init__(student)
        self.cfg = cfg
        self.moving = teacher is None
        if self.moving:
            self.teacher = momentum_copy(student)
        else:
            self.freeze("teacher", teacher)
        self.queue = KeyQueue(cfg.queue, cfg.dim)

    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        q = self.trainable(batch["video"])  # (B, dim)
        k = encode_keys(self.teacher, batch["video2"], cfg.key_chunks)  # (B, dim)
        keys = self.queue()  # (K, dim): the loss sees the queue before this step's keys
        loss = similarity_distillation(q, k, keys, cfg.t_student, cfg.t_teacher)
        with torch.no_grad():  # does the student's nearest queued key match the teacher's?
            agree = ((q.float() @ keys.float().T).argmax(1)
                     == (k.float() @ keys.float().T).argmax(1)).float().mean()
            # Collapse watch: unit vectors spread over `dim` directions have a per-dimension std
            # near dim ** -0.5 across the batch; a student mapping every clip alike, near 0.
            spread = q.float().std(0).mean() * cfg.dim ** 0.5
        self.queue.enqueue(k)
        return {"loss": loss, "agree_nn": agree, "spread": spread}

    def after_step(self, step: int) -> None:
        if self.moving:
            momentum_update(self.teacher, self.student, self.cfg.momentum)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.encoder.state_dict()


SECTION = ("auxskd", AuxSKDConfig)


def build(cfg: Config) -> Pretraining:
    ac, dc = cfg.auxskd, cfg.data
    encoder, videos = corpus_encoder(cfg, "auxskd")
    student = Pathway(encoder, ac.dim)
    teacher = None
    if ac.teacher:
        frozen = make_student(cfg.model, num_classes=0)
        init_student(frozen, replace(cfg.model, init="checkpoint", weights=ac.teacher))
        teacher = Pathway(frozen, ac.dim)
        teacher.head = copy.deepcopy(student.head)  # the projection drawn at the start
    views = [View("video"), View("video2", rate=ac.rate)]
    return Pretraining(AuxSKD(student, ac, teacher),
                       clip_dataset(dc, videos, None, True, cfg.seed, views=views))


