"""Clip accuracy and video accuracy (softmax averaged over each video's K clips)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distinit import dist
from distinit.train import to_device


@torch.no_grad()
def evaluate(net: nn.Module, dataset: Dataset, num_videos: int, num_classes: int, *,
             batch_size: int = 16, num_workers: int = 0, device: torch.device | None = None,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             input_key: str = "video") -> dict:
    """Per-clip top-1, and per-video top-1/top-5 from the mean softmax over the video's clips.

    Under torchrun each process scores every world-th clip; sums are all-reduced, so the result
    is the same as one process scoring everything.
    """
    rank, world = dist.rank_world()
    device = device or torch.device("cpu")
    was_training = net.training
    net.eval()
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                        num_workers=num_workers)
    prob_sum = torch.zeros(num_videos, num_classes, dtype=torch.float64)
    labels = torch.full((num_videos,), -1, dtype=torch.long)
    clip_stats = torch.zeros(2, dtype=torch.float64)  # correct, total
    for batch in loader:
        b = to_device(batch, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = net(b[input_key])
        probs = logits.float().softmax(-1).cpu().double()  # (B, K)
        vid, y = batch["video_idx"], batch["label"]
        # A clip of an unreadable video arrives as a stand-in from another video (bad=1):
        # scoring it would count that other video twice.
        good = batch["bad"] == 0 if "bad" in batch else torch.ones(len(y), dtype=torch.bool)
        probs, vid, y = probs[good], vid[good], y[good]
        prob_sum.index_add_(0, vid, probs)
        labels[vid] = y
        clip_stats += torch.tensor([(probs.argmax(-1) == y).sum().item(), len(y)])
    for t in (prob_sum, clip_stats):
        dist.all_reduce_sum(t)
    dist.all_reduce_max(labels)  # fills the -1 of videos scored by other ranks
    net.train(was_training)
    seen = labels >= 0
    top5 = prob_sum[seen].topk(min(5, num_classes), dim=-1).indices
    y = labels[seen]
    hits = (top5[:, 0] == y).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, hits)
    per_class /= torch.bincount(y, minlength=num_classes).clamp_min(1)
    return {
        "per_class_top1": [round(100.0 * v, 2) for v in per_class.tolist()],
        "clip_acc": 100.0 * clip_stats[0].item() / max(1.0, clip_stats[1].item()),
        "top1": 100.0 * (top5[:, 0] == y).double().mean().item(),
        "top5": 100.0 * (top5 == y[:, None]).any(-1).double().mean().item(),
        "videos": int(seen.sum()),
        "clips": int(clip_stats[1].item()),
    }
