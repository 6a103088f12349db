"""Datasets of video clips and still images.

Randomness is a pure function of (seed, epoch, index), so augmentation is reproducible and a
resumed run continues exactly: call `set_epoch(epoch)` before iterating each epoch (the order
comes from `distinit.train.EpochSampler`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from distinit.data.sampling import test_clip_indices, train_clip_indices
from distinit.data.transforms import to_float_clip
from distinit.data.video import (
    IMAGE_EXTENSIONS,
    VideoDecodeError,
    probe,
    read_all_frames,
    read_frames,
)
from distinit.errors import UserError

CACHE_MODES = (None, "memory", "disk")

# transform(frames uint8 (T, H, W, C), generator) -> float (C, T, H, W)
Transform = Callable[..., torch.Tensor]


class BadVideoWarning(UserWarning):
    """A video could not be decoded and is being skipped."""


class NoReadableVideosError(UserError):
    """Every video of a dataset failed to decode."""


class ImageReadError(UserError):
    """A still image could not be read."""


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    # SeedSequence mixes the three numbers, so neighbouring (epoch, index) pairs are unrelated.
    return np.random.default_rng([seed % 2**64, epoch, index])


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class _EpochedDataset(Dataset):
    """A dataset whose items depend on the epoch, kept in shared memory so that persistent
    DataLoader workers see `set_epoch`."""

    def __init__(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose clips and augmentations items draw (call before iterating)."""
        self._epoch.fill_(int(epoch))


class VideoClipDataset(_EpochedDataset):
    """Clips cut from videos, decoded on the fly or from a cache of decoded frames.

    mode "train": one item per video, a random clip per access (see `train_clip_indices`).
    mode "test": `num_clips` (K) items per video; item i is clip i % K of video i // K.
    Items are dicts: video (C, T, H, W) float, label (-1 when unlabeled), video_idx,
    clip_idx, index, and bad.

    A video that fails to decode is warned about once (per process), remembered in
    `bad_files`, and replaced by the same clip of the next good video; that item has
    bad=1. DataLoader workers keep their own `bad_files`, so sum "bad" over an epoch to
    count, in the training process, the items that hit a bad video.

    cache "memory" keeps each decoded video (uint8) in this process (call `fill_cache()`
    before making worker processes so they share it); "disk" writes one .npy per video to
    `cache_dir`, shared by all processes and runs. `transform` is called as
    `transform(frames, generator=...)`; None only converts to float in [0, 1].
    """

    def __init__(self, videos: Sequence[str | Path], labels: Sequence[int] | None = None,
                 clip_len: int = 8, stride: int = 1, mode: str = "train", num_clips: int = 1,
                 transform: Transform | None = None, backend: str = "pyav",
                 cache: str | None = None, cache_dir: str | Path | None = None, seed: int = 0,
                 jitter: bool = True) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if cache not in CACHE_MODES:
            raise UserError(f"unknown cache mode {cache!r}; use one of none, memory, disk")
        if cache == "disk" and cache_dir is None:
            raise UserError("the disk cache needs a cache folder; set cache_dir")
        if not videos:
            raise UserError("the video dataset is empty; check the video folder or split file")
        if labels is not None and len(labels) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
        if num_clips < 1 or (mode == "train" and num_clips != 1):
            raise ValueError(f"num_clips must be 1 in train mode and >= 1 in test mode, got {num_clips}")
        self.videos = [Path(v) for v in videos]
        self.labels = None if labels is None else [int(label) for label in labels]
        self.clip_len, self.stride, self.mode, self.num_clips = clip_len, stride, mode, num_clips
        self.transform, self.backend, self.seed, self.jitter = transform, backend, seed, jitter
        self.cache = cache
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None and cache == "disk":
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.bad_files: set[Path] = set()
        self.bad_reasons: dict[Path, str] = {}
        super().__init__()
        self._num_frames: dict[int, int] = {}
        self._memory: dict[int, np.ndarray] = {}  # video_idx -> (T, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.videos) * self.num_clips

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        first_video, clip_idx = divmod(index, self.num_clips)
        for step in range(len(self.videos)):
            video_idx = (first_video + step) % len(self.videos)
            path = self.videos[video_idx]
            if path in self.bad_files:
                continue
            item_index = video_idx * self.num_clips + clip_idx
            try:
                video = self._load_clip(item_index, video_idx, clip_idx)
            except VideoDecodeError as e:
                self._mark_bad(path, e.reason)
                continue
            label = -1 if self.labels is None else self.labels[video_idx]
            return {"video": video, "label": label, "video_idx": video_idx, "clip_idx": clip_idx,
                    "index": item_index, "bad": int(item_index != index)}
        raise NoReadableVideosError(
            f"none of the {len(self.videos)} videos could be decoded ({self.bad_report()}); "
            "run `distinit check-videos` on the dataset and re-encode or remove the bad files"
        )

    def bad_report(self) -> str:
        """One line naming the videos this process could not decode ('' when none)."""
        if not self.bad_files:
            return ""
        names = [f"{p} ({self.bad_reasons[p]})" for p in sorted(self.bad_files)[:5]]
        more = ", ..." if len(self.bad_files) > 5 else ""
        return f"{len(self.bad_files)} of {len(self.videos)} videos skipped: {', '.join(names)}{more}"

    def fill_cache(self) -> None:
        """Decode every video into the cache now (skipping, and remembering, bad ones)."""
        if self.cache is None:
            raise ValueError("fill_cache() needs cache='memory' or cache='disk'")
        for video_idx, path in enumerate(self.videos):
            if path in self.bad_files:
                continue
            try:
                self._cached_frames(video_idx)
            except VideoDecodeError as e:
                self._mark_bad(path, e.reason)

    def clip_indices(self, index: int) -> list[int]:
        """The frame indices item `index` reads in the current epoch (probes the video if needed)."""
        video_idx, clip_idx = divmod(index, self.num_clips)
        return self._indices(index, video_idx, clip_idx, _item_rng(self.seed, self.epoch, index))

    def _mark_bad(self, path: Path, reason: str) -> None:
        if path not in self.bad_files:
            self.bad_files.add(path)
            self.bad_reasons[path] = reason
            warnings.warn(f"skipping video {path}: {reason}", BadVideoWarning, stacklevel=3)

    def _indices(self, index: int, video_idx: int, clip_idx: int,
                 rng: np.random.Generator) -> list[int]:
        num_frames = self._frame_count(video_idx)
        if self.mode == "train":
            return train_clip_indices(num_frames, self.clip_len, self.stride, rng, self.jitter)
        return test_clip_indices(num_frames, self.clip_len, self.stride, self.num_clips)[clip_idx]

    def _load_clip(self, index: int, video_idx: int, clip_idx: int) -> torch.Tensor:
        rng = _item_rng(self.seed, self.epoch, index)
        indices = self._indices(index, video_idx, clip_idx, rng)
        if self.cache is None:
            frames = read_frames(self.videos[video_idx], indices, self.backend)
        else:
            frames = np.ascontiguousarray(self._cached_frames(video_idx)[indices])
        # frames: (T, H, W, 3) uint8 -> video: (C, T, H, W) float
        if self.transform is None:
            return to_float_clip(frames)
        return self.transform(torch.from_numpy(frames), generator=_torch_generator(rng))

    def _frame_count(self, video_idx: int) -> int:
        if self.cache is not None:
            return len(self._cached_frames(video_idx))
        if video_idx not in self._num_frames:
            path = self.videos[video_idx]
            num_frames = probe(path, self.backend).num_frames
            if num_frames < 1:
                raise VideoDecodeError(path, "the video has no frames")
            self._num_frames[video_idx] = num_frames
        return self._num_frames[video_idx]

    def _cached_frames(self, video_idx: int) -> np.ndarray:
        """(T, H, W, 3) uint8 frames from the cache, decoding the video on a miss."""
        if self.cache == "memory":
            if video_idx not in self._memory:
                self._memory[video_idx] = self._decode_all(video_idx)
            return self._memory[video_idx]
        file = self._disk_cache_file(video_idx)
        if file.is_file():
            try:
                # Memory-mapped: cutting a clip reads only its frames from disk.
                return np.load(file, mmap_mode="r")
            except (OSError, ValueError, EOFError):
                pass  # a damaged cache file is rebuilt below
        frames = self._decode_all(video_idx)
        with tempfile.NamedTemporaryFile(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp",
                                         delete=False) as f:
            np.save(f, frames)
        # Written to a temporary name first, so a reader never sees half a file.
        os.replace(f.name, file)
        return frames

    def _decode_all(self, video_idx: int) -> np.ndarray:
        path = self.videos[video_idx]
        frames = read_all_frames(path, self.backend)
        if len(frames) < 1:
            raise VideoDecodeError(path, "the video has no frames")
        return frames

    def _disk_cache_file(self, video_idx: int) -> Path:
        path = self.videos[video_idx].resolve()
        try:
            st = path.stat()
        except OSError as e:
            raise VideoDecodeError(path, f"cannot read the file ({e.strerror})") from None
        # A changed file (new mtime or size) gets a new key, so a stale cache is never used.
        key = hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}|{self.backend}".encode()).hexdigest()
        assert self.cache_dir is not None
        return self.cache_dir / f"{path.stem[:40]}-{key[:16]}.npy"


