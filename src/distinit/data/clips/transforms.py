"""Clip transforms: uint8 frames (T, H, W, C) in, normalised float32 (C, T, H, W) out.

The functions after `to_float_clip` work on float clips (C, T, H, W) (any leading dims for
the spatial ones). Random choices are drawn once per clip, so every frame of a clip gets
the same crop and the same flip. A transform is a chain (`Compose`) of steps, each a small
callable `step(clip, draws)`; `ClipTransform` is the chain a run's `data` section describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distinit.data.flow.render import RenderFlow
from distinit.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClipSizeError(UserError, ValueError):
    """Frames are smaller than the crop (data.crop), after any resize (data.resize)."""


def to_float_clip(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (C, T, H, W) scaled to [0, 1]."""
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def output_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after resizing the short side to `size`, keeping the aspect ratio."""
    if height <= width:
        return size, max(int(size * width / height), 1)
    return max(int(size * height / width), 1), size


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (..., H, W) so its short side is `size` (bilinear, antialiased when shrinking).

    Float input stays float; uint8 input is resized in float and rounded back to uint8.
    """
    *lead, height, width = x.shape
    out_h, out_w = output_size(height, width, size)
    if (out_h, out_w) == (height, width):
        return x
    # interpolate wants (N, C, H, W); bilinear treats every plane alike, so fold all
    # leading dims into C.
    planes = x.reshape(1, -1, height, width)
    out = F.interpolate(planes.float(), size=(out_h, out_w), mode="bilinear",
                        align_corners=False, antialias=True)
    if x.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = out.to(x.dtype)
    return out.reshape(*lead, out_h, out_w)


