"""Where a dataset's RGB frames come from: one call, `frames(video, indices)`, over a decoder (CPU,
or the GPU through torchcodec), a cache of decoded videos (in memory, or one .npy per video on
disk), or a clip store built ahead of the run. And `BadVideos`: the one place where a video that
fails to decode is replaced by the next good one and reported once.

Every source gives the same pixels for the same frames: a cache holds what the decoder gave, and
a store holds frames already resized the way `ClipTransform` resizes them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from distinit.data.stores import clip_store, frame_codec, shards
from distinit.data.video.frame_folders import check_frame_template
from distinit.data.video.io import (
    VideoDecodeError,
    check_decode_device,
    probe,
    read_all_frames,
    read_frames,
)
from distinit.errors import UserError

MAX_MAPPED = 4096  # disk-cache files a process keeps mapped (vm.max_map_count is ~65k)

T = TypeVar("T")


class NoReadableVideosError(UserError):
    """Every video of a dataset failed to decode."""


class FrameSource(Protocol):
    def num_frames(self, video: Path) -> int:
        """Frames of `video` (>= 1), or a VideoDecodeError."""

    def frames(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 frames at `indices` (sorted, unique), or a
        VideoDecodeError."""


def _no_frames(video: Path) -> VideoDecodeError:
    return VideoDecodeError(video, "the video has no frames")


