"""The decoded-clip store: every frame of every video decoded once and resized once so its short
side is `data.resize`, kept in memory-mapped shards (`distinit.data.stores.shards`) as raw uint8 or
JPEG (`data.store_codec`, `distinit.data.stores.frame_codec`). With
`data.cache=store` a loader then reads only the frames a clip needs (`frames.StoredFrames`), and
`ClipTransform`'s resize is a no-op on them: training neither decodes nor resizes. Built by
`distinit store-clips CONFIG.yaml` (`distinit.jobs.store_clips`) or by a run's preparation step
(`distinit.build.prepare_data`), never while a dataset is made.

A store lives in `data.cache_dir/<first 12 hex of the video list's digest>`, so the corpus, a
labeled train split and its test split each get their own under one cache_dir. A run on part of
a list (the corpus minus the videos DistInit holds out) reads the store of the whole list
(`find_clip_store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distinit.data.clips.transforms import resize_short_side
from distinit.data.stores import frame_codec, shards
from distinit.data.video.io import VideoDecodeError, check_decode_device, read_all_frames
from distinit.engine import dist
from distinit.errors import UserError

WHAT = "clip store"
COMMAND = "distinit store-clips CONFIG.yaml"


def store_folder(cache_dir: str | Path, videos: Sequence[str | Path]) -> Path:
    """Where the store made for exactly `videos` lives under `cache_dir`."""
    return Path(cache_dir) / shards.corpus_digest(videos)[:12]


def _fingerprint(corpus: str, resize: int, backend: str, frame_template: str = "",
                 codec: str = "raw", quality: int = frame_codec.QUALITY) -> dict:
    # What the frames depend on: the files (`corpus`: their digest), the resize and the decoder,
    # which files of a frame folder are frames, and how they are kept (the last two only when
    # not the default: older stores still fit). Not the decode device: it changes how fast they
    # are decoded, not which videos are stored.
    made = {"resize": int(resize), "backend": backend, "corpus": corpus}
    if frame_template:
        made["frame_template"] = frame_template
    return {**made, **frame_codec.settings(codec, quality)}


def resized_frames(frames: np.ndarray, size: int, chunk: int = 32) -> np.ndarray:
    """(T, H, W, 3) uint8 with the short side resized to `size` (0: as decoded): the resampling
    `ClipTransform` does per clip, rounded to uint8. `chunk` frames at a time bound the float copy
    of a long video."""
    if size == 0:
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W): resize works on (..., H, W)
    out = torch.cat([resize_short_side(x[i:i + chunk], size) for i in range(0, len(x), chunk)])
    return out.permute(0, 2, 3, 1).contiguous().numpy()  # (T, H', W', 3)


def build_clip_store(videos: Sequence[str | Path], cache_dir: str | Path, resize: int,
                     backend: str, shard_size: int = 16, device: str = "cpu",
                     wait: bool = False, frame_template: str = "", codec: str = "raw",
                     quality: int = frame_codec.QUALITY) -> Path:
    """Write (or finish) the store of `videos` under `cache_dir`: per video its frames, short
    side `resize`, as `codec` keeps them (`frame_codec`: raw, the array `frames` (T, H, W, 3)
    uint8; jpeg at `quality`). A video that does not decode is skipped (a dataset then skips it
    too). A shard is assembled in memory before it is written: 16 videos of ~300 frames at short
    side 128 are ~320 MB raw. Resumable and split across torchrun ranks (`shards.build`); a store
    there made with another resize, backend or codec is refused. `device="cuda"` decodes with
    torchcodec on the GPU. Another process building the same store: `wait` waits for it, else it
    is refused naming that process (`shards.build`). `frame_template`: data.frame_template."""
    check_decode_device(backend, device)  # before any video is decoded
    frame_codec.codec_of(codec)  # an unknown one before any video is decoded

    def make(video: Path) -> dict[str, np.ndarray]:
        frames = read_all_frames(video, backend, device, frame_template)
        if len(frames) == 0:
            raise VideoDecodeError(video, "the video has no frames")
        return frame_codec.encode_frames(resized_frames(frames, resize), codec, quality)

    corpus = shards.corpus_digest(videos)  # one stat of every file, for the folder and the check
    return shards.build(Path(cache_dir) / corpus[:12], WHAT,
                        _fingerprint(corpus, resize, backend, frame_template, codec, quality),
                        videos, shard_size, make, COMMAND, wait=wait,
                        elsewhere="set data.cache_dir to another folder")


def find_clip_store(cache_dir: str | Path, videos: Sequence[str | Path], resize: int,
                    backend: str, frame_template: str = "", codec: str = "raw",
                    quality: int = frame_codec.QUALITY) -> Path | None:
    """A complete, up-to-date store under `cache_dir` made with `resize`, `backend`,
    `frame_template` and `codec` (at `quality`) that holds every one of `videos`: the one made
    for exactly them, else one made for more (a corpus of which `videos` is the training part).
    None when there is none."""
    settings = _fingerprint("", resize, backend, frame_template, codec, quality)
    del settings["corpus"]  # checked below, against the list each store was made for
    root = Path(cache_dir)
    corpus = shards.corpus_digest(videos)
    exact = root / corpus[:12]
    others = sorted(p for p in root.iterdir() if p.is_dir() and p != exact) if root.is_dir() else []
    wanted = {str(Path(v).resolve()) for v in videos}
    for folder in [exact, *others]:
        try:
            manifest = shards.read_manifest(folder)
        except (OSError, UserError):
            continue  # none, or bad: building the exact one then refuses it in one line
        made = manifest["fingerprint"]
        if manifest.get("what") != WHAT or {k: v for k, v in made.items()
                                             if k != "corpus"} != settings:
            continue
        listed = manifest["videos"]
        if not wanted <= {str(Path(v).resolve()) for v in listed} or not shards.complete(folder):
            continue  # complete: every shard with its checksum record (checked when read)
        same = listed == [str(v) for v in videos]
        if made.get("corpus") == (corpus if same else shards.corpus_digest(listed)):
            return folder  # else a file changed since it was built: stale
    return None


def clip_store_for(videos: Sequence[str | Path], cache_dir: str | Path, resize: int,
                   backend: str, device: str = "cpu", frame_template: str = "",
                   codec: str = "raw", quality: int = frame_codec.QUALITY) -> Path:
    """The folder of a store holding `videos` (`find_clip_store`), built first when there is
    none. Under torchrun every rank calls it: rank 0 looks, and all build together. Another
    process building that store already (`distinit store-clips`, another run): wait for it, then
    use it."""
    found = (find_clip_store(cache_dir, videos, resize, backend, frame_template, codec, quality)
             if dist.rank_world()[0] == 0 else None)
    found = dist.broadcast_object(None if found is None else str(found))
    if found is not None:
        return Path(found)
    if dist.rank_world()[0] == 0:
        print(f"{WHAT}: decoding {len(videos)} videos once into "
              f"{store_folder(cache_dir, videos)} (data.cache=store)", flush=True)
    return build_clip_store(videos, cache_dir, resize, backend, device=device, wait=True,
                            frame_template=frame_template, codec=codec, quality=quality)
