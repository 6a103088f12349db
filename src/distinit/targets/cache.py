"""The teacher-target cache (FKD's idea): run each teacher once over the corpus, store its logits,
and distill from the store instead of running the teachers in every step.

`distinit cache-targets CONFIG.yaml` draws K crop boxes per video from the training crop policy
(`data.resize`, `data.crop`, `data.scale`, `data.flip`; `distill.cache_crops`), runs every
teacher on every `distill.cache_frame_step`-th frame of each box, and stores per video:

- `boxes` (K, 5) int32: top, left, height, width, flip, in the resized frame;
- `size` (3,) int32: the video's frame count and resized height and width;
- per teacher i, `logits{i}` (F, K, C) float16, or with `distill.cache_dtype=topk` the top
  `cache_topk` logits `top{i}` (float16), their classes `idx{i}` (int32) and `rest{i}` (F, K)
  float32, the log of the summed exp of the other logits, which the reader spreads evenly over
  the other classes (each frame's softmax at temperature 1 keeps its top-k probabilities and
  its tail mass).

Training with `distill.target_cache=DIR`: the dataset cuts the student's clip from one of the
stored boxes (drawn per clip) and hands the method the cached logits of the clip's frames (the
nearest stored frame when `cache_frame_step` > 1); the method picks the teacher's frames from
those exactly as it picks pixels, and Eq. 1 is computed on them. A cache made with other
teachers, another crop policy, frame step or corpus is refused, never silently used.

Before it builds, `distinit cache-targets` prints the cache's expected size and the teachers'
FLOPs (`targets/cache_size.py`, from a probed sample of the corpus) and refuses in one line when
the folder's disk lacks the room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distinit.arguments import Parser
from distinit.config import Config, config_from_args
from distinit.data.clips.transforms import (
    Box,
    apply_box,
    draw_box,
    resize_short_side,
    to_float_clip,
)
from distinit.data.corpus.sample import DEFAULT_SAMPLE, sample_corpus
from distinit.data.stores import shards
from distinit.data.stores.disk_room import check_room, human_bytes
from distinit.data.video.io import list_videos, read_all_frames
from distinit.engine import dist
from distinit.engine.runtime import Runtime
from distinit.errors import UserError
from distinit.models.flops import frame_flops
from distinit.models.teachers import python_teacher_digest
from distinit.targets.cache_size import cache_bytes, fixed_box, teacher_frames
from distinit.targets.teachers import build_teachers

WHAT = "teacher-target cache"
COMMAND = "distinit cache-targets CONFIG.yaml"


def _teacher_identity(t) -> dict:
    """What makes a teacher this teacher: its spec, its files' bytes, its preprocessing."""
    files = [t.weights] if t.weights else []
    kind, _, rest = t.spec.partition(":")
    if kind in ("ckpt", "torchscript") and rest:
        files.append(rest)
    digests = []
    for f in files:
        if not Path(f).is_file():
            raise UserError(f"teacher weights not found: {f}; set distill.teachers[].weights "
                            "(or the ckpt:/torchscript: path) to a file on disk")
        digests.append(shards.file_digest(f))
    if kind == "python":  # no file to hash: the function's weights and declared preprocessing
        digests.append(python_teacher_digest(t.spec))
    return {"spec": t.spec if kind not in ("ckpt", "torchscript") else kind, "files": digests,
            "arch": t.arch, "input_size": t.input_size, "mean": list(t.mean), "std": list(t.std)}


def fingerprint(cfg: Config, videos: Sequence[str | Path]) -> dict:
    """Everything a cached target depends on; a cache whose fingerprint differs is stale."""
    dc, dcfg = cfg.data, cfg.distill
    return {"teachers": [_teacher_identity(t) for t in dcfg.teachers],
            "resize": dc.resize, "crop": dc.crop, "scale": list(dc.scale), "flip": dc.flip,
            "crops": dcfg.cache_crops, "frame_step": dcfg.cache_frame_step,
            "dtype": dcfg.cache_dtype, "topk": dcfg.cache_topk if dcfg.cache_dtype == "topk" else 0,
            "backend": dc.backend, "corpus": shards.corpus_digest(videos)}


