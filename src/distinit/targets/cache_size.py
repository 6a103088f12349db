"""What a teacher-target cache (`targets/cache.py`) takes on disk and costs in teacher forwards,
estimated from a corpus sample (`data/corpus/sample.py`) before it is built: `distinit
cache-targets` checks the room with it and `distinit plan` shows it. Pure arithmetic over the
layout `video_targets` writes, per video:

- `boxes` (K, 5) int32 and `size` (3,) int32;
- per teacher i, over F = ceil(frames / distill.cache_frame_step) stored frames:
  float16: `logits{i}` (F, K, C) float16;
  topk: `top{i}` (F, K, k) float16, `idx{i}` (F, K, k) int32, `rest{i}` (F, K) float32.

K is `distill.cache_crops`, or 1 where the crop policy has no randomness on the video's frames
(`fixed_box`)."""

from __future__ import annotations

from collections.abc import Sequence

from distinit.config import DataConfig, DistillConfig
from distinit.data.corpus.sample import CorpusSample, Estimate, VideoShape, extrapolate
from distinit.data.stores.size import SHARD_BYTES, array_entry_bytes, stored_size


def fixed_box(height: int, width: int, crop: int, scale, flip: bool) -> bool:
    """Whether every draw of the crop policy on frames of this size is the same box (the crop is
    the whole frame, no flip, no scale jitter): then a cache stores one box, not K."""
    return not scale and not flip and (height, width) == (crop, crop)


def cached_frames(num_frames: int, frame_step: int) -> int:
    """Rows a video's cache keeps: frames 0, step, 2 x step, ... (`video_targets`)."""
    return -(-num_frames // frame_step)


def video_arrays(shape: VideoShape, dc: DataConfig, dcfg: DistillConfig,
                 classes: Sequence[int]) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (shape, bytes per element) of the arrays one video's cache entry holds."""
    h, w = stored_size(shape, dc.resize)
    k = 1 if fixed_box(h, w, dc.crop, dc.scale, dc.flip) else dcfg.cache_crops
    f = cached_frames(shape.num_frames, dcfg.cache_frame_step)
    out: dict[str, tuple[tuple[int, ...], int]] = {"boxes": ((k, 5), 4), "size": ((3,), 4)}
    for i, c in enumerate(classes):
        if dcfg.cache_dtype == "float16":
            out[f"logits{i}"] = ((f, k, c), 2)
        else:
            top = min(dcfg.cache_topk, c)
            out.update({f"top{i}": ((f, k, top), 2), f"idx{i}": ((f, k, top), 4),
                        f"rest{i}": ((f, k), 4)})
    return out


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def cache_bytes(sample: CorpusSample, dc: DataConfig, dcfg: DistillConfig,
                classes: Sequence[int]) -> Estimate:
    """The shard bytes of the cache of the sampled corpus for teachers of `classes` classes,
    safetensors headers included (manifest and checksum records not counted)."""
    shard = dcfg.cache_shard_size

    def per_video(s: VideoShape) -> float:
        arrays = video_arrays(s, dc, dcfg, classes)
        data = sum(_elements(shape) * size for shape, size in arrays.values())
        return data + sum(array_entry_bytes(f"v{shard - 1}/{name}", shape, shard * data)
                          for name, (shape, _) in arrays.items())

    est = extrapolate(sample, per_video)
    return Estimate(est.value + SHARD_BYTES * -(-sample.videos // shard), est.rel_error)


def teacher_frames(sample: CorpusSample, dc: DataConfig, dcfg: DistillConfig) -> Estimate:
    """Frames each teacher runs on to build the cache: K boxes x the stored frames, per video."""
    def per_video(s: VideoShape) -> float:
        boxes, _ = video_arrays(s, dc, dcfg, ())["boxes"]
        return boxes[0] * cached_frames(s.num_frames, dcfg.cache_frame_step)

    return extrapolate(sample, per_video)
