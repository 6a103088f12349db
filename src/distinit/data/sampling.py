"""Which frames make a clip: pure functions from a video length to frame indices.

A clip is `clip_len` frames taken every `stride` frames, so it spans
`(clip_len - 1) * stride + 1` frames. A video shorter than that span still gives a full
clip: indices past the end are clamped to the last frame, which pads the clip by repeating
the last frame. Every function returns indices in increasing (non-decreasing) order.
"""

from __future__ import annotations

import random

import numpy as np


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