def _corpus_key(video: Path, corpus: str) -> str:
    """`video`'s path relative to the corpus folder (a list file's folder); its name when it
    lies elsewhere."""
    root = Path(corpus) if corpus else video.parent
    root = root if root.is_dir() else root.parent
    try:  # not resolved: a video under a symlinked subfolder keeps its path in the corpus
        return video.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return video.name


def video_boxes(video: Path, height: int, width: int, cfg: Config) -> list[Box]:
    """The K boxes of one video: draws of the training crop policy from a generator seeded by the
    video's path within the corpus (`data.videos`, or a list file's folder), so every build (and
    every rank) draws the same. One box when the policy has no randomness on these frames (the
    crop is the whole frame, no flip, no scale jitter)."""
    dc = cfg.data
    if fixed_box(height, width, dc.crop, dc.scale, dc.flip):
        return [Box(0, 0, dc.crop, dc.crop, False)]
    # Not the absolute path: the same corpus in another folder (a fresh work_dir of real-demo)
    # must draw the same boxes, so give the same targets.
    seed = int.from_bytes(hashlib.sha1(_corpus_key(video, dc.videos).encode()).digest()[:7],
                          "little")
    g = torch.Generator().manual_seed(seed)
    return [draw_box(height, width, dc.crop, dc.scale, dc.flip, generator=g)
            for _ in range(cfg.distill.cache_crops)]


@torch.no_grad()
def video_targets(video: Path, cfg: Config, teachers, runtime: Runtime,
                  batch: int = 256) -> dict[str, np.ndarray]:
    """The stored arrays of one video (see the module docstring). Every teacher's logits are
    checked before they are stored: (N, C) of the classes it declares, finite and within
    float16's range, so a cache never holds a NaN or an inf (a `TeacherError` naming the video).
    The crops are cut `batch` frames at a time, never all of a video's boxes at once."""
    from distinit.models.teachers import TeacherError, check_logits

    dc, dcfg = cfg.data, cfg.distill
    frames = read_all_frames(video, dc.backend, frame_template=dc.frame_template)  # (T, H, W, 3) uint8
    num_frames = len(frames)
    rows = list(range(0, num_frames, dcfg.cache_frame_step))
    clip = to_float_clip(frames[rows])  # (3, F, H, W), as the dataset converts
    if dc.resize:
        clip = resize_short_side(clip, dc.resize)
    height, width = clip.shape[-2:]
    boxes = video_boxes(video, height, width, cfg)

    def pixels():
        """Rows [s, s + batch) of the (K * F, 3, crop, crop) crops, box k's F frames after box
        k - 1's: the very pixels the student's clip holds when it is cut from box k."""
        pending, count = [], 0
        for b in boxes:
            pending.append(apply_box(clip, b, dc.crop).transpose(0, 1))  # (F, 3, crop, crop)
            count += len(rows)
            while count >= batch:
                joined = torch.cat(pending)
                yield joined[:batch]
                pending, count = [joined[batch:]], count - batch
        if count:
            yield torch.cat(pending)

    out: dict[str, np.ndarray] = {
        "boxes": np.array([[b.top, b.left, b.height, b.width, int(b.flip)] for b in boxes],
                          dtype=np.int32),
        "size": np.array([num_frames, height, width], dtype=np.int32)}
    for i, teacher in enumerate(teachers):
        parts = []
        for chunk in pixels():
            with runtime.autocast():
                parts.append(teacher(chunk.to(runtime.device)).float().cpu())
        logits = torch.cat(parts)  # (K * F, C)
        name = getattr(teacher, "name", str(i))
        check_logits(name, logits, len(boxes) * len(rows), getattr(teacher, "num_classes", None),
                     finite=False)
        top = float(logits.abs().max())  # NaN when any logit is NaN
        if not top <= torch.finfo(torch.float16).max:
            what = "NaN or infinite logits" if not np.isfinite(top) else (
                f"logits as large as {top:.4g}")
            why = "" if not np.isfinite(top) else ", beyond the float16 (at most 65504) it stores"
            raise TeacherError(f"teacher {name} returns {what} on {video}{why}; the cache keeps "
                               "nothing of it: check the teacher's weights file and preprocessing "
                               "(distill.teachers[].mean, std, input_size), then run the same "
                               "command again")
        logits = logits.view(len(boxes), len(rows), -1).transpose(0, 1)  # (F, K, C)
        out.update(_encode(logits, i, dcfg.cache_dtype, dcfg.cache_topk))
    return out