def list_images(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[tuple[Path, int]], list[str]]:
    """ImageFolder layout root/<class>/<image>: (image path, label) pairs and sorted class names."""
    if not root.is_dir():
        raise ImageReadError(f"image folder not found: {root}; it should hold one folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = [(p, label) for label, name in enumerate(classes)
               for p in sorted((root / name).iterdir()) if p.suffix.lower() in extensions]
    if not samples:
        raise ImageReadError(
            f"no images ({', '.join(extensions)}) found in {root}/<class>/; check the folder"
        )
    return samples, classes


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy
    except (OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}; replace or delete the file") from None


class ImageFolderDataset(_EpochedDataset):
    """Still images in ImageFolder layout -> {"image": float (C, H, W), "label", "index"}.

    `cache=True` decodes every image once, up front, into one uint8 tensor (N, H, W, 3)
    when all share a size (a list otherwise); meant for small synthetic sets.
    `transform(image uint8 (H, W, C), generator=...)` -> (C, H, W), e.g. a `ClipTransform`.
    """

    def __init__(self, root: str | Path, transform: Transform | None = None, cache: bool = False,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, seed: int = 0) -> None:
        self.root = Path(root)
        self.samples, self.classes = list_images(self.root, extensions)
        self.transform, self.seed = transform, seed
        super().__init__()
        self._cache: torch.Tensor | list[torch.Tensor] | None = None
        if cache:
            images = [torch.from_numpy(read_image(p)) for p, _ in self.samples]
            same_size = len({tuple(im.shape) for im in images}) == 1
            self._cache = torch.stack(images) if same_size else images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        image = self._cache[index] if self._cache is not None else torch.from_numpy(read_image(path))
        if self.transform is None:
            out = to_float_clip(image.unsqueeze(0))[:, 0]  # (C, H, W)
        else:
            rng = _item_rng(self.seed, self.epoch, index)
            out = self.transform(image, generator=_torch_generator(rng))
        return {"image": out, "label": label, "index": index}
