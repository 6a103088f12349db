"""DistInit (paper, Section 3): distill frozen still-image teachers into a video student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distinit.build import (
    clip_dataset,
    holdout_split,
    init_student,
    input_channels,
    make_student,
)
from distinit.config import Config, DistillConfig
from distinit.data.clips.views import View
from distinit.data.video.io import list_videos
from distinit.engine import dist
from distinit.engine.checks import Check, head_classes, teacher_losses
from distinit.engine.method import Method, Pretraining
from distinit.engine.runtime import Runtime
from distinit.errors import UserError
from distinit.losses.distillation import weighted_mean
from distinit.methods.heads import MultiHeadStudent
from distinit.targets.cache import TargetCache, build_cache, cache_complete
from distinit.targets.holdout import holdout_agreement
from distinit.targets.teachers import TeacherTargets, build_teachers

SECTION = ("distill", DistillConfig)
DEMO_RECIPE = "distill"  # configs/demo/distill.yaml


def checks(cfg: Config, run: Path) -> list[Check]:
    """Held-out agreement with each teacher (in %, measured after each epoch) and each
    teacher's soft-target loss, against a uniform student's."""
    out = []
    for i, c in enumerate(head_classes(run)):
        out += [Check(f"holdout_agree_t{i}", 100 / c, best=100, window=0),
                Check(f"holdout_agree_clip_t{i}", 100 / c, best=100, window=0),
                Check(f"holdout_ceiling_t{i}", window=0)]
    return out + teacher_losses(cfg, run)


class DistInit(Method):
    """Soft targets from the teachers (Eq. 1), per-teacher losses (Eq. 2), weighted sum (Eq. 3).

    `trainable` is the student with one head per teacher. The teachers and the targets they
    give are the frozen part `targets` (`TeacherTargets`): not trained, not saved in checkpoints
    (the config names their files) and never in DDP.
    """

    def __init__(self, net: MultiHeadStudent, teachers: Sequence[nn.Module],
                 teacher_weights: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 frames: str = "random", num_frames: int = 4, temperature: float = 1.0,
                 loss: str = "ce", max_entropy: float = 0.0, teacher_view: str = "video",
                 tau_squared: bool = True):
        super().__init__(net)
        # The student reads `video`; the teachers read frames of `teacher_view`: the same RGB
        # clip, or for a flow student (the paper's Table 5) the RGB clip the flow was cut from.
        self.freeze("targets", TeacherTargets(teachers, mean, std, frames, num_frames,
                                              temperature, loss, max_entropy, teacher_view,
                                              tau_squared))
        self.teacher_weights = list(teacher_weights)

    @torch.no_grad()
    def prepare(self, batch: dict) -> dict:
        """Teacher targets for a batch, and how many examples each teacher keeps (`counts`).

        The training loop sums `counts` over the global batch before the loss is computed, so
        the entropy-filtered loss is a mean over the kept examples of the whole global batch.
        """
        targets, keeps = self.targets(batch)
        counts = torch.stack([k.sum() for k in keeps])
        return {**batch, "targets": targets, "keep": keeps, "counts": counts}

    def forward(self, batch: dict) -> dict:
        if "targets" not in batch:  # called outside the loop: normalise by this batch alone
            batch = self.prepare(batch)
        student_logits = self.trainable(batch["video"])
        total = batch["video"].new_zeros((), dtype=torch.float32)
        logs = {}
        for i, (w, s_logits, target, keep, count) in enumerate(zip(
                self.teacher_weights, student_logits, batch["targets"], batch["keep"],
                batch["counts"], strict=True)):
            loss_i = weighted_mean(self.targets.per_example_loss(s_logits, target), keep, count)
            total = total + w * loss_i
            logs[f"loss_t{i}"] = loss_i.detach()
            logs[f"dropped_t{i}"] = 1.0 - keep.mean()
            logs[f"agree_t{i}"] = (s_logits.argmax(-1) == target.argmax(-1)).float().mean()
        return {"loss": total, **logs}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.backbone.state_dict()


def prepare(cfg: Config) -> None:
    """Before the run is built: the teacher-target cache it reads (`distill.target_cache`), built
    now if `distinit cache-targets` has not built it yet (resumable; every rank takes part)."""
    dcfg = cfg.distill
    if not dcfg.target_cache:
        return
    if dcfg.cache_dtype == "topk" and dcfg.loss == "mse":
        raise UserError("distill.loss=mse regresses every logit, and a top-k cache keeps only "
                        "a few: use distill.loss=ce or a float16 cache")
    if not cache_complete(dcfg.target_cache):
        build_cache(cfg)


def held_out(videos: list[Path], dcfg: DistillConfig,
             extensions: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """(training videos, held-out videos): `distill.holdout_videos` when it names them, else
    `distill.holdout` of the corpus chosen by a fixed permutation."""
    if not dcfg.holdout_videos:
        return holdout_split(videos, dcfg.holdout)
    if dcfg.holdout:
        raise UserError(f"distill.holdout_videos names the held-out videos and distill.holdout="
                        f"{dcfg.holdout} would hold out more: set distill.holdout=0")
    held = list_videos(dcfg.holdout_videos, extensions)
    trained = {v.resolve() for v in videos}
    both = [v for v in held if v.resolve() in trained]
    if both:
        raise UserError(f"{both[0]} is both a training video (data.videos) and a held-out one "
                        "(distill.holdout_videos): a held-out video must never be trained on")
    return videos, held


def build(cfg: Config) -> Pretraining:
    """DistInit's plugin: the teachers, a student with one head per teacher, one RGB clip per
    corpus video, and the held-out agreement measured after each epoch."""
    dc, dcfg = cfg.data, cfg.distill
    if not dcfg.teachers:
        raise UserError("distill needs at least one teacher: set distill.teachers in the config "
                        "(e.g. - {spec: 'torchvision:resnet50', weights: resnet50.pth})")
    if not dc.videos:
        raise UserError("distill needs data.videos: a folder of videos or a list file")
    teachers = build_teachers(dcfg.teachers)
    videos = list_videos(dc.videos, dc.extensions)
    # no classifier: the heads sit beside it
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(dc))
    init_student(student, cfg.model)
    net = MultiHeadStudent(student, [t.num_classes for t in teachers])
    flow = dc.input == "flow"
    method = DistInit(net, teachers, [t.weight for t in dcfg.teachers], dc.mean, dc.std,
                      frames=dcfg.frames, num_frames=dcfg.num_frames,
                      temperature=dcfg.temperature, loss=dcfg.loss, max_entropy=dcfg.max_entropy,
                      teacher_view="rgb" if flow else "video", tau_squared=dcfg.tau_squared)
    # The teachers see RGB frames of the very clip whose flow the student sees.
    views = [View("rgb"), View("video", "flow", frames_of="rgb")] if flow else None
    cache = None
    if dcfg.target_cache:  # read the teachers' logits instead of running them in the step
        cache = TargetCache(cfg, videos, [t.num_classes for t in teachers])
    videos, held = held_out(videos, dcfg, dc.extensions)
    if cache is not None:
        cache.check(videos)
    dataset = clip_dataset(dc, videos, None, train_mode=True, seed=cfg.seed, views=views,
                           targets=cache)
    if not held:
        return Pretraining(method, dataset)
    rank, world = dist.rank_world()
    held_set = clip_dataset(replace(dc, num_test_clips=1), held, None, False, cfg.seed, views)
    loader = DataLoader(held_set, batch_size=cfg.optim.batch_size,
                        sampler=list(range(rank, len(held), world)))
    last: dict = {}  # the latest held-out measurement, with each clip's target entropy

    def on_epoch_end(epoch: int) -> dict:
        last.clear()
        last.update(holdout_agreement(method.student, method.targets, loader,
                                      Runtime.of(cfg, next(net.parameters()).device),
                                      per_clip=world == 1))
        return {k: v for k, v in last.items() if k != "entropies"}  # metrics.jsonl: scalars

    def finish(logs: dict) -> dict:
        # The final student, measured once more unless the run ended on an epoch's end (whose
        # measurement is in `logs`): a finished run reloaded, or a last epoch cut short
        # (fractional optim.epochs, stop_after).
        if "holdout_agree_t0" not in logs:
            on_epoch_end(-1)
        return {**last, "holdout_videos": len(held)}

    return Pretraining(method, dataset, on_epoch_end, finish)
