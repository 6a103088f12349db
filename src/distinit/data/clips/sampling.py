"""Which frames make a clip: pure functions from a video length to frame indices.

A clip is `clip_len` frames taken every `stride` frames, so it spans
`(clip_len - 1) * stride + 1` frames. A video shorter than that span still gives a full
clip: indices past the end are clamped to the last frame, which pads the clip by repeating
the last frame. Every function returns indices in increasing (non-decreasing) order.

`sample_views` is a dataset item's sampling: the frames of each of its views (`data.views`), the
seeds of their augmentation and the labels of pretext samplers, all drawn from one generator.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distinit.data.clips.pretext import SAMPLERS
from distinit.data.clips.views import View


def clip_span(clip_len: int, stride: int) -> int:
    """Frames covered by one clip, first to last inclusive."""
    return (clip_len - 1) * stride + 1


def _check(num_frames: int, clip_len: int, stride: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len} and {stride}")


def _last_start(num_frames: int, clip_len: int, stride: int) -> int:
    return max(num_frames - clip_span(clip_len, stride), 0)


def clip_at(start: int, num_frames: int, clip_len: int, stride: int) -> list[int]:
    """The clip starting at frame `start`, clamped to the last frame."""
    return [min(start + i * stride, num_frames - 1) for i in range(clip_len)]


def train_clip_indices(num_frames: int, clip_len: int, stride: int,
                       rng: random.Random | np.random.Generator, jitter: bool = True) -> list[int]:
    """One training clip. With `jitter` (temporal jitter) its start is uniform over all starts
    that keep the clip inside the video; without it, the centre clip is returned.
    A video shorter than the clip always starts at 0 and is padded with its last frame.
    """
    _check(num_frames, clip_len, stride)
    if not jitter:
        return center_clip_indices(num_frames, clip_len, stride)
    last = _last_start(num_frames, clip_len, stride)
    if isinstance(rng, np.random.Generator):
        start = int(rng.integers(0, last + 1))
    else:
        start = rng.randint(0, last)
    return clip_at(start, num_frames, clip_len, stride)


def center_clip_indices(num_frames: int, clip_len: int, stride: int) -> list[int]:
    """The clip in the middle of the video (rounded towards the start)."""
    _check(num_frames, clip_len, stride)
    return clip_at(_last_start(num_frames, clip_len, stride) // 2, num_frames, clip_len, stride)


def test_clip_indices(num_frames: int, clip_len: int, stride: int, num_clips: int) -> list[list[int]]:
    """`num_clips` clips with uniformly spaced starts: the first starts at frame 0 and the
    last ends at the last frame. One clip is the centre clip. When the video has fewer
    possible starts than `num_clips`, clips repeat (always `num_clips` of them, so a dataset
    of K clips per video keeps a fixed length).
    """
    _check(num_frames, clip_len, stride)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if num_clips == 1:
        return [center_clip_indices(num_frames, clip_len, stride)]
    last = _last_start(num_frames, clip_len, stride)
    starts = [k * last // (num_clips - 1) for k in range(num_clips)]
    return [clip_at(s, num_frames, clip_len, stride) for s in starts]


# pytest collects module-level functions named test_*; this one is library code.
test_clip_indices.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ClipSpec:
    """How a dataset cuts clips. mode "train": one clip per item, at a random start with
    `jitter` (`train_clip_indices`); "test": `num_clips` uniformly spaced clips per video, each
    seen through `crops` spatial crops (1: the centre; 3: both ends and the centre of the long
    side, as SlowFast and MMAction2 test), item k of a video taking clip k // crops through
    crop k % crops (`test_clip_indices`)."""

    clip_len: int = 8
    stride: int = 1
    mode: str = "train"
    num_clips: int = 1
    jitter: bool = True
    crops: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {self.mode!r}")
        if self.num_clips < 1 or (self.mode == "train" and self.num_clips != 1):
            raise ValueError(f"num_clips must be 1 in train mode and >= 1 in test mode, "
                             f"got {self.num_clips}")
        if self.crops not in (1, 3) or (self.mode == "train" and self.crops != 1):
            raise ValueError(f"crops must be 1 in train mode and 1 or 3 in test mode, got "
                             f"{self.crops}")

    @property
    def per_video(self) -> int:
        """Items per video: clips x spatial crops."""
        return self.num_clips * self.crops


def clip_indices(num_frames: int, spec: ClipSpec, rng: np.random.Generator, clip_idx: int = 0,
                 rate: int = 1) -> list[int]:
    """Clip `clip_idx` of a video as `spec` cuts it, at playback `rate` (a stride `rate` times
    `spec.stride`). Draws one number from `rng` in train mode with jitter, none otherwise."""
    stride = spec.stride * rate
    if spec.mode == "train":
        return train_clip_indices(num_frames, spec.clip_len, stride, rng, spec.jitter)
    return test_clip_indices(num_frames, spec.clip_len, stride, spec.num_clips)[clip_idx]


@dataclass(frozen=True)
class ViewSample:
    """What one item draws. `indices`: each view's frames ((n, T) rows for a VCOP view); `seeds`:
    each view's augmentation seed (a view with `frames_of` shares its source's frames and seed);
    `labels`: pretext labels as `VIEW_LABEL`; `rng_seed`: for the method's own per-clip
    randomness; `box`: which of the video's `num_boxes` cached crop boxes the first view is cut
    from (None without boxes)."""

    indices: dict[str, list[int] | np.ndarray]
    seeds: dict[str, int]
    labels: dict[str, int]
    rng_seed: int
    box: int | None = None


def sample_views(views: Sequence[View], num_frames: int, spec: ClipSpec,
                 rng: np.random.Generator, clip_idx: int = 0, num_boxes: int = 0) -> ViewSample:
    """Draw an item's views from `rng`, in this order: the first view's frames, `rng_seed`, the
    first view's seed, then for each later view its frames and seed (unless `frames_of`), and
    last the box. The order is part of the contract: a run repeats only if it stays the same."""
    labels: dict[str, int] = {}

    def cut(view: View) -> list[int] | np.ndarray:
        if not view.sampler:
            return clip_indices(num_frames, spec, rng, clip_idx, view.rate)
        options = dict(view.options)
        if "unlike" in options:  # the labels an earlier view drew, for a sampler to avoid
            prefix = f"{options['unlike']}_"
            options["unlike"] = {k[len(prefix):]: v for k, v in labels.items()
                                 if k.startswith(prefix)}
        indices, drawn = SAMPLERS[view.sampler](rng, num_frames, spec.clip_len,
                                                spec.stride * view.rate, **options)
        labels.update({f"{view.name}_{k}": v for k, v in drawn.items()})
        return indices

    first = views[0]
    picked = {first.name: cut(first)}
    rng_seed = int(rng.integers(2**62))
    seeds = {first.name: int(rng.integers(2**62))}
    for view in views[1:]:
        source = view.frames_of
        picked[view.name] = picked[source] if source else cut(view)
        seeds[view.name] = seeds[source] if source else int(rng.integers(2**62))
    box = int(rng.integers(num_boxes)) if num_boxes else None
    return ViewSample(picked, seeds, labels, rng_seed, box)