def _encode(logits: torch.Tensor, i: int, dtype: str, topk: int) -> dict[str, np.ndarray]:
    if dtype == "float16":
        return {f"logits{i}": logits.half().numpy()}
    k = min(topk, logits.shape[-1])
    top = logits.topk(k, dim=-1)
    rest = logits.scatter(-1, top.indices, float("-inf")).logsumexp(-1)  # -inf when k == C
    return {f"top{i}": top.values.half().numpy(), f"idx{i}": top.indices.int().numpy(),
            f"rest{i}": rest.numpy()}


def decode_logits(arrays: dict[str, np.ndarray], i: int, num_classes: int) -> torch.Tensor:
    """Full (..., C) float32 logits of teacher i from what `_encode` stored."""
    if f"logits{i}" in arrays:
        return torch.from_numpy(np.asarray(arrays[f"logits{i}"])).float()
    top = torch.from_numpy(np.asarray(arrays[f"top{i}"])).float()
    idx = torch.from_numpy(np.asarray(arrays[f"idx{i}"])).long()
    rest = torch.from_numpy(np.asarray(arrays[f"rest{i}"])).float()
    others = max(num_classes - top.shape[-1], 1)
    fill = (rest - float(np.log(others))).unsqueeze(-1).expand(*rest.shape, num_classes)
    return fill.clone().scatter_(-1, idx, top)


