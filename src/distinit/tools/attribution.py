"""Where a video network looks: Grad-CAM on the synthetic world's action videos, whose object
masks are known, so "it attends to the moving foreground" becomes a number.

`grad_cam` weights a residual stage's activations by the spatiotemporal mean of their gradient
(Selvaraju et al.), for one of two targets:
- `label=None`, the representation itself: half the squared norm of the pooled features, so a
  location counts as much as its features align with the clip's embedding (a pretrained
  encoder has no classes);
- `label=k`: the logit of class k (a fine-tuned network and the true class).

The share of the map inside the object's mask (`in_mask`) and the share of frames whose map
peaks on the object (`pointing`, the pointing game: robust to the blur of a coarse map) are
compared with the mask's share of the frame (`area`): a network blind to the object scores
about `area` on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distinit.data.clips.transforms import ClipTransform, center_crop, resize_short_side
from distinit.data.synth import World
from distinit.data.synth.generate import make_recipe
from distinit.data.synth.items import action_frames_and_mask
from distinit.data.video.io import read_all_frames
from distinit.errors import UserError
from distinit.models.students import forward_features

STAGES = ("layer4", "layer3", "layer2", "layer1")
MIN_SIZE = 7  # the deepest stage whose maps are at least this wide (7 x 7 at 112 px: layer4)


def cam_layer(net: nn.Module, clip: torch.Tensor) -> nn.Module:
    """The deepest residual stage whose output is at least MIN_SIZE wide for `clip`."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [getattr(net, n).register_forward_hook(
        lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in STAGES if hasattr(net, n)]
    if not hooks:
        raise UserError(f"Grad-CAM needs a residual video network (layer1..layer4); "
                        f"{type(net).__name__} has none")
    with torch.no_grad():
        net(clip)
    for h in hooks:
        h.remove()
    for name in STAGES:
        if name in outputs and outputs[name].shape[-1] >= MIN_SIZE:
            return getattr(net, name)
    return getattr(net, [n for n in reversed(STAGES) if n in outputs][0])


def grad_cam(net: nn.Module, clips: torch.Tensor, layer: nn.Module,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM of clips (B, C, T, H, W), upsampled to the clips: (B, T, H, W), >= 0.

    One backward for the batch: in eval mode each clip's target depends on that clip alone, so
    the gradient of their sum is each clip's own."""
    saved: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        saved["a"] = output

    hook = layer.register_forward_hook(keep)
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            x = clips.detach().requires_grad_(True)  # a grad path even with frozen weights
            if labels is None:
                target = 0.5 * forward_features(net, x).float().pow(2).sum()
            else:
                target = net(x).float().gather(1, labels[:, None]).sum()
            target.backward()
    finally:
        hook.remove()
        net.train(was_training)
    a, g = saved["a"].detach(), saved["a"].grad  # (B, D, t, h, w)
    cam = F.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1))  # (B, t, h, w)
    net.zero_grad(set_to_none=True)
    return F.interpolate(cam[:, None], size=clips.shape[2:], mode="trilinear",
                         align_corners=False)[:, 0]


def peak_in_mask(cam: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of frames whose map peaks on the object (the pointing game; mask > 0.5)."""
    flat = cam.flatten(1)  # (T, H * W)
    hits = mask.flatten(1).gather(1, flat.argmax(1, keepdim=True)) > 0.5
    return float(hits.double().mean())


def in_mask(cam: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the map's mass where the object is (mask: coverage 0..1, same shape)."""
    total = cam.sum()
    return float((cam * mask).sum() / total) if total > 0 else float("nan")


@dataclass
class Clip:
    video: torch.Tensor  # (C, T, H, W), normalised, as the network sees it
    pixels: torch.Tensor  # (T, H, W, 3) uint8 after the same resize and crop, for pictures
    mask: torch.Tensor  # (T, H, W) object coverage after the same resize and crop
    label: int


def world_clips(world: World, videos: list[Path], labels: list[int], clip_len: int, stride: int,
                resize: int, crop: int, mean, std) -> list[Clip]:
    """The centre clip of each action video with its object mask, preprocessed for evaluation."""
    recipe = make_recipe(world.root, world.seed, world.params)
    transform = ClipTransform(train=False, resize=resize or None, crop=crop, mean=mean, std=std)
    index = {c: i for i, c in enumerate(recipe.action_classes)}
    clips = []
    for video, label in zip(videos, labels, strict=True):
        action, k = Path(video).stem.rsplit("_", 1)
        _, mask = action_frames_and_mask(recipe, index[action] * recipe.action_videos_per_class
                                         + int(k))
        frames = read_all_frames(video)
        span = (clip_len - 1) * stride + 1
        start = max(0, (len(frames) - span) // 2)
        rows = np.clip(np.arange(start, start + span, stride), 0, len(frames) - 1)

        def spatial(x: torch.Tensor) -> torch.Tensor:  # (..., H, W) like the clip
            return center_crop(resize_short_side(x, resize) if resize else x, crop)

        pixels = spatial(torch.from_numpy(frames[rows]).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        clips.append(Clip(transform(frames[rows]), pixels.contiguous(),
                          spatial(torch.from_numpy(mask[rows])).clamp(0, 1), label))
    return clips


def attribution(net: nn.Module, clips: list[Clip], fine_tuned: bool,
                batch_size: int = 64) -> dict:
    """Mean `in_mask` and `area` (%) over the clips, and each clip's map (for pictures)."""
    layer = cam_layer(net, clips[0].video[None])
    maps, shares, peaks = [], [], []
    for i in range(0, len(clips), batch_size):
        batch = clips[i:i + batch_size]
        labels = torch.tensor([c.label for c in batch]) if fine_tuned else None
        cams = grad_cam(net, torch.stack([c.video for c in batch]), layer, labels)
        maps += list(cams)
        shares += [in_mask(cam, c.mask) for cam, c in zip(cams, batch, strict=True)]
        peaks += [peak_in_mask(cam, c.mask) for cam, c in zip(cams, batch, strict=True)]
    shares_t = torch.tensor(shares, dtype=torch.float64)
    area = torch.stack([c.mask.mean() for c in clips]).double().mean()
    return {"in_mask": 100.0 * shares_t.nanmean().item(), "area": 100.0 * area.item(),
            "pointing": 100.0 * sum(peaks) / len(peaks),
            "layer": next(n for n in STAGES if getattr(net, n, None) is layer), "maps": maps}


def picture(clips: list[Clip], maps: dict[str, list[torch.Tensor]], path: Path,
            frame: int | None = None) -> Path:
    """One row per clip: the frame with the object's outline, then each network's map on it."""
    from distinit.tools.figures import _pyplot

    plt = _pyplot()
    names = list(maps)
    fig, axes = plt.subplots(len(clips), len(names) + 1, squeeze=False,
                             figsize=(1.6 * (len(names) + 1), 1.6 * len(clips)))
    for i, c in enumerate(clips):
        t = len(c.pixels) // 2 if frame is None else frame
        axes[i, 0].imshow(c.pixels[t].numpy())
        axes[i, 0].contour(c.mask[t].numpy(), levels=[0.5], colors="lime", linewidths=0.8)
        for j, name in enumerate(names, start=1):
            cam = maps[name][i][t]
            axes[i, j].imshow(c.pixels[t].numpy())
            axes[i, j].imshow(cam.numpy() / max(float(cam.max()), 1e-12), cmap="jet", alpha=0.5,
                              vmin=0, vmax=1)
            axes[i, j].contour(c.mask[t].numpy(), levels=[0.5], colors="white", linewidths=0.6)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("frame + object", fontsize=7)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(name, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
