"""Colour augmentation steps for RGB training clips: MoCo v2's colour jitter, random grayscale
and Gaussian blur (facebookresearch/moco main_moco.py, `--aug-plus`), as transform-chain steps.

They work on float clips (C, T, H, W) in [0, 1], after the crop and before `Normalize`. Every
random number comes from the clip's `draws.generator`, in a fixed order, so a seed repeats a
clip bit for bit. By default one draw serves every frame of a clip (a video's colours change
together, as in CVRL; MSCL decides per clip whether to jitter but, through kornia, may draw the
factors per frame); `per_frame` draws afresh for each frame, in frame order (the official
auxSKD code). The pixel operations are torchvision's (an optional extra), imported
only when a colour step is built.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch

from distinit.data.clips.transforms import Draws, Step
from distinit.errors import UserError
from distinit.optional import import_torchvision

# One application of a step to frames (N, C, H, W): the frames and the generator it draws from.
_Apply = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


@functools.cache
def _functional() -> ModuleType:
    """torchvision.transforms.v2.functional, imported through the project's torchvision shim."""
    import_torchvision()
    return importlib.import_module("torchvision.transforms.v2.functional")


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _coin(p: float, generator: torch.Generator | None) -> bool:
    return float(torch.rand((), generator=generator)) < p


def _per_clip_or_frame(clip: torch.Tensor, generator: torch.Generator | None, per_frame: bool,
                       apply: _Apply) -> torch.Tensor:
    """Run `apply` once on all frames of (C, T, H, W), or once per frame, in frame order."""
    frames = clip.transpose(0, 1)  # (T, C, H, W)
    if per_frame:
        out = torch.cat([apply(frames[t:t + 1], generator) for t in range(frames.shape[0])])
    else:
        out = apply(frames, generator)
    return out.transpose(0, 1)  # (C, T, H, W)


@dataclass(frozen=True)
class ColorJitter:
    """With probability `p`, brightness, contrast, saturation and hue factors drawn uniformly
    from [1 - b, 1 + b], [1 - c, 1 + c], [1 - s, 1 + s] and [-h, h], applied in a random order
    (torchvision's RandomApply(ColorJitter(b, c, s, h), p)); a 0 leaves that property alone."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float = 0.8
    per_frame: bool = False

    def _apply(self, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not _coin(self.p, generator):
            return frames
        tf = _functional()
        # Draws in torchvision's order: the permutation, then one factor per property in use.
        order = torch.randperm(4, generator=generator).tolist()
        factors = [None if v == 0 else _uniform(max(0.0, 1 - v), 1 + v, generator)
                   for v in (self.brightness, self.contrast, self.saturation)]
        factors.append(None if self.hue == 0 else _uniform(-self.hue, self.hue, generator))
        ops = (tf.adjust_brightness, tf.adjust_contrast, tf.adjust_saturation, tf.adjust_hue)
        for i in order:
            if factors[i] is not None:
                frames = ops[i](frames, factors[i])
        return frames

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        return _per_clip_or_frame(clip, draws.generator, self.per_frame, self._apply)


@dataclass(frozen=True)
class RandomGrayscale:
    """With probability `p`, the luma (ITU-R 601) in all three channels."""

    p: float
    per_frame: bool = False

    def _apply(self, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not _coin(self.p, generator):
            return frames
        return _functional().rgb_to_grayscale(frames, num_output_channels=3)

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        return _per_clip_or_frame(clip, draws.generator, self.per_frame, self._apply)


@dataclass(frozen=True)
class GaussianBlur:
    """With probability `p`, a Gaussian blur of `kernel` x `kernel` pixels (reflected at the
    border) with sigma drawn uniformly from `sigma`."""

    kernel: int
    sigma: tuple[float, float] = (0.1, 2.0)
    p: float = 0.5
    per_frame: bool = False

    def _apply(self, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not _coin(self.p, generator):
            return frames
        s = _uniform(*self.sigma, generator)
        return _functional().gaussian_blur(frames, [self.kernel, self.kernel], [s, s])

    def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
        return _per_clip_or_frame(clip, draws.generator, self.per_frame, self._apply)


def blur_kernel(crop: int) -> int:
    """The odd kernel side nearest below 10% of the crop: 23 at 224 (SimCLR's rule, MoCo v2's
    blur), 11 at 112, 3 at 32; 1 (no blur) below 20."""
    return int(0.1 * crop) // 2 * 2 + 1


@dataclass(frozen=True)
class ColorAugment:
    """A run's colour augmentation settings (data.color_jitter, data.color_jitter_p,
    data.grayscale_p, data.blur_p, data.blur_sigma, data.color_per_frame); `steps` is what
    they add to a training chain, nothing when all are off."""

    jitter: Sequence[float] = ()
    jitter_p: float = 0.8
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: Sequence[float] = (0.1, 2.0)
    per_frame: bool = False

    def __post_init__(self) -> None:
        jitter, sigma = tuple(float(v) for v in self.jitter), tuple(float(v) for v in self.blur_sigma)
        if jitter and not (len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5):
            raise UserError(f"data.color_jitter is [brightness, contrast, saturation, hue], each "
                            f">= 0 and hue <= 0.5, e.g. [0.4, 0.4, 0.4, 0.1]; got {list(jitter)}")
        for key, p in (("color_jitter_p", self.jitter_p), ("grayscale_p", self.grayscale_p),
                       ("blur_p", self.blur_p)):
            if not 0 <= p <= 1:
                raise UserError(f"data.{key} is a probability in [0, 1]; got {p}")
        if not (len(sigma) == 2 and 0 < sigma[0] <= sigma[1]):
            raise UserError(f"data.blur_sigma is [min, max] with 0 < min <= max, e.g. [0.1, 2.0]; "
                            f"got {list(sigma)}")
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "blur_sigma", sigma)

    def steps(self, crop: int) -> list[Step]:
        """The steps, in MoCo v2's order (jitter, grayscale, blur), for clips of `crop` pixels.
        A step is left out when it cannot change a clip, so it draws no random numbers."""
        steps: list[Step] = []
        if self.jitter_p > 0 and any(self.jitter):
            steps.append(ColorJitter(*self.jitter, p=self.jitter_p, per_frame=self.per_frame))
        if self.grayscale_p > 0:
            steps.append(RandomGrayscale(self.grayscale_p, self.per_frame))
        if self.blur_p > 0:
            steps.append(GaussianBlur(blur_kernel(crop), self.blur_sigma, self.blur_p,
                                      self.per_frame))
        if steps:
            _functional()  # a missing torchvision fails here, before any video is decoded
        return steps