class Decoder:
    """Decodes the frames a clip needs from the file, each time. `device="cuda"` decodes with
    torchcodec on the GPU (NVDEC) and copies the frames back as uint8: that spares the CPU the
    decoding. CUDA cannot start in a forked process, so its loaders need `num_workers=0` or the
    spawn start method. `frame_template` (data.frame_template): which files of a frame folder
    are its frames."""

    def __init__(self, backend: str = "pyav", device: str = "cpu", frame_template: str = "") -> None:
        check_decode_device(backend, device)  # before any video is decoded
        if frame_template:
            check_frame_template(frame_template)
        self.backend, self.device, self.frame_template = backend, device, frame_template
        self._num_frames: dict[Path, int] = {}  # probed once per process

    def num_frames(self, video: Path) -> int:
        if video not in self._num_frames:
            num_frames = probe(video, self.backend, self.device, self.frame_template).num_frames
            if num_frames < 1:
                raise _no_frames(video)
            self._num_frames[video] = num_frames
        return self._num_frames[video]

    def frames(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        return read_frames(video, indices, self.backend, device=self.device,
                           frame_template=self.frame_template)

    def all_frames(self, video: Path) -> np.ndarray:
        frames = read_all_frames(video, self.backend, self.device, self.frame_template)
        if len(frames) < 1:
            raise _no_frames(video)
        return frames


class MemoryCache:
    """Each video decoded whole on first use and kept (uint8) in this process. Fill it before
    making loader workers (`VideoClipDataset.fill_cache`) so that they share it."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._videos: dict[Path, np.ndarray] = {}  # (T, H, W, 3) uint8

    def all_frames(self, video: Path) -> np.ndarray:
        if video not in self._videos:
            self._videos[video] = self.decoder.all_frames(video)
        return self._videos[video]

    def num_frames(self, video: Path) -> int:
        return len(self.all_frames(video))

    def frames(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        return self.all_frames(video)[list(indices)]


class DiskCache:
    """One .npy of each decoded video in `folder`, written on first use and shared by every
    process and run; memory-mapped, so a clip reads only its frames from disk. A file changed
    since (new size or modification time) gets a new cache file."""

    def __init__(self, folder: str | Path, decoder: Decoder) -> None:
        self.folder, self.decoder = Path(folder), decoder
        self._mapped: dict[Path, np.ndarray] = {}  # files this process has mapped

    def all_frames(self, video: Path) -> np.ndarray:
        if video in self._mapped:
            return self._mapped[video]
        file = self.file(video)
        if file.is_file():
            try:
                frames = np.load(file, mmap_mode="r")
                if len(self._mapped) >= MAX_MAPPED:  # bounded: the kernel limits mappings
                    del self._mapped[next(iter(self._mapped))]
                self._mapped[video] = frames
                return frames
            except (OSError, ValueError, EOFError):
                pass  # a damaged cache file is rebuilt below
        frames = self.decoder.all_frames(video)
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{file.stem}.", suffix=".tmp",
                                         delete=False) as f:
            np.save(f, frames)
        # Written to a temporary name first, so a reader never sees half a file.
        os.replace(f.name, file)
        return frames

    def num_frames(self, video: Path) -> int:
        return len(self.all_frames(video))

    def frames(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        return self.all_frames(video)[list(indices)]

    def file(self, video: Path) -> Path:
        path = video.resolve()
        try:
            st = path.stat()
        except OSError as e:
            raise VideoDecodeError(path, f"cannot read the file ({e.strerror})") from None
        key = f"{path}|{st.st_mtime_ns}|{st.st_size}|{self.decoder.backend}"
        if self.decoder.frame_template:  # other frames of a frame folder (none: keys as before)
            key += f"|{self.decoder.frame_template}"
        return self.folder / f"{path.stem[:40]}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


class StoredFrames:
    """Frames from a clip store (`data.clip_store`, built before the run) that holds `videos`,
    kept as `codec` (at `quality`) keeps them: only the frames a clip needs are read (and
    decoded). Opened here so a missing or partial store, or one kept another way, fails now;
    each process (loader worker) memory-maps the shards itself on first use."""

    def __init__(self, folder: str | Path, videos: Sequence[Path], codec: str = "raw",
                 quality: int = frame_codec.QUALITY) -> None:
        self.folder = Path(folder)
        self.store = shards.Store(self.folder, clip_store.WHAT, command=clip_store.COMMAND)
        missing = self.store.covers(videos)
        if missing:
            raise UserError(f"the {clip_store.WHAT} at {self.folder} was made for other videos "
                            f"({len(missing)} of these are not in it, e.g. {missing[0]}); build "
                            f"one for them with {clip_store.COMMAND}")
        made = {k: v for k, v in self.store.fingerprint.items() if k in ("codec", "quality")}
        want = frame_codec.settings(codec, quality)
        if made != want:  # never read frames kept one way as another
            raise UserError(f"the {clip_store.WHAT} at {self.folder} keeps its frames as "
                            f"{frame_codec.describe(made)}, not {frame_codec.describe(want)} "
                            "(data.store_codec, data.store_quality); build one with these "
                            f"settings with {clip_store.COMMAND}")
        self.codec = codec
        self._count = frame_codec.codec_of(codec).count  # the array that counts the frames
        self._num_frames: dict[Path, int] = {}

    def num_frames(self, video: Path) -> int:
        if video not in self._num_frames:  # from the shard's header
            if not self.store.has(video):
                raise VideoDecodeError(video, "it did not decode when the clip store was built")
            self._num_frames[video] = self.store.shape(video, self._count)[0]
        return self._num_frames[video]

    def frames(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        return frame_codec.decode_frames(
            lambda name, rows: self.store.get(video, name, rows), indices, self.codec)


def frame_source(cache: str | None = None, folder: str | Path | None = None,
                 videos: Sequence[Path] = (), backend: str = "pyav",
                 device: str = "cpu", frame_template: str = "", codec: str = "raw",
                 quality: int = frame_codec.QUALITY) -> FrameSource:
    """The source `data.cache` names: None (decode every clip), "memory", "disk" (in `folder`),
    or "store" (the clip store in `folder`, which must hold `videos`, its frames kept as `codec`
    at `quality`: data.store_codec, data.store_quality). `frame_template`: which files of a
    frame folder are its frames (a store was built with it)."""
    if cache not in (None, "memory", "disk", "store"):
        raise UserError(f"unknown cache mode {cache!r}; use one of none, memory, disk, store")
    if cache in ("disk", "store") and folder is None:
        raise UserError("the disk cache needs a cache folder; set cache_dir" if cache == "disk"
                        else "cache='store' reads a clip store: set cache_dir to its folder")
    decoder = Decoder(backend, device, frame_template)
    if cache == "memory":
        return MemoryCache(decoder)
    if cache == "disk":
        return DiskCache(folder, decoder)
    if cache == "store":
        return StoredFrames(folder, videos, codec, quality)
    return decoder


class BadVideos:
    """Which of `videos` failed to decode. The flags are in shared memory, so every DataLoader
    worker, in this epoch and later ones, skips a bad video without decoding it again, and one
    line `warning: skipping video PATH: REASON` goes to stderr once, however many workers and
    epochs hit it. Names and reasons are kept in `files` and `reasons` of the process that found
    them (a worker's are lost with it)."""

    def __init__(self, videos: Sequence[Path]) -> None:
        self.videos = list(videos)
        # 1 = this video failed to decode. In shared memory so that workers,
        # which are new processes each epoch, see what earlier ones found.
        self.flags = torch.zeros(len(self.videos), dtype=torch.uint8).share_memory_()
        self.files: set[Path] = set()
        self.reasons: dict[Path, str] = {}

    def first_good(self, start: int, load: Callable[[int], T]) -> tuple[int, T]:
        """(i, load(i)) for the first video i from `start` on (wrapping around) that is not
        known to be bad and loads without a VideoDecodeError; each that fails is marked bad."""
        for step in range(len(self.videos)):
            i = (start + step) % len(self.videos)
            if self.flags[i]:
                continue
            try:
                return i, load(i)
            except VideoDecodeError as e:
                self.mark(i, e.reason)
        raise NoReadableVideosError(
            f"none of the {len(self.videos)} videos could be decoded ({self.report()}); "
            "run `distinit check-videos` on the dataset and re-encode or remove the bad files")

    def mark(self, i: int, reason: str) -> None:
        path = self.videos[i]
        self.files.add(path)
        self.reasons[path] = reason
        # Checked again just before setting: another worker may have found the same file
        # while this one was decoding it. (No lock, so two workers failing within the same
        # microsecond could both print.)
        if self.flags[i]:
            return
        self.flags[i] = 1
        # A plain line, not warnings.warn: that prints a line of library source with it,
        # and each new worker process would warn again.
        print(f"warning: skipping video {path}: {reason}", file=sys.stderr, flush=True)

    def report(self) -> str:
        """One line counting the videos skipped by any process and naming those this process
        found ('' when none)."""
        count = int(self.flags.sum())
        if not count:
            return ""
        names = [f"{p} ({self.reasons[p]})" for p in sorted(self.files)[:5]]
        listed = f": {', '.join(names)}{', ...' if count > len(names) else ''}" if names else ""
        return f"{count} of {len(self.videos)} videos skipped{listed}"
