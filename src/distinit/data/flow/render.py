"""Flow as a colour-wheel image (`data.flow_format: rgb`), the input MSCL's MoDist gives its
flow pathway.

MSCL divides each frame's flow by that frame's largest vector length
(`mmaction/datasets/pipelines/transforms_motion.py:7-29`, `norm_flow`), then renders it with
the Middlebury colour wheel to RGB in [0, 1] (`mmaction/models/common/ssl_aug.py:87-134`,
`FlowVisualizer`), with no mean/std normalisation after it (`ssl_aug_v2.py:61, 88`:
`normalize_flow=False`). torchvision's `flow_to_image` is the same wheel and the same
division by the largest length, so it is used per frame here.

Two deviations, both for the order of our transform chain:
- the largest length is taken over the crop, after the crop (MSCL: over the whole frame,
  before it), so a crop's colours are not washed out by motion outside it;
- a flip negates dx before the rendering, so a mirrored clip's colours show mirrored motion;
  MSCL flips the rendered image (`ssl_aug_v2.py:115-117`), which mirrors the pixels but keeps
  each pixel's hue, i.e. the direction of the unmirrored motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distinit.optional import import_torchvision


def flow_channels(flow_format: str) -> int:
    """The channels of a flow clip in `flow_format`: (dx, dy), or a colour-wheel image."""
    return 3 if flow_format == "rgb" else 2


def render_flow(clip: torch.Tensor) -> torch.Tensor:
    """(2, T, H, W) float flow -> (3, T, H, W) float colour-wheel images in [0, 1], each frame
    scaled by its own largest vector (its units do not matter)."""
    flow_to_image = import_torchvision().utils.flow_to_image
    frames = clip.permute(1, 0, 2, 3).float()  # (T, 2, H, W)
    images = torch.stack([flow_to_image(frame) for frame in frames])  # (T, 3, H, W) uint8
    return images.permute(1, 0, 2, 3).float().div_(255)


@dataclass(frozen=True)
class RenderFlow:
    """The transform step: after the crop and flip, before normalisation."""

    def __call__(self, clip: torch.Tensor, draws) -> torch.Tensor:
        return render_flow(clip)