def _check_crop(x: torch.Tensor, size: int) -> None:
    height, width = x.shape[-2:]
    if height < size or width < size:
        raise ClipSizeError(
            f"frames of {width}x{height} pixels are smaller than the crop size {size}; "
            f"resize the short side to at least {size} first (data.resize >= data.crop)"
        )


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` window of (..., H, W)."""
    return spatial_crop(x, size, 0, 1)


def spatial_crop(x: torch.Tensor, size: int, k: int, n: int) -> torch.Tensor:
    """Window k of n evenly spaced `size` x `size` windows along the long side of (..., H, W),
    centred on the short side: n = 3 gives the left (top), centre and right (bottom) crops of
    the 3-crop test (SlowFast's `uniform_crop`, MMAction2's `ThreeCrop`); n = 1 the centre."""
    _check_crop(x, size)
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    if n > 1:
        along = (width if width >= height else height) - size
        offset = along * k // (n - 1)
        top, left = (top, offset) if width >= height else (offset, left)
    return x[..., top:top + size, left:left + size]


@dataclass(frozen=True)
class Box:
    """Where a training clip is cut from its (resized) frames: a window, resized to the crop
    size when it is not that size already, and mirrored when `flip`. Drawn by `draw_box`,
    applied by `apply_box`; the teacher-target cache stores the boxes it ran its teachers on."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def draw_box(height: int, width: int, size: int, scale: Sequence[float] = (),
             flip: bool = False, ratio: Sequence[float] = (3 / 4, 4 / 3),
             generator: torch.Generator | None = None) -> Box:
    """The training crop policy on frames of `height` x `width`: a random `size` x `size` window,
    or with `scale` (scale jitter, torchvision's RandomResizedCrop) a random window covering a
    share of the area in `scale` with aspect ratio in `ratio`; then, with `flip`, a coin for the
    horizontal flip."""
    if not scale:
        if height < size or width < size:
            raise ClipSizeError(
                f"frames of {width}x{height} pixels are smaller than the crop size {size}; "
                f"resize the short side to at least {size} first (data.resize >= data.crop)")
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        mirror = flip and float(torch.rand((), generator=generator)) < 0.5
        return Box(top, left, size, size, mirror)
    area = height * width
    log_ratio = (float(np.log(ratio[0])), float(np.log(ratio[1])))
    h = w = min(height, width)  # fallback: the central square
    top, left = (height - h) // 2, (width - w) // 2
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = float(np.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0])))
        cw, ch = int(round((target * aspect) ** 0.5)), int(round((target / aspect) ** 0.5))
        if 0 < cw <= width and 0 < ch <= height:
            h, w = ch, cw
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            break
    # Then the flip, as torchvision's RandomResizedCrop followed by RandomHorizontalFlip (the
    # coin drawn after the window, so runs without data.flip draw what they always drew).
    mirror = flip and float(torch.rand((), generator=generator)) < 0.5
    return Box(top, left, h, w, mirror)


def apply_box(x: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Cut `box` from float (..., H, W), resize it to `size` x `size` when it is another size
    (bilinear, antialiased when shrinking), mirror it when the box says so."""
    height, width = x.shape[-2:]
    if box.top + box.height > height or box.left + box.width > width:
        raise ValueError(f"{box} does not fit frames of {width}x{height}")
    window = x[..., box.top:box.top + box.height, box.left:box.left + box.width]
    if (box.height, box.width) != (size, size):
        *lead, h, w = window.shape
        window = F.interpolate(window.reshape(1, -1, h, w).float(), size=(size, size),
                               mode="bilinear", align_corners=False,
                               antialias=h > size or w > size).to(x.dtype).reshape(*lead, size, size)
    return horizontal_flip(window) if box.flip else window


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random `size` x `size` window of (..., H, W), the same for all frames."""
    height, width = x.shape[-2:]
    return apply_box(x, draw_box(height, width, size, generator=generator), size)


def random_resized_crop(x: torch.Tensor, size: int, scale: Sequence[float],
                        ratio: Sequence[float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale jitter (Inception-style, torchvision's RandomResizedCrop): a random window covering
    a share of the area in `scale` with aspect ratio in `ratio`, resized to `size` x `size`.
    The same window for all frames of (..., H, W)."""
    height, width = x.shape[-2:]
    return apply_box(x, draw_box(height, width, size, scale, ratio=ratio, generator=generator),
                     size)


def horizontal_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror (..., H, W) left to right."""
    return x.flip(-1)


def scale_flow(flow: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """A flow field (2, ...) of (dx, dy) resized by `sx` in width and `sy` in height: a motion of
    d pixels spans d * sx (or d * sy) pixels of the resized frames."""
    if sx == 1 and sy == 1:
        return flow
    return flow * torch.tensor([sx, sy], dtype=flow.dtype).view(2, *(1,) * (flow.ndim - 1))


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(C, ...) float in [0, 1] -> (clip - mean) / std per channel."""
    shape = (-1,) + (1,) * (clip.ndim - 1)
    mean_t = torch.as_tensor(mean, dtype=clip.dtype).view(shape)
    std_t = torch.as_tensor(std, dtype=clip.dtype).view(shape)
    return (clip - mean_t) / std_t


@dataclass(frozen=True)
class Draws:
    """Where a clip's random choices come from: `generator`, and a crop `box` chosen elsewhere
    (the teacher-target cache's) that a crop step uses instead of drawing one."""

    generator: torch.Generator | None = None
    box: Box | None = None
    spatial: tuple[int, int] | None = None  # test crop k of n (`spatial_crop`); None: centre


# A step of a transform chain: float (C, T, H, W) and the clip's draws in, a float clip out.
# Adding an augmentation is writing one such step and putting it in the chain.
Step = Callable[[torch.Tensor, Draws], torch.Tensor]


@dataclass(frozen=True)
class ResizeShortSide:
    """Resize the short side to `size`; None keeps the frames as decoded, which must then be at
    least `crop` on their short side. A flow field (`flow`) has its vectors rescaled with it."""

    size: int | None
    crop: int
    flow: bool = False

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        if self.size is not None:
            out = resize_short_side(clip, self.size)
            if self.flow:
                (height, width), (out_h, out_w) = clip.shape[-2:], out.shape[-2:]
                out = scale_flow(out, out_w / width, out_h / height)
            return out
        if min(clip.shape[-2:]) < self.crop:
            height, width = clip.shape[-2:]
            raise ClipSizeError(
                f"frames of {width}x{height} pixels are smaller than data.crop={self.crop} and "
                f"data.resize is off (0); set data.crop to at most {min(height, width)}, or "
                f"data.resize to at least {self.crop} to scale the frames up")
        return clip


@dataclass(frozen=True)
class RandomCrop:
    """The training crop (`draw_box`: a random window, or with `scale` scale jitter; a coin for
    the flip when `flip`), or the box `draws` brings. A flow field (`flow`: channels (dx, dy))
    has its vectors rescaled with a window resized to the crop, and points the other way in x
    when mirrored."""

    crop: int
    scale: tuple[float, ...] = ()
    flip: bool = False
    flow: bool = False

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        box = draws.box
        if box is None:
            box = draw_box(*clip.shape[-2:], self.crop, self.scale, self.flip,
                           generator=draws.generator)
        clip = apply_box(clip, box, self.crop)
        if self.flow:
            clip = scale_flow(clip, self.crop / box.width, self.crop / box.height)
            if box.flip:
                clip[0] = -clip[0]
        return clip


@dataclass(frozen=True)
class EvalCrop:
    """The evaluation crop: the centre, or the test crop the item's draws name (3-crop test)."""

    crop: int

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        return spatial_crop(clip, self.crop, *(draws.spatial or (0, 1)))


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        return normalize(clip, self.mean, self.std)


class Compose:
    """A transform chain: uint8 frames (T, H, W, C) (float (T, H, W, 2) when `flow`) to float
    (C, T, H, W), then each step in turn. A single image (H, W, C) is treated as a one-frame clip
    and comes back as (C, H, W). Pass a `torch.Generator` to make the random choices
    reproducible, `box` to cut that crop instead of drawing one, and `spatial` (k, n) for test
    crop k of n instead of the centre."""

    def __init__(self, steps: Sequence[Step], flow: bool = False) -> None:
        self.steps, self.flow = list(steps), flow

    def __call__(self, frames: np.ndarray | torch.Tensor,
                 generator: torch.Generator | None = None, box: Box | None = None,
                 spatial: tuple[int, int] | None = None) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        image = frames.ndim == 3
        if image:
            frames = frames.unsqueeze(0)
        if self.flow:
            clip = frames.permute(3, 0, 1, 2).float()  # (2, T, H, W)
        else:
            clip = to_float_clip(frames)  # (C, T, H, W)
        draws = Draws(generator, box, spatial)
        for step in self.steps:
            clip = step(clip, draws)
        clip = clip.contiguous()
        return clip[:, 0] if image else clip


class ClipTransform(Compose):
    """Training or evaluation preprocessing of one clip, the chain a run's `data` section names.

    Train: short-side resize, random crop (or, with `scale`, a random window of that share of
    the area resized to the crop: scale jitter), random horizontal flip (p = 0.5 when `flip`),
    then the `color` steps (`distinit.data.clips.color`; none by default). Eval: short-side resize,
    centre crop. Then normalise with mean/std (after scaling to [0, 1]). `flow`: clips of flow
    vectors (T, H, W, 2), rescaled with every resize and never coloured, whose crop draws are
    the same as for RGB, so one generator seed gives an RGB clip and its flow the same crop
    and flip (colour draws come after the crop's).
    """

    def __init__(self, train: bool, resize: int | None, crop: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 flip: bool = True, scale: Sequence[float] = (), flow: bool = False,
                 color: Sequence[Step] = (), render: bool = False) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if resize is not None and resize < crop:  # caught here, before any video is decoded
            raise ClipSizeError(
                f"data.resize={resize} is smaller than data.crop={crop}: the frames' short side "
                f"is resized to {resize} pixels and a {crop}x{crop} crop cannot fit; set "
                f"data.resize to at least {crop} or data.crop to at most {resize}")
        if scale and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise UserError(f"data.scale is [min, max] shares of the frame's area with "
                            f"0 < min <= max <= 1, e.g. [0.35, 1]; got {list(scale)}")
        if color and (flow or not train):
            raise ValueError("colour steps are for RGB training clips, not flow or evaluation")
        self.train, self.resize, self.crop, self.flip = train, resize, crop, flip
        self.scale = tuple(float(v) for v in scale)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.color = tuple(color)
        crop_step = RandomCrop(crop, self.scale, flip, flow) if train else EvalCrop(crop)
        # `render`: flow drawn as colour-wheel images after its crop and flip (flow_render.py)
        self.render = (RenderFlow(),) if render and flow else ()
        super().__init__([ResizeShortSide(resize, crop, flow), crop_step, *self.color,
                          *self.render, Normalize(self.mean, self.std)], flow)

    def draw(self, height: int, width: int, generator: torch.Generator | None = None) -> Box:
        """A training crop of frames of `height` x `width` (after the resize)."""
        return draw_box(height, width, self.crop, self.scale, self.flip, generator=generator)

    def __repr__(self) -> str:
        return (f"ClipTransform(train={self.train}, resize={self.resize}, crop={self.crop}, "
                f"mean={self.mean}, std={self.std}, flip={self.flip}, scale={self.scale}, "
                f"flow={self.flow}, color={list(self.color)}, render={bool(self.render)})")