class TargetCache:
    """Reads a cache for a run: refuses one made for other settings (`fingerprint`)."""

    def __init__(self, cfg: Config, corpus: Sequence[str | Path], num_classes: Sequence[int]):
        if not cfg.distill.target_cache:
            raise ValueError("distill.target_cache is empty")
        if cfg.data.input != "rgb":
            raise UserError("distill.target_cache serves RGB students; a flow student "
                            "(data.input=flow) distills from live teachers: unset it")
        expect = fingerprint(cfg, corpus)
        self.store = shards.Store(cfg.distill.target_cache, WHAT, expect, COMMAND)
        self.frame_step = cfg.distill.cache_frame_step
        self.num_classes = list(num_classes)
        self._small: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._names: list[list[str]] = []  # per teacher, the arrays it is stored as

    def check(self, videos: Sequence[str | Path]) -> None:
        missing = self.store.covers(videos)
        if missing:
            raise UserError(f"the teacher-target cache does not cover {len(missing)} videos of "
                            f"this run (e.g. {missing[0]}); rebuild it with {COMMAND}")

    def boxes(self, video: Path) -> tuple[np.ndarray, np.ndarray]:
        """(K, 5) boxes and (3,) size of a video; KeyError when the build skipped it."""
        key = str(video)
        if key not in self._small:  # read once per process: every clip of the video needs them
            if not self.store.has(video):
                raise KeyError(key)
            self._small[key] = (self.store.get(video, "boxes"), self.store.get(video, "size"))
        return self._small[key]

    def clip_logits(self, video: Path, frames: Sequence[int], box: int) -> list[torch.Tensor]:
        """Per teacher, (T, C) float32 logits of the clip's frames (the nearest stored frame) in
        box `box`."""
        rows = np.asarray(frames) // self.frame_step + (np.asarray(frames) % self.frame_step
                                                        > self.frame_step // 2)
        size = int(self.boxes(video)[1][0])
        rows = np.minimum(rows, (size - 1) // self.frame_step)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        out = []
        if not self._names:  # one layout for the whole cache (its fingerprint's dtype)
            self._names = [[f"logits{i}"] if self.store.has_array(video, f"logits{i}") else
                           [f"top{i}", f"idx{i}", f"rest{i}"] for i in range(len(self.num_classes))]
        for i, (c, names) in enumerate(zip(self.num_classes, self._names, strict=True)):
            arrays = {n: self.store.get(video, n, slice(lo, hi))[rows - lo, box] for n in names}
            out.append(decode_logits(arrays, i, c))
        return out


def cache_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a finished cache (of whatever settings)."""
    return shards.complete(folder)


def build_cache(cfg: Config, batch: int = 256, device: torch.device | None = None,
                wait: bool = True, teachers: Sequence[torch.nn.Module] | None = None) -> Path:
    """Write (or finish) the cache `distill.target_cache` of the config's corpus and teachers
    (`teachers`: those of `distill.teachers`, when already built). Another process building it:
    `wait` (a run's preparation step) waits for it and finishes what is left, else
    (`distinit cache-targets`) it is refused naming that process."""
    dc, dcfg = cfg.data, cfg.distill
    teachers = build_teachers(dcfg.teachers) if teachers is None else list(teachers)
    runtime = Runtime.of(cfg, device)
    for t in teachers:
        runtime.place(t)
    videos = list_videos(dc.videos, dc.extensions)
    return shards.build(dcfg.target_cache, WHAT, fingerprint(cfg, videos), videos,
                        dcfg.cache_shard_size,
                        lambda v: video_targets(v, cfg, teachers, runtime, batch), COMMAND,
                        wait=wait, elsewhere="set distill.target_cache to another folder")


def announce(cfg: Config, teachers: Sequence[torch.nn.Module], show: bool = True,
             check: bool = True) -> None:
    """Before a build: its expected size and teacher compute (from a probed sample of the
    corpus, `targets/cache_size.py`), printed when `show`; with `check`, refused in one line
    when the folder's disk lacks the room for what is not written yet."""
    dc, dcfg = cfg.data, cfg.distill
    sample = sample_corpus(list_videos(dc.videos, dc.extensions), DEFAULT_SAMPLE, dc.backend,
                           dc.frame_template)
    size = cache_bytes(sample, dc, dcfg, [t.num_classes for t in teachers])
    frames = teacher_frames(sample, dc, dcfg)
    per_frame = sum(frame_flops(t, dc.crop) for t in teachers)
    written = sum(f.stat().st_size for f in Path(dcfg.target_cache).glob("shard-*.safetensors"))
    if show:
        spread = f" +-{size.rel_error:.0%}" if size.rel_error >= 0.005 else ""
        print(f"{WHAT}: expect about {human_bytes(size.value)}{spread} "
              f"({human_bytes(written)} already written) and {frames.value * per_frame:.3g} "
              f"teacher FLOPs ({frames.value:,.0f} frames x {per_frame / 1e9:.3g} GFLOP); "
              f"estimated from {sample.source}", flush=True)
    if check:
        check_room(dcfg.target_cache, size.value - written, WHAT,
                   "set distill.target_cache to a folder on a disk with room (or fewer "
                   "distill.cache_crops, a larger distill.cache_frame_step, "
                   "distill.cache_dtype=topk)")


def main(argv: list[str]) -> int:
    """`distinit cache-targets CONFIG.yaml [key=value ...]`."""
    parser = Parser(
        prog="distinit cache-targets",
        description="Run the distill config's teachers once over its corpus and store their "
                    "logits for K crop boxes per video (distill.target_cache is the folder).")
    parser.add_argument("args", nargs="+", help="CONFIG.yaml [key=value ...]")
    parser.add_argument("--batch", type=int, default=256, help="frames per teacher forward")
    parser.add_argument("--no-room-check", action="store_true",
                        help="start even when the estimated size exceeds the free space (the estimate "
                             "comes from a sample; a compressing file system holds more)")
    ns = parser.parse_args(argv)
    cfg = config_from_args(ns.args)
    dc, dcfg = cfg.data, cfg.distill
    if not dcfg.target_cache:
        raise UserError("set distill.target_cache=DIR: the folder the cache is written to")
    if not dcfg.teachers:
        raise UserError("the config names no teachers (distill.teachers)")
    if not dc.videos:
        raise UserError("the config names no corpus (data.videos)")
    ctx = dist.setup(cfg.device, cfg.dist_timeout)
    teachers = build_teachers(dcfg.teachers)
    announce(cfg, teachers, ctx.is_main, check=not ns.no_room_check)
    out = build_cache(cfg, ns.batch, ctx.device, wait=False, teachers=teachers)
    if ctx.is_main:
        size = sum(f.stat().st_size for f in out.glob("shard-*.safetensors"))
        print(f"teacher-target cache: {out} ({size / 2**20:.1f} MiB)")
    return 0
