"""How a clip store (`data.clip_store`) keeps a video's frames (`data.store_codec`): each codec
turns (T, H, W, 3) uint8 frames into the named arrays of one video in a shard, and reads back
the frames at given indices from them, decoding only those.

- `raw`: the array `frames`, (T, H, W, 3) uint8 as decoded and resized; a clip reads rows.
- `jpeg`: every frame a JPEG (4:2:0, `data.store_quality`) in one uint8 array `jpeg`, and
  `jpeg_ends` (T,) int64, where each frame's bytes end; a clip reads the bytes of its frames and
  decodes them (Pillow, libjpeg-turbo). At quality 90 about 6x smaller than raw on natural-like
  frames, and a clip costs 8 JPEG decodes instead of a copy (docs/BENCHMARKS.md, "Compressed
  clip store").

A new codec is an `encode` and a `read` function and one entry in `CODECS`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from distinit.errors import UserError

QUALITY = 90  # data.store_quality's default
# Reads an array of one stored video by name: whole (None), or only the given rows.
Get = Callable[[str, "slice | None"], np.ndarray]


@dataclass(frozen=True)
class Codec:
    encode: Callable[[np.ndarray, int], dict[str, np.ndarray]]  # (frames, quality) -> arrays
    read: Callable[[Get, Sequence[int]], np.ndarray]  # (get, sorted indices) -> (N, H, W, 3)
    count: str  # the array whose first dimension is the number of frames
    lossy: bool  # whether `quality` applies (and is part of a store's fingerprint)


def _encode_raw(frames: np.ndarray, quality: int) -> dict[str, np.ndarray]:
    return {"frames": frames}


def _read_raw(get: Get, indices: Sequence[int]) -> np.ndarray:
    # One contiguous read of rows first..last from the memory-mapped shard.
    first, last = min(indices), max(indices)
    rows = get("frames", slice(first, last + 1))
    return rows[[i - first for i in indices]]


def _encode_jpeg(frames: np.ndarray, quality: int) -> dict[str, np.ndarray]:
    chunks = []
    for frame in frames:  # (H, W, 3)
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=quality, subsampling="4:2:0")
        chunks.append(buf.getvalue())
    ends = np.cumsum([len(c) for c in chunks], dtype=np.int64)
    return {"jpeg": np.frombuffer(b"".join(chunks), np.uint8), "jpeg_ends": ends}


def _read_jpeg(get: Get, indices: Sequence[int]) -> np.ndarray:
    first, last = min(indices), max(indices)
    lo = max(first - 1, 0)
    ends = get("jpeg_ends", slice(lo, last + 1)).tolist()  # ends of frames lo..last

    def start(i: int) -> int:  # where frame i's bytes begin
        return ends[i - 1 - lo] if i > 0 else 0

    base = start(first)
    data = get("jpeg", slice(base, ends[last - lo]))  # one read: frames first..last
    out = []
    for i in indices:
        with Image.open(io.BytesIO(data[start(i) - base:ends[i - lo] - base])) as im:
            # RGB as encoded; convert() would copy every frame once more (a third of the time)
            out.append(np.asarray(im if im.mode == "RGB" else im.convert("RGB")))  # (H, W, 3)
    return np.stack(out)  # (N, H, W, 3)


CODECS = {
    "raw": Codec(_encode_raw, _read_raw, count="frames", lossy=False),
    "jpeg": Codec(_encode_jpeg, _read_jpeg, count="jpeg_ends", lossy=True),
}


def codec_of(name: str) -> Codec:
    if name not in CODECS:
        raise UserError(f"unknown store codec {name!r}; use one of {', '.join(CODECS)}")
    return CODECS[name]


def encode_frames(frames: np.ndarray, codec: str = "raw",
                  quality: int = QUALITY) -> dict[str, np.ndarray]:
    """The arrays that hold `frames` (T, H, W, 3) uint8 in a store, as `codec` keeps them."""
    return codec_of(codec).encode(frames, quality)


def decode_frames(get: Get, indices: Sequence[int], codec: str = "raw") -> np.ndarray:
    """(len(indices), H, W, 3) uint8: the frames at `indices` (sorted, unique) of one stored
    video whose arrays `get(name, rows)` reads; only those frames are decoded."""
    return codec_of(codec).read(get, indices)


def settings(codec: str = "raw", quality: int = QUALITY) -> dict:
    """What a store's fingerprint records of the codec: nothing for raw (so stores made before
    codecs existed still fit), else the codec and, for a lossy one, its quality."""
    if codec_of(codec).lossy:
        return {"codec": codec, "quality": int(quality)}
    return {} if codec == "raw" else {"codec": codec}


def describe(made: dict) -> str:
    """How a store with fingerprint `made` keeps its frames, e.g. 'jpeg at quality 90'."""
    codec = made.get("codec", "raw")
    return f"{codec} at quality {made['quality']}" if "quality" in made else codec
