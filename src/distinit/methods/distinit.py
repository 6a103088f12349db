"""DistInit (paper, Section 3): distill frozen still-image teachers into a video student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader

from distinit import dist
from distinit.build import (
    clip_dataset,
    holdout_split,
    init_student,
    input_channels,
    make_student,
)
from distinit.config import Config, DistillConfig
from distinit.data.video import list_videos
from distinit.data.views import View
from distinit.errors import UserError
from distinit.losses import (
    confidence_weights,
    entropy,
    logit_mse,
    soft_target_cross_entropy,
    teacher_targets,
    weighted_mean,
)
from distinit.methods.base import Method, Pretraining
from distinit.models.students import feature_dim, forward_features
from distinit.models.teachers import build_teacher
from distinit.runtime import Runtime
from distinit.target_cache import TargetCache, build_cache, cache_complete

SECTION = ("distill", DistillConfig)

FRAME_CHOICES = ("center", "random", "multi")


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


class DistInit(Method):
    """Soft targets from the teachers (Eq. 1), per-teacher losses (Eq. 2), weighted sum (Eq. 3).

    `trainable` is the student with one head per teacher. The teachers are frozen submodules:
    not trained, not saved in checkpoints (the config names their files) and never in DDP.
    """

    def __init__(self, net: MultiHeadStudent, teachers: Sequence[nn.Module],
                 teacher_weights: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 frames: str = "random", num_frames: int = 4, temperature: float = 1.0,
                 loss: str = "ce", max_entropy: float = 0.0, teacher_view: str = "video"):
        super().__init__(net)
        if loss not in ("ce", "mse"):
            raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
        if frames not in FRAME_CHOICES:
            raise ValueError(f"frames must be one of {FRAME_CHOICES}, got {frames!r}")
        self.freeze("teachers", nn.ModuleList(teachers))
        self.teacher_weights = list(teacher_weights)
        self.frames, self.num_frames = frames, num_frames
        self.temperature, self.loss, self.max_entropy = temperature, loss, max_entropy
        # The student reads `video`; the teachers read frames of `teacher_view`: the same RGB
        # clip, or for a flow student (the paper's Table 5) the RGB clip the flow was cut from.
        self.teacher_view = teacher_view
        # The student's clip is normalised for the student; teachers get [0, 1] pixels and apply
        # their own normalisation.
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def prepare(self, batch: dict) -> dict:
        """Teacher targets for a batch, and how many examples each teacher keeps (`counts`).

        The training loop sums `counts` over the global batch before the loss is computed, so
        the entropy-filtered loss is a mean over the kept examples of the whole global batch.
        """
        clip = batch[self.teacher_view]  # (B, 3, T, H, W)
        B, T = clip.shape[0], clip.shape[2]
        idx = frame_indices(B, T, self.frames, self.num_frames, batch.get("rng_seed"))
        pixels = None
        if "teacher_logits0" not in batch:  # live teachers: their frames of the clip
            frames = gather_frames(clip.transpose(1, 2), idx)  # (B, T', C, H, W)
            pixels = (frames.float() * self.std + self.mean).clamp(0, 1).flatten(0, 1)
        targets, keeps = [], []
        for i, teacher in enumerate(self.teachers):
            if pixels is None:  # the cache's logits of the same frames and crop
                t_logits = gather_frames(batch[f"teacher_logits{i}"].float(), idx)
            else:
                t_logits = teacher(pixels).float().view(B, idx.shape[1], -1)  # (B, T', K)
            t = teacher_targets(t_logits, self.temperature)  # (B, K)
            # MSE regresses the frame-averaged logits; CE matches the softmax targets
            targets.append(t_logits.mean(dim=1) if self.loss == "mse" else t)
            keeps.append(confidence_weights(t, self.max_entropy))
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
            if self.loss == "ce":
                per_example = soft_target_cross_entropy(s_logits, target, self.temperature)
            else:
                per_example = logit_mse(s_logits, target)
            loss_i = weighted_mean(per_example, keep, count)
            total = total + w * loss_i
            logs[f"loss_t{i}"] = loss_i.detach()
            logs[f"dropped_t{i}"] = 1.0 - keep.mean()
            logs[f"agree_t{i}"] = (s_logits.argmax(-1) == target.argmax(-1)).float().mean()
        return {"loss": total, **logs}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.student.backbone.state_dict()


@torch.no_grad()
def holdout_agreement(method: DistInit, loader, runtime: Runtime,
                      per_clip: bool = False) -> dict:
    """How well the student matches its teachers on clips it never trains on.

    For each teacher: `holdout_agree_t{i}`, the share of clips where the student's top class is
    the teacher's (%), `holdout_loss_t{i}`, the soft-target loss there, and
    `holdout_entropy_t{i}`, the mean entropy of the teacher's targets (nats); with `per_clip`,
    `entropies`: each teacher's target entropy of every clip. The student runs
    in eval mode (its BatchNorm statistics); sums are all-reduced across processes.
    """
    net = method.student  # under DDP: the student itself, no gradient syncing
    was_training = net.training
    net.eval()
    n_teachers = len(method.teachers)
    sums = torch.zeros(n_teachers, 4, dtype=torch.float64)  # agree, loss, entropy, count
    entropies: list[list[torch.Tensor]] = [[] for _ in range(n_teachers)]
    for batch in loader:
        b = method.prepare(runtime.batch(batch))
        with runtime.autocast():
            student_logits = net(b["video"])
        for i, (s, t) in enumerate(zip(student_logits, b["targets"], strict=True)):
            s = s.float()
            if method.loss == "ce":
                loss = soft_target_cross_entropy(s, t, method.temperature)
                probs = t
            else:
                loss = logit_mse(s, t)
                probs = t.softmax(-1)
            ent = entropy(probs).cpu()
            entropies[i].append(ent)
            sums[i] += torch.tensor([(s.argmax(-1) == t.argmax(-1)).sum().item(),
                                     loss.sum().item(), ent.sum().item(), len(s)],
                                    dtype=torch.float64)
    dist.all_reduce_sum(sums)
    net.train(was_training)
    out = {}
    for i, (agree, loss, ent, n) in enumerate(sums.tolist()):
        n = max(n, 1.0)
        out.update({f"holdout_agree_t{i}": 100.0 * agree / n, f"holdout_loss_t{i}": loss / n,
                    f"holdout_entropy_t{i}": ent / n})
    if per_clip:  # this process's clips only (the demo and figures run in one process)
        out["entropies"] = [torch.cat(e).tolist() if e else [] for e in entropies]
    return out


def build_teachers(dcfg: DistillConfig) -> list[nn.Module]:
    """The frozen teachers the `distill` section names."""
    return [build_teacher(t.spec, weights=t.weights or None, arch=t.arch or None,
                          input_size=t.input_size or None, mean=t.mean or None,
                          std=t.std or None) for t in dcfg.teachers]


def build(cfg: Config) -> Pretraining:
    """DistInit's plugin: the teachers, a student with one head per teacher, one RGB clip per
    corpus video, and the held-out agreement measured after each epoch."""
    dc, dcfg = cfg.data, cfg.distill
    if not dcfg.teachers:
        raise UserError("distill needs at least one teacher: set distill.teachers in the config "
                        "(e.g. - {spec: 'torchvision:resnet50', weights: resnet50.pth})")
    if not dc.videos:
        raise UserError("distill needs data.videos: a folder of videos or a list file")
    teachers = build_teachers(dcfg)
    videos = list_videos(dc.videos, dc.extensions)
    # no classifier: the heads sit beside it
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(dc))
    init_student(student, cfg.model)
    net = MultiHeadStudent(student, [t.num_classes for t in teachers])
    flow = dc.input == "flow"
    method = DistInit(net, teachers, [t.weight for t in dcfg.teachers], dc.mean, dc.std,
                      frames=dcfg.frames, num_frames=dcfg.num_frames,
                      temperature=dcfg.temperature, loss=dcfg.loss, max_entropy=dcfg.max_entropy,
                      teacher_view="rgb" if flow else "video")
    # The teachers see RGB frames of the very clip whose flow the student sees.
    views = [View("rgb"), View("video", "flow", frames_of="rgb")] if flow else None
    targets = None
    if dcfg.target_cache:  # read the teachers' logits instead of running them in the step
        if dcfg.cache_dtype == "topk" and dcfg.loss == "mse":
            raise UserError("distill.loss=mse regresses every logit, and a top-k cache keeps only "
                            "a few: use distill.loss=ce or a float16 cache")
        if not cache_complete(dcfg.target_cache):  # first use: run the teachers once now
            build_cache(cfg)
        targets = TargetCache(cfg, videos, [t.num_classes for t in teachers])
    videos, held = holdout_split(videos, dcfg.holdout)
    if targets is not None:
        targets.check(videos)
    dataset = clip_dataset(dc, videos, None, train_mode=True, seed=cfg.seed, views=views,
                           targets=targets)
    if not held:
        return Pretraining(method, dataset)
    rank, world = dist.rank_world()
    held_set = clip_dataset(replace(dc, num_test_clips=1), held, None, False, cfg.seed, views)
    loader = DataLoader(held_set, batch_size=cfg.optim.batch_size,
                        sampler=list(range(rank, len(held), world)))
    last: dict = {}  # the latest held-out measurement, with each clip's target entropy

    def on_epoch_end(epoch: int) -> dict:
        last.clear()
        last.update(holdout_agreement(method, loader,
                                      Runtime.of(cfg, next(net.parameters()).device),
                                      per_clip=world == 1))
        return {k: v for k, v in last.items() if k != "entropies"}  # metrics.jsonl: scalars

    def finish(logs: dict) -> dict:
        if not last:  # a finished run reloaded: measure its student once
            on_epoch_end(-1)
        return {**last, "holdout_videos": len(held)}

    return Pretraining(method, dataset, on_epoch_end, finish)
