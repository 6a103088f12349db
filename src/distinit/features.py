"""`distinit extract-features`: pooled student features for every video in a folder or list."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distinit.build import (
    clip_dataset,
    init_student,
    input_channels,
    make_student,
    resolve_normalization,
)
from distinit.checkpoint import seed_all
from distinit.config import config_from_args
from distinit.data.video import list_videos
from distinit.dist import resolve_device
from distinit.errors import UserError
from distinit.models.students import forward_features
from distinit.train import resolve_precision, to_device, use_channels_last


@torch.no_grad()
def video_features(net: nn.Module, dataset: Dataset, num_videos: int, *, batch_size: int = 32,
                   num_workers: int = 0, device: torch.device | None = None,
                   amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled features averaged over each video's clips: (V', D) float32 for the V' videos with
    at least one readable clip, their labels (V',), and which of the `num_videos` those are (V,).
    Stand-in clips of unreadable videos (bad=1) are left out."""
    device = device or torch.device("cpu")
    was_training = net.training
    net.eval()
    sums: torch.Tensor | None = None
    counts = torch.zeros(num_videos)
    labels = torch.full((num_videos,), -1, dtype=torch.long)
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        b = to_device(batch, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            f = forward_features(net, b["video"]).float().cpu()  # (B, D)
        good = batch["bad"] == 0
        vid = batch["video_idx"][good]
        if sums is None:
            sums = torch.zeros(num_videos, f.shape[1], dtype=torch.float64)
        sums.index_add_(0, vid, f[good].double())
        counts.index_add_(0, vid, torch.ones(len(vid)))
        labels[vid] = torch.as_tensor(batch["label"])[good]
    net.train(was_training)
    seen = counts > 0
    return (sums[seen] / counts[seen, None]).float(), labels[seen], seen


@torch.no_grad()
def extract_features(cfg, out_path: str | Path) -> Path:
    """Average the student's pooled features over K uniform clips per video; save an .npz with
    `features` (N, D) float32 and `paths` (N,)."""
    if not cfg.data.videos:
        raise UserError("extract-features needs data.videos: a folder of videos or a list file")
    videos = list_videos(cfg.data.videos, cfg.data.extensions)
    cfg = resolve_normalization(cfg, cfg.model.weights)
    seed_all(cfg.seed)
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(cfg.data))
    if cfg.model.weights:
        init_student(student, replace(cfg.model, init="checkpoint"))
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    channels_last = use_channels_last(cfg.channels_last, device)
    student.to(device)
    if channels_last:
        student.to(memory_format=torch.channels_last_3d)
    dataset = clip_dataset(cfg.data, videos, None, train_mode=False, seed=cfg.seed)
    feats, _, keep = video_features(student, dataset, len(videos),
                                    batch_size=cfg.optim.batch_size,
                                    num_workers=cfg.data.num_workers, device=device,
                                    amp_dtype=amp, channels_last=channels_last)
    features = feats.numpy()
    paths = np.array([str(p) for p, k in zip(videos, keep.tolist(), strict=True) if k])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, features=features, paths=paths)
    print(f"wrote {len(paths)} x {features.shape[1]} features to {out_path}"
          + (f" ({int((~keep).sum())} unreadable videos skipped)" if (~keep).any() else ""))
    return out_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="distinit extract-features")
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    parser.add_argument("--out", required=True, help="output .npz file")
    ns = parser.parse_intermixed_args(argv)
    extract_features(config_from_args(ns.args), ns.out)
    return 0
