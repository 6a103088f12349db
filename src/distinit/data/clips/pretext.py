"""Frame samplers of the pretext tasks auxSKD is combined with: which frames a clip reads, and
its label. Pure functions of a numpy Generator, so a dataset can draw them from its per-item RNG.

- **VSPP** (auxSKD's Video Segment Pace Prediction): the clip is cut into `segments` equal
  segments; one of them plays at speed s (every s-th frame), the others at normal speed. Labels:
  s - 1 (0..max_speed - 1) and the altered segment (0..segments - 1). Speed 1 leaves the clip
  unaltered; its segment label is still drawn, as in the paper's 4 x 4 heads. With the option
  `unlike=VIEW` a view draws labels that differ from an earlier view's (auxSKD's pair).
- **Playback pace** (VideoPace / PRP): the whole clip plays at pace p; label p - 1.
- **VCOP** (clip order prediction): n clips in time order, shuffled by one of the n!
  permutations; label = that permutation's index in lexicographic order.

A video too short for the span a sample needs repeats its last frame (indices are clipped), so
the labels stay true to the sampling and no video is dropped.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from distinit.data.clips.rspnet_sampling import SAMPLERS as RSPNET_SAMPLERS


def _start(rng: np.random.Generator, num_frames: int, span: int) -> int:
    return int(rng.integers(0, max(num_frames - span, 0) + 1))


def _clip(indices: np.ndarray, num_frames: int) -> np.ndarray:
    return np.clip(indices, 0, max(num_frames - 1, 0))


def vspp_steps(clip_len: int, segments: int, speed: int, altered: int, stride: int = 1
               ) -> np.ndarray:
    """The step before each of the clip's frames (the first is 0): `speed * stride` between the
    consecutive frames of the altered segment, `stride` everywhere else. Segments are
    L = clip_len // segments frames (any remainder frames follow the last one at normal speed),
    so every segment's cue is the same L - 1 faster steps.

    The official code (Plrbear/auxSKD VSPP/datasets/ucf101.py:40-41, 80) reads frames
    `segment_start..segment_last` inclusive, L + 1 frames sharing their ends with the next
    segment, and its first segment starts the clip: the first segment's cue is one step shorter
    than the others' (L against L + 1 at 16 frames). Our first version copied that asymmetry
    (3 of 4 steps at 16 frames, 1 of 2 at 8); here the cue no longer depends on the label.
    """
    if not 1 <= segments <= clip_len:
        raise ValueError(f"segments must be in 1..clip_len ({clip_len}), got {segments}")
    if not 0 <= altered < segments:
        raise ValueError(f"altered segment must be in 0..{segments - 1}, got {altered}")
    length = clip_len // segments
    first = altered * length  # the altered segment's frames: first .. first + length - 1
    steps = np.full(clip_len, stride)
    steps[first + 1:first + length] = speed * stride
    steps[0] = 0
    return steps


def vspp_sample(rng: np.random.Generator, num_frames: int, clip_len: int, max_segment: int = 4,
                max_speed: int = 4, stride: int = 1, unlike: dict[str, int] | None = None
                ) -> tuple[np.ndarray, int, int]:
    """(frame indices (clip_len,), speed label, segment label) of one VSPP clip.

    `unlike`: the labels of another clip of the same item ({"speed": .., "segment": ..}); the
    speed and the segment are redrawn until both differ from it, as auxSKD's two clips do
    (Plrbear/auxSKD auxSKD/datasets/ucf101.py:35-37, 64-66)."""
    speed = int(rng.integers(1, max_speed + 1))
    altered = int(rng.integers(0, max_segment))
    if unlike is not None:
        while speed - 1 == unlike["speed"] and max_speed > 1:
            speed = int(rng.integers(1, max_speed + 1))
        while altered == unlike["segment"] and max_segment > 1:
            altered = int(rng.integers(0, max_segment))
    offsets = np.cumsum(vspp_steps(clip_len, max_segment, speed, altered, stride))
    start = _start(rng, num_frames, int(offsets[-1]) + 1)
    return _clip(start + offsets, num_frames), speed - 1, altered


def pace_sample(rng: np.random.Generator, num_frames: int, clip_len: int, max_pace: int = 4,
                stride: int = 1) -> tuple[np.ndarray, int]:
    """(frame indices, pace label): the whole clip at pace p (every p * stride-th frame)."""
    pace = int(rng.integers(1, max_pace + 1))
    offsets = np.arange(clip_len) * pace * stride
    start = _start(rng, num_frames, int(offsets[-1]) + 1)
    return _clip(start + offsets, num_frames), pace - 1


def vcop_orders(n_clips: int = 3) -> list[tuple[int, ...]]:
    """Every order of n clips, lexicographic: the label of an order is its index here."""
    return list(permutations(range(n_clips)))


def vcop_sample(rng: np.random.Generator, num_frames: int, clip_len: int, n_clips: int = 3,
                interval: int = 8, stride: int = 1) -> tuple[np.ndarray, int]:
    """(frame indices (n_clips, clip_len) in the shuffled order, order label): n clips `interval`
    frames apart in time, presented in one of the n! orders."""
    clip_span = (clip_len - 1) * stride + 1
    span = n_clips * clip_span + (n_clips - 1) * interval
    start = _start(rng, num_frames, span)
    starts = start + np.arange(n_clips) * (clip_span + interval)
    in_time = starts[:, None] + np.arange(clip_len)[None, :] * stride
    orders = vcop_orders(n_clips)
    label = int(rng.integers(0, len(orders)))
    return _clip(in_time[list(orders[label])], num_frames), label


def _vspp(rng, num_frames, clip_len, stride, max_segment=4, max_speed=4, unlike=None):
    idx, speed, segment = vspp_sample(rng, num_frames, clip_len, max_segment, max_speed, stride,
                                      unlike)
    return idx, {"speed": speed, "segment": segment}


def _pace(rng, num_frames, clip_len, stride, max_pace=4):
    idx, pace = pace_sample(rng, num_frames, clip_len, max_pace, stride)
    return idx, {"pace": pace}


def _vcop(rng, num_frames, clip_len, stride, n_clips=3, interval=8):
    idx, order = vcop_sample(rng, num_frames, clip_len, n_clips, interval, stride)
    return idx, {"order": order}


# name -> (rng, num_frames, clip_len, stride, **options) -> (indices, {label name: label})
SAMPLERS = {"vspp": _vspp, "pace": _pace, "vcop": _vcop, **RSPNET_SAMPLERS}
