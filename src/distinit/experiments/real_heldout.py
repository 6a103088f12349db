"""`distinit real-demo`'s held-out segments: what the teacher says of each (once), the final
student's answers, the video prior it is compared with, and the run's own per-epoch curve."""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distinit.build import clip_dataset, input_channels, make_student
from distinit.config import Config
from distinit.engine.checkpoint import load_checkpoint, model_state
from distinit.methods.heads import MultiHeadStudent
from distinit.targets.cache import TargetCache
from distinit.targets.teachers import TeacherTargets, entropy, teacher_targets


class HeldOut:
    """The held-out segments' centre clips (those the run measures itself on), what the teacher
    says of each (once), and how often a student's top class is the teacher's clip-level one."""

    def __init__(self, cfg: Config, videos: list[Path], teacher) -> None:
        dc, d = replace(cfg.data, num_test_clips=1), cfg.distill
        self.videos = videos
        self.loader = DataLoader(clip_dataset(dc, videos, None, False, cfg.seed),
                                 batch_size=cfg.optim.batch_size)
        # The run's own loss settings: a baseline's loss is the student's, on the same targets.
        self.targets = TeacherTargets([teacher], dc.mean, dc.std, temperature=d.temperature,
                                      loss=d.loss, tau_squared=d.tau_squared)
        logits = torch.cat([self.targets.clip_logits(b)[0] for b in self.loader])  # (N, 1000)
        self.clip_targets = self.targets.clip_targets([logits])[0]
        self.teacher = logits.argmax(-1)
        self.entropy = entropy(teacher_targets(logits[:, None], 1.0)).mean().item()
        tau = cfg.distill.temperature
        self.target_entropy = entropy(teacher_targets(logits[:, None], tau)).mean().item()
        self.num_classes = logits.shape[1]

    @torch.no_grad()
    def student(self, cfg: Config, checkpoint: Path) -> torch.Tensor:
        """(N,) the top class of the student in `checkpoint` on each held-out clip."""
        net = MultiHeadStudent(make_student(cfg.model, 0, input_channels(cfg.data)),
                               [self.num_classes])
        net.load_state_dict(model_state(load_checkpoint(checkpoint)))
        net.eval()
        return torch.cat([net(b["video"])[0].argmax(-1) for b in self.loader])

    def agreement(self, predictions: torch.Tensor) -> float:
        return 100.0 * (predictions == self.teacher).float().mean().item()


def video_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


def video_prior(cfg: Config, train: list[Path], held: HeldOut) -> dict:
    """The video prior on the held-out segments: `rate`, % whose teacher class is the teacher's
    most frequent class on the training segments of the same video; `loss`, the soft-target
    loss (the student's) of answering each video's mean teacher target over its training
    segments. Each training segment's target: its cached logits averaged over every crop and
    frame, as the loss takes them (softmax at the temperature, or the logits for MSE)."""
    cache = TargetCache(cfg, train, [held.num_classes])
    votes: dict[str, Counter] = {}
    means: dict[str, list[torch.Tensor]] = {}
    for v in train:
        boxes, size = cache.boxes(v)
        frames = range(int(size[0]))
        logits = torch.stack([cache.clip_logits(v, frames, k)[0].mean(0)
                              for k in range(len(boxes))]).mean(0)
        votes.setdefault(video_of(v), Counter())[int(logits.argmax())] += 1
        means.setdefault(video_of(v), []).append(held.targets.clip_targets([logits[None]])[0][0])
    guess = torch.tensor([votes[video_of(v)].most_common(1)[0][0] if video_of(v) in votes else -1
                          for v in held.videos])
    known = [i for i, v in enumerate(held.videos) if video_of(v) in means]
    prior = {name: torch.stack(ts).mean(0) for name, ts in means.items()}
    if held.targets.loss == "ce":  # as logits: softmax(tau * log p / tau) = p
        prior = {name: cfg.distill.temperature * p.clamp_min(1e-12).log()
                 for name, p in prior.items()}
    scores = torch.stack([prior[video_of(held.videos[i])] for i in known]) if known else None
    loss = (held.targets.per_example_loss(scores, held.clip_targets[known]).mean().item()
            if known else math.nan)
    return {"rate": held.agreement(guess), "loss": loss}


def held_out_curve(run: Path) -> list[dict]:
    """Per epoch, the run's own held-out measurement (metrics.jsonl): agreement with the
    teacher's clip-level top class, soft-target loss against its clip-level target, how many
    classes the student answers, and the last training loss logged by then."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            rows.append(json.loads(line))
    curve, loss = [], math.nan
    for r in rows:
        loss = r.get("loss", loss)
        if "holdout_agree_clip_t0" in r:
            curve.append({"epoch": len(curve) + 1, "step": r["step"],
                          "train_loss": round(loss, 4),
                          "agreement": round(r["holdout_agree_clip_t0"], 2),
                          "heldout_loss": round(r["holdout_loss_clip_t0"], 4),
                          "student_classes": r["holdout_classes_t0"]})  # 1: one class for all
    return curve


def per_video(held: HeldOut, predictions: torch.Tensor) -> dict[str, list]:
    """Per source video: [held-out agreement %, held-out segments]."""
    out = {}
    for name in sorted({video_of(v) for v in held.videos}):
        rows = torch.tensor([video_of(v) == name for v in held.videos])
        agree = (predictions[rows] == held.teacher[rows]).float().mean().item()
        out[name] = [round(100.0 * agree, 1), int(rows.sum())]
    return out
