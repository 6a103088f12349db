"""How big a corpus is, from a random sample of its videos: frame counts and frame sizes read from
container metadata (`video.probe`, no decoding), extrapolated to every video. What the store and
cache size estimates (`data/stores/size.py`, `targets/cache_size.py`) and `distinit plan` read."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distinit.data.video.io import VideoDecodeError, probe

# Videos probed when a command estimates what it writes: container metadata only, so ~10 ms each.
DEFAULT_SAMPLE = 32


@dataclass(frozen=True)
class VideoShape:
    num_frames: int
    height: int  # as decoded, before data.resize
    width: int


@dataclass(frozen=True)
class CorpusSample:
    """`videos` videos, of which `shapes` were probed (all of them when `exact`); `failed` of the
    sample did not probe (a store and a cache skip such videos too). `source` says where the
    shapes come from, for the reader of an estimate."""
    videos: int
    shapes: tuple[VideoShape, ...]
    failed: int = 0
    exact: bool = False
    source: str = ""


@dataclass(frozen=True)
class Estimate:
    """A corpus total extrapolated from a sample: `value`, and `rel_error`, one standard error of
    the sample mean relative to it (0 when every video was probed or all are alike)."""
    value: float
    rel_error: float = 0.0


def sample_corpus(videos: Sequence[str | Path], n: int, backend: str = "pyav",
                  frame_template: str = "", seed: int = 0) -> CorpusSample:
    """Probe `n` videos drawn at random (fixed by `seed`: every rank draws the same) out of
    `videos`; all of them when there are no more than `n`."""
    if n < 1:
        raise ValueError("a sample needs at least one video")
    picked = (list(range(len(videos))) if len(videos) <= n
              else sorted(random.Random(seed).sample(range(len(videos)), n)))
    shapes, failed = [], 0
    for i in picked:
        try:
            info = probe(videos[i], backend, frame_template=frame_template)
        except VideoDecodeError:
            failed += 1
            continue
        shapes.append(VideoShape(info.num_frames, info.height, info.width))
    what = "every video" if len(picked) == len(videos) else f"{len(picked)} random videos"
    return CorpusSample(len(videos), tuple(shapes), failed, len(picked) == len(videos),
                        f"{what} of {len(videos):,} probed")


def uniform_corpus(videos: int, num_frames: int, height: int, width: int) -> CorpusSample:
    """A corpus described rather than probed: `videos` videos of `num_frames` frames of
    `height` x `width` (e.g. Kinetics-400's training set, for a plan made without it)."""
    return CorpusSample(videos, (VideoShape(num_frames, height, width),), exact=True,
                        source=f"stated, not probed: {videos:,} videos of {num_frames} frames "
                               f"of {height}x{width} (HxW)")


def extrapolate(sample: CorpusSample, per_video: Callable[[VideoShape], float]) -> Estimate:
    """The sum of `per_video` over the corpus: the sample's mean times the number of videos that
    decode (the failed share of the sample is taken to fail in the corpus too)."""
    values = [per_video(s) for s in sample.shapes]
    if not values:
        return Estimate(0.0)
    probed = len(values) + sample.failed
    readable = sample.videos * len(values) / probed
    mean = sum(values) / len(values)
    if sample.exact or len(values) < 2 or mean == 0:
        return Estimate(readable * mean)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    fpc = max(0.0, 1 - probed / sample.videos)  # finite population: a large sample knows more
    return Estimate(readable * mean, math.sqrt(var / len(values) * fpc) / mean)
