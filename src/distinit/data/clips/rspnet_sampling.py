"""RSPNet's clips (Chen et al., AAAI 2021): a query clip and two key clips of one video.

The official code (PeihaoChen/RSPNet) cuts two windows of `speed * clip_len` frames from a video
at independent random times (`datasets/classification/__init__.py:75`, `RandomStrideCrop`), one
for the query and one for the keys; then, per batch (`moco/builder_diffspeed_diffloss.py:422-447`,
half the batch each way), it plays each window at normal speed (its first clip_len frames) or at
`speed` (every speed-th frame): the query and its positive key at one speed, the negative key,
cut from the positive's own window (same crop, same augmentation), at the other.

Here the draws are per sample, as two pure functions of one numpy Generator, so that the
dataset's views (`data/clips/views.py`) cut them:

- `query_clip`: the query's frames and its speed label (0: normal, 1: `speed` times faster);
- `key_clips`: a (2, clip_len) array from one window, row 0 at normal speed and row 1 at
  `speed`; the method takes the row of the query's speed as the positive, the other as the
  negative, so the label of the query is the label of every clip.

Both windows start where a `speed` clip fits, whatever speed the clip plays at, so a clip's
start says nothing about its speed. A video shorter than the fast clip's span repeats its last
frame (indices are clipped), as `data/clips/pretext.py` does: the labels stay true to the sampling.
The official code instead loops a video of <= speed * clip_len frames and stretches a longer
one that is still too short (`transforms_temporal.py:16-22`), which changes the playback speed.
"""

from __future__ import annotations

import numpy as np

NORMAL, FAST = 0, 1  # speed labels; also the rows of `key_clips`


def _clip_span(clip_len: int, step: int) -> int:
    return (clip_len - 1) * step + 1


def _window_start(rng: np.random.Generator, num_frames: int, clip_len: int, speed: int,
                  stride: int) -> int:
    if speed < 2:
        raise ValueError(f"the fast clip's speed must be >= 2, got {speed}")
    span = _clip_span(clip_len, speed * stride)
    return int(rng.integers(0, max(num_frames - span, 0) + 1))


def _frames(start: int, clip_len: int, step: int, num_frames: int) -> np.ndarray:
    return np.clip(start + np.arange(clip_len) * step, 0, max(num_frames - 1, 0))


def query_clip(rng: np.random.Generator, num_frames: int, clip_len: int, speed: int = 2,
               stride: int = 1) -> tuple[np.ndarray, int]:
    """(frame indices (clip_len,), speed label): the query at normal speed (label 0, every
    `stride`-th frame) or `speed` times faster (label 1), each with probability 1/2."""
    label = int(rng.integers(0, 2))
    start = _window_start(rng, num_frames, clip_len, speed, stride)
    step = stride * (speed if label == FAST else 1)
    return _frames(start, clip_len, step, num_frames), label


def key_clips(rng: np.random.Generator, num_frames: int, clip_len: int, speed: int = 2,
              stride: int = 1) -> np.ndarray:
    """Frame indices (2, clip_len) of one window: row 0 at normal speed, row 1 at `speed`."""
    start = _window_start(rng, num_frames, clip_len, speed, stride)
    return np.stack([_frames(start, clip_len, stride, num_frames),
                     _frames(start, clip_len, speed * stride, num_frames)])


def _query(rng, num_frames, clip_len, stride, speed=2):
    idx, label = query_clip(rng, num_frames, clip_len, speed, stride)
    return idx, {"speed": label}


def _keys(rng, num_frames, clip_len, stride, speed=2):
    return key_clips(rng, num_frames, clip_len, speed, stride), {}


# name -> (rng, num_frames, clip_len, stride, **options) -> (indices, {label name: label}), the
# signature of `data.pretext.SAMPLERS`, which must list these for a view to name them.
SAMPLERS = {"rspnet_query": _query, "rspnet_keys": _keys}
