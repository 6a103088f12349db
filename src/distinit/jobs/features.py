"""`distinit extract-features`: pooled student features for every video in a folder or list."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distinit.arguments import Parser
from distinit.build import (
    clip_dataset,
    init_student,
    input_channels,
    make_student,
    prepare_data,
    resolve_normalization,
)
from distinit.config import config_from_args
from distinit.data.video.io import list_videos
from distinit.engine.checkpoint import seed_all
from distinit.engine.runtime import Runtime
from distinit.errors import UserError
from distinit.jobs.evaluate import per_video
from distinit.models.students import forward_features


def video_features(net: nn.Module, dataset: Dataset, num_videos: int, *, batch_size: int = 32,
                   num_workers: int = 0, runtime: Runtime | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled features averaged over each video's clips: (V', D) float32 for the V' videos with
    at least one readable clip, their labels (V',), and which of the `num_videos` those are (V,).
    Stand-in clips of unreadable videos (bad=1) are left out."""
    was_training = net.training
    net.eval()
    sums, counts, labels = per_video(lambda b: forward_features(net, b["video"]), dataset,
                                     num_videos, runtime=runtime, batch_size=batch_size,
                                     num_workers=num_workers)
    net.train(was_training)
    seen = counts > 0
    return (sums[seen] / counts[seen, None]).float(), labels[seen], seen


@torch.no_grad()
def extract_features(cfg, out_path: str | Path) -> Path:
    """Average the student's pooled features over K uniform clips per video; save an .npz with
    `features` (N, D) float32 and `paths` (N,)."""
    if not cfg.data.videos:
        raise UserError("extract-features needs data.videos: a folder of videos or a list file")
    out_path = Path(out_path)
    if out_path.suffix != ".npz":  # np.savez would append .npz to any other name
        raise UserError(f"--out {out_path}: the features are a NumPy archive; give a name ending "
                        "in .npz")
    videos = list_videos(cfg.data.videos, cfg.data.extensions)
    cfg = resolve_normalization(cfg, cfg.model.weights)
    seed_all(cfg.seed)
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(cfg.data))
    if cfg.model.weights:
        init_student(student, replace(cfg.model, init="checkpoint"))
    rt = Runtime.of(cfg)
    rt.place(student)
    prepare_data(cfg.data, videos)
    dataset = clip_dataset(cfg.data, videos, None, train_mode=False, seed=cfg.seed)
    feats, _, keep = video_features(student, dataset, len(videos),
                                    batch_size=cfg.optim.batch_size,
                                    num_workers=cfg.data.num_workers, runtime=rt)
    features = feats.numpy()
    paths = np.array([str(p) for p, k in zip(videos, keep.tolist(), strict=True) if k])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, features=features, paths=paths)
    print(f"wrote {len(paths)} x {features.shape[1]} features to {out_path}"
          + (f" ({int((~keep).sum())} unreadable videos skipped)" if (~keep).any() else ""))
    return out_path


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit extract-features")
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    parser.add_argument("--out", required=True, help="output .npz file")
    ns = parser.parse_intermixed_args(argv)
    extract_features(config_from_args(ns.args), ns.out)
    return 0
