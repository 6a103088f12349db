"""Clip accuracy and video accuracy (softmax averaged over each video's K clips)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from distinit.arguments import Parser
from distinit.data.corpus.record import comparability
from distinit.engine import dist
from distinit.engine.runtime import Runtime
from distinit.errors import UserError


@torch.no_grad()
def per_video(fn: Callable[[dict], torch.Tensor], dataset: Dataset, num_videos: int, *,
              runtime: Runtime | None = None, batch_size: int = 16, num_workers: int = 0,
              shard: bool = False, dim: int | None = None, on_clips: Callable | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run `fn(batch) -> (B, D)` over every clip and sum its outputs per video: (sums (V, D)
    float64, clip counts (V,), labels (V,), -1 where no clip was read).

    A clip of an unreadable video arrives as a stand-in from another video (bad=1) and is left
    out: scoring it would count that other video twice. `on_clips(outputs, labels)` sees the
    kept clips of each batch. With `shard` each torchrun process runs every world-th clip and
    the sums are all-reduced (`dim` must then be given), so every process gets the whole.
    """
    rt = runtime or Runtime()
    rank, world = dist.rank_world() if shard else (0, 1)
    loader = DataLoader(Subset(dataset, range(rank, len(dataset), world)), batch_size=batch_size,
                        num_workers=num_workers)
    sums = None if dim is None else torch.zeros(num_videos, dim, dtype=torch.float64)
    counts = torch.zeros(num_videos, dtype=torch.float64)
    labels = torch.full((num_videos,), -1, dtype=torch.long)
    for batch in loader:
        with rt.autocast():
            out = fn(rt.batch(batch)).float().cpu().double()  # (B, D)
        vid, y = batch["video_idx"], torch.as_tensor(batch["label"])
        good = batch["bad"] == 0 if "bad" in batch else torch.ones(len(vid), dtype=torch.bool)
        out, vid, y = out[good], vid[good], y[good]
        if sums is None:
            sums = torch.zeros(num_videos, out.shape[1], dtype=torch.float64)
        sums.index_add_(0, vid, out)
        counts.index_add_(0, vid, torch.ones(len(vid), dtype=torch.float64))
        labels[vid] = y
        if on_clips is not None:
            on_clips(out, y)
    if shard:
        for t in (sums, counts):
            dist.all_reduce_sum(t)
        dist.all_reduce_max(labels)  # fills the -1 of videos scored by other ranks
    return sums, counts, labels


@torch.no_grad()
def evaluate(net: nn.Module, dataset: Dataset, num_videos: int, num_classes: int, *,
             batch_size: int = 16, num_workers: int = 0, runtime: Runtime | None = None,
             input_key: str = "video", keep_probs: bool = False) -> dict:
    """Per-clip top-1, and per-video top-1/top-5 from the mean softmax over the video's clips.

    `keep_probs`: also return `video_probs` (V, K) float32, each video's mean softmax (NaN rows
    for videos with no readable clip), and `video_labels` (V,), for late fusion (`fuse`).

    Under torchrun each process scores every world-th clip; sums are all-reduced, so the result
    is the same as one process scoring everything.
    """
    was_training = net.training
    net.eval()
    clip_stats = torch.zeros(2, dtype=torch.float64)  # correct, total

    def count(probs: torch.Tensor, y: torch.Tensor) -> None:
        clip_stats.add_(torch.tensor([(probs.argmax(-1) == y).sum().item(), len(y)]))

    prob_sum, counts, labels = per_video(
        lambda b: net(b[input_key]).float().softmax(-1), dataset, num_videos, runtime=runtime,
        batch_size=batch_size, num_workers=num_workers, shard=True, dim=num_classes,
        on_clips=count)
    dist.all_reduce_sum(clip_stats)
    net.train(was_training)
    seen = labels >= 0
    y = labels[seen]
    hits = (prob_sum[seen].argmax(-1) == y).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, hits)
    per_class_n = torch.bincount(y, minlength=num_classes)
    per_class /= per_class_n.clamp_min(1)
    result = {
        # None (null in results.json) for a class with no scored test video: absent, not 0%.
        "per_class_top1": [round(100.0 * v, 2) if n else None
                           for v, n in zip(per_class.tolist(), per_class_n.tolist(), strict=True)],
        "clip_acc": 100.0 * clip_stats[0].item() / max(1.0, clip_stats[1].item()),
        **video_scores(prob_sum, labels),  # top1, top5, videos
        "clips": int(clip_stats[1].item()),
    }
    if keep_probs:
        result["video_probs"] = (prob_sum / counts[:, None]).float()  # 0 / 0 = NaN: never scored
        result["video_labels"] = labels
    return result


def video_scores(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Video top-1 / top-5 (%) of per-video class scores (V, K); rows with a label < 0 or a NaN
    (videos that were never scored) are left out."""
    seen = (labels >= 0) & ~probs.isnan().any(-1)
    top5 = probs[seen].topk(min(5, probs.shape[1]), dim=-1).indices
    y = labels[seen]
    return {"top1": 100.0 * (top5[:, 0] == y).double().mean().item(),
            "top5": 100.0 * (top5 == y[:, None]).any(-1).double().mean().item(),
            "videos": int(seen.sum())}


PREDICTIONS = "predictions.pt"  # per-video mean softmax of a fine-tuned student's test videos


def fuse(prediction_files: list[str | Path], weights: list[float] | None = None) -> dict:
    """Late fusion (two-stream style): the weighted mean of several runs' per-video softmax on
    the same test videos, scored like one run. Each file is a run's `predictions.pt`."""
    runs = [torch.load(Path(f), map_location="cpu", weights_only=True) for f in prediction_files]
    for f, r in zip(prediction_files[1:], runs[1:], strict=True):
        if r["videos"] != runs[0]["videos"] or r["classes"] != runs[0]["classes"]:
            raise UserError(f"{f} scores other test videos or classes than {prediction_files[0]}; "
                            "fuse runs evaluated on the same split of the same dataset")
    weights = weights or [1.0] * len(runs)
    probs = sum(w * r["probs"].double() for w, r in zip(weights, runs, strict=True)) / sum(weights)
    return video_scores(probs, runs[0]["labels"])


def _corpus(run: Path) -> dict | None:
    """The corpus a run's results.json records (None: no results.json, or one from before)."""
    try:
        return json.loads((run / "results.json").read_text()).get("corpus")
    except (OSError, ValueError, AttributeError):
        return None


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit fuse", description="Late fusion of fine-tuned runs (e.g. an RGB and a "
        "flow student): video top-1/top-5 of their weighted mean softmax on the test videos.")
    parser.add_argument("runs", nargs="+", help="run folders (or their predictions.pt), "
                                                 "fine-tuned or evaluated on the same split")
    parser.add_argument("--weights", default="", help="comma-separated, one per run (default "
                                                      "equal)")
    ns = parser.parse_args(argv)
    files = [Path(r) / PREDICTIONS if Path(r).is_dir() else Path(r) for r in ns.runs]
    for f in files:
        if not f.is_file():
            raise UserError(f"no {PREDICTIONS} at {f}; fine-tune or evaluate the run with this "
                            "version of distinit first (it writes one per run)")
    weights = [float(w) for w in ns.weights.split(",")] if ns.weights else None
    if weights is not None and len(weights) != len(files):
        raise UserError(f"--weights has {len(weights)} values for {len(files)} runs")
    result = fuse(files, weights)
    warning = comparability({str(f.parent): _corpus(f.parent) for f in files})
    if warning:  # same video paths, other files (a re-encoded copy): said, not refused
        print(warning)
    for f in files:
        alone = torch.load(f, map_location="cpu", weights_only=True)
        print(f"{f.parent}: top-1 {video_scores(alone['probs'], alone['labels'])['top1']:.2f}")
    print(json.dumps(result, indent=2))
    return 0
