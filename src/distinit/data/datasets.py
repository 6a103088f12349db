"""Datasets of video clips and still images.

Items are addressed as `pass * len(dataset) + index` (what `distinit.sampler.StreamSampler`
yields): index i of pass p. Randomness is a pure function of (seed, pass, index), so
augmentation is reproducible, a resumed run continues exactly, and the same video seen in two
passes gets two different clips. Plain indices are pass 0.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from distinit import shards
from distinit.data import clip_store
from distinit.data.pretext import SAMPLERS
from distinit.data.sampling import test_clip_indices, train_clip_indices
from distinit.data.transforms import Box, to_float_clip
from distinit.data.video import (
    IMAGE_EXTENSIONS,
    VideoDecodeError,
    check_decode_device,
    probe,
    read_all_frames,
    read_frames,
)
from distinit.data.views import RGB, FlowSource, View, check_views
from distinit.errors import UserError
from distinit.sampler import split_index

CACHE_MODES = (None, "memory", "disk", "store")
MAX_MAPPED = 4096  # disk-cache files a process keeps mapped (vm.max_map_count is ~65k)

# transform(frames uint8 (T, H, W, C), generator) -> float (C, T, H, W)
Transform = Callable[..., torch.Tensor]


class NoReadableVideosError(UserError):
    """Every video of a dataset failed to decode."""


class ImageReadError(UserError):
    """A still image could not be read."""


def _item_rng(seed: int, pass_: int, index: int) -> np.random.Generator:
    # SeedSequence mixes the three numbers, so neighbouring (pass, index) pairs are unrelated.
    return np.random.default_rng([seed % 2**64, pass_, index])


def _split(item: int, size: int) -> tuple[int, int]:
    if item < 0:
        raise IndexError(item)
    return split_index(item, size)


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class VideoClipDataset(Dataset):
    """Clips cut from videos, decoded on the fly or from a cache of decoded frames.

    mode "train": one item per video, a random clip per access (see `train_clip_indices`).
    mode "test": `num_clips` (K) items per video; item i is clip i % K of video i // K.
    Items are dicts: video (C, T, H, W) float, label (-1 when unlabeled), video_idx,
    clip_idx, index, and bad.

    A video that fails to decode is replaced by the same clip of the next good video; that
    item has bad=1, so sum "bad" over an epoch to count the items that hit a bad video. It
    is flagged in shared memory, so every DataLoader worker, in this epoch and later ones,
    skips it without decoding it again, and one line `warning: skipping video PATH: REASON`
    goes to stderr once, however many workers and epochs hit it. Its name and reason are
    kept in `bad_files` and `bad_reasons` of the process that found it (a worker's are lost
    with it).

    cache "memory" keeps each decoded video (uint8) in this process (call `fill_cache()`
    before making worker processes so they share it); "disk" writes one .npy per video to
    `cache_dir`, shared by all processes and runs; "store" reads frames decoded and resized
    once, up front, from the clip store whose folder is `cache_dir` (`data.clip_store`: its
    `clip_store_for` finds or builds one), only the rows a clip needs. `transform` is called as
    `transform(frames, generator=...)`; None only converts to float in [0, 1].

    `decode_device="cuda"` decodes with torchcodec on the GPU (NVDEC) and copies the frames back
    to the CPU as uint8: that spares the CPU the decoding. CUDA cannot start in a forked
    process, so its loaders need `num_workers=0` or the spawn start method.

    `views` (`distinit.data.views`) makes each item a dict of named views of one video (an RGB
    clip, its flow from `flow`, a second clip ...); flow views go through `flow_transform`.
    The default is one RGB view, `video`.

    `targets` (a `distinit.target_cache.TargetCache`, training only): the `video` view is cut
    from one of the crop boxes the cache stored for the video (drawn per clip), and the item
    carries the cached teacher logits of its frames, `teacher_logits{i}` (T, C_i).
    """

    def __init__(self, videos: Sequence[str | Path], labels: Sequence[int] | None = None,
                 clip_len: int = 8, stride: int = 1, mode: str = "train", num_clips: int = 1,
                 transform: Transform | None = None, backend: str = "pyav",
                 cache: str | None = None, cache_dir: str | Path | None = None, seed: int = 0,
                 jitter: bool = True, views: Sequence[View] = RGB,
                 flow: FlowSource | None = None, flow_transform: Transform | None = None,
                 targets=None, decode_device: str = "cpu") -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if cache not in CACHE_MODES:
            raise UserError(f"unknown cache mode {cache!r}; use one of none, memory, disk, store")
        if cache == "disk" and cache_dir is None:
            raise UserError("the disk cache needs a cache folder; set cache_dir")
        if cache == "store" and cache_dir is None:
            raise UserError("cache='store' reads a clip store: set cache_dir to its folder")
        check_decode_device(backend, decode_device)  # before any video is decoded
        if not videos:
            raise UserError("the video dataset is empty; check the video folder or split file")
        if labels is not None and len(labels) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
        if num_clips < 1 or (mode == "train" and num_clips != 1):
            raise ValueError(f"num_clips must be 1 in train mode and >= 1 in test mode, got {num_clips}")
        check_views(views)
        if any(v.modality == "flow" for v in views) and flow is None:
            raise UserError("a flow view needs optical flow: set data.flow_dir to a folder "
                            "written by `distinit flow`")
        if targets is not None and (mode != "train" or transform is None):
            raise ValueError("cached teacher targets need train mode and a ClipTransform")
        self.views, self.flow, self.targets = tuple(views), flow, targets
        self.flow_transform = flow_transform
        self.videos = [Path(v) for v in videos]
        self.labels = None if labels is None else [int(label) for label in labels]
        self.clip_len, self.stride, self.mode, self.num_clips = clip_len, stride, mode, num_clips
        self.transform, self.backend, self.seed, self.jitter = transform, backend, seed, jitter
        self.cache = cache
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.decode_device = decode_device
        if self.cache_dir is not None and cache == "disk":
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Opened here so a missing or partial store fails now; each process (loader worker)
        # memory-maps the shards itself on first use.
        self._store = None
        if cache == "store":
            self._store = shards.Store(self.cache_dir, clip_store.WHAT, command=clip_store.COMMAND)
            missing = self._store.covers(self.videos)
            if missing:
                raise UserError(f"the {clip_store.WHAT} at {self.cache_dir} was made for other "
                                f"videos ({len(missing)} of these are not in it, e.g. "
                                f"{missing[0]}); build one for them with {clip_store.COMMAND}")
        self.bad_files: set[Path] = set()
        self.bad_reasons: dict[Path, str] = {}
        super().__init__()
        # 1 = this video failed to decode. In shared memory so that workers,
        # which are new processes each epoch, see what earlier ones found.
        self._bad = torch.zeros(len(self.videos), dtype=torch.uint8).share_memory_()
        self._num_frames: dict[int, int] = {}
        self._memory: dict[int, np.ndarray] = {}  # video_idx -> (T, H, W, 3) uint8
        self._mapped: dict[int, np.ndarray] = {}  # disk cache files this process has mapped

    def __len__(self) -> int:
        return len(self.videos) * self.num_clips

    def __iter__(self):  # one pass; indexing past len() reaches later passes
        return (self[i] for i in range(len(self)))

    def __getitem__(self, item: int) -> dict:
        pass_, index = _split(item, len(self))
        first_video, clip_idx = divmod(index, self.num_clips)
        for step in range(len(self.videos)):
            video_idx = (first_video + step) % len(self.videos)
            if self._bad[video_idx]:
                continue
            item_index = video_idx * self.num_clips + clip_idx
            try:
                views, rng_seed = self._load_views(item_index, video_idx, clip_idx, pass_)
            except VideoDecodeError as e:
                self._mark_bad(video_idx, e.reason)
                continue
            label = -1 if self.labels is None else self.labels[video_idx]
            return {**views, "label": label, "video_idx": video_idx, "clip_idx": clip_idx,
                    "index": item_index, "bad": int(item_index != index), "rng_seed": rng_seed}
        raise NoReadableVideosError(
            f"none of the {len(self.videos)} videos could be decoded ({self.bad_report()}); "
            "run `distinit check-videos` on the dataset and re-encode or remove the bad files"
        )

    def bad_report(self) -> str:
        """One line counting the videos skipped by any process and naming those this process
        found ('' when none)."""
        count = int(self._bad.sum())
        if not count:
            return ""
        names = [f"{p} ({self.bad_reasons[p]})" for p in sorted(self.bad_files)[:5]]
        listed = f": {', '.join(names)}{', ...' if count > len(names) else ''}" if names else ""
        return f"{count} of {len(self.videos)} videos skipped{listed}"

    def fill_cache(self) -> None:
        """Decode every video into the cache now (skipping, and remembering, bad ones)."""
        if self.cache not in ("memory", "disk"):
            raise ValueError("fill_cache() needs cache='memory' or cache='disk' (a clip store "
                             "is filled when it is built)")
        for video_idx in range(len(self.videos)):
            if self._bad[video_idx]:
                continue
            try:
                self._cached_frames(video_idx)
            except VideoDecodeError as e:
                self._mark_bad(video_idx, e.reason)

    def clip_indices(self, item: int) -> list[int]:
        """The frame indices item `item` reads (probes the video if needed)."""
        pass_, index = _split(item, len(self))
        video_idx, clip_idx = divmod(index, self.num_clips)
        return self._indices(index, video_idx, clip_idx, _item_rng(self.seed, pass_, index))

    def _mark_bad(self, video_idx: int, reason: str) -> None:
        path = self.videos[video_idx]
        self.bad_files.add(path)
        self.bad_reasons[path] = reason
        # Checked again just before setting: another worker may have found the same file
        # while this one was decoding it. (No lock, so two workers failing within the same
        # microsecond could both print.)
        if self._bad[video_idx]:
            return
        self._bad[video_idx] = 1
        # A plain line, not warnings.warn: that prints a line of library source with it,
        # and each new worker process would warn again.
        print(f"warning: skipping video {path}: {reason}", file=sys.stderr, flush=True)

    def _indices(self, index: int, video_idx: int, clip_idx: int,
                 rng: np.random.Generator, rate: int = 1) -> list[int]:
        num_frames, stride = self._frame_count(video_idx), self.stride * rate
        if self.mode == "train":
            return train_clip_indices(num_frames, self.clip_len, stride, rng, self.jitter)
        return test_clip_indices(num_frames, self.clip_len, stride, self.num_clips)[clip_idx]

    def _load_views(self, index: int, video_idx: int, clip_idx: int,
                    pass_: int) -> tuple[dict[str, torch.Tensor], int]:
        """({view name: clip}, a seed for the method's own per-clip randomness, e.g. DistInit's
        frames). All random draws come from (seed, pass, index); a view with `frames_of` reuses
        that view's frames and augmentation seed."""
        rng = _item_rng(self.seed, pass_, index)
        labels: dict[str, int] = {}

        def cut(view: View) -> list[int] | np.ndarray:
            if not view.sampler:
                return self._indices(index, video_idx, clip_idx, rng, view.rate)
            indices, drawn = SAMPLERS[view.sampler](rng, self._frame_count(video_idx),
                                                    self.clip_len, self.stride * view.rate,
                                                    **dict(view.options))
            labels.update({f"{view.name}_{k}": v for k, v in drawn.items()})
            return indices

        first = self.views[0]
        picked = {first.name: cut(first)}
        rng_seed = int(rng.integers(2**62))
        seeds = {first.name: int(rng.integers(2**62))}
        for view in self.views[1:]:
            source = view.frames_of
            picked[view.name] = picked[source] if source else cut(view)
            seeds[view.name] = seeds[source] if source else int(rng.integers(2**62))
        cached: dict[str, torch.Tensor] = {}
        box = None
        if self.targets is not None:  # the student's clip is cut from a box the cache stored
            try:
                boxes, _ = self.targets.boxes(self.videos[video_idx])
            except KeyError:
                raise VideoDecodeError(self.videos[video_idx], "the teacher-target cache skipped "
                                       "it (it did not decode when the cache was built)") from None
            k = int(rng.integers(len(boxes)))
            box = Box(*(int(v) for v in boxes[k][:4]), bool(boxes[k][4]))
            logits = self.targets.clip_logits(self.videos[video_idx], picked["video"], k)
            cached = {f"teacher_logits{i}": t for i, t in enumerate(logits)}
        rgb = self._rgb_frames(video_idx, [np.ravel(picked[v.name]).tolist() for v in self.views
                                           if v.modality == "rgb"])
        out = {view.name: self._clip(view, video_idx, picked[view.name], seeds[view.name], rgb,
                                     box if view.name == "video" else None)
               for view in self.views}
        return {**out, **labels, **cached}, rng_seed

    def _rgb_frames(self, video_idx: int, clips: list[list[int]]) -> dict[int, np.ndarray]:
        """{frame index: (H, W, 3) uint8} for every frame the RGB views read: one decode of
        their union, however many views cut clips from the video."""
        wanted = sorted({i for clip in clips for i in clip})
        if not wanted:
            return {}
        if self.cache is None:
            frames = read_frames(self.videos[video_idx], wanted, self.backend,
                                 device=self.decode_device)
        elif self.cache == "store":
            # One contiguous read of rows first..last from the memory-mapped shard.
            first, last = wanted[0], wanted[-1]
            rows = self._store.get(self.videos[video_idx], "frames", slice(first, last + 1))
            frames = rows[[i - first for i in wanted]]  # (len(wanted), H, W, 3)
        else:
            frames = self._cached_frames(video_idx)[wanted]
        return dict(zip(wanted, frames, strict=True))

    def _clip(self, view: View, video_idx: int, indices: list[int], seed: int,
              rgb: dict[int, np.ndarray], box: Box | None = None) -> torch.Tensor:
        """One view's clip (C, T, H, W) float: RGB frames (T, H, W, 3) uint8 or flow
        (T, H, W, 2) float through their transform; (n, C, T, H, W) for n rows of indices (the
        clips of a VCOP sample, one crop for all)."""
        if np.ndim(indices) == 2:
            return torch.stack([self._clip(view, video_idx, list(row), seed, rgb)
                                for row in indices])
        if view.modality == "flow":
            flow = torch.from_numpy(self.flow.read(self.videos[video_idx], indices))
            if self.flow_transform is None:
                return flow.permute(3, 0, 1, 2).contiguous()
            return self.flow_transform(flow, generator=torch.Generator().manual_seed(seed))
        frames = np.stack([rgb[i] for i in indices])  # (T, H, W, 3)
        if self.transform is None:
            return to_float_clip(frames)
        generator = torch.Generator().manual_seed(seed)
        if box is not None:
            return self.transform(torch.from_numpy(frames), generator=generator, box=box)
        return self.transform(torch.from_numpy(frames), generator=generator)

    def _frame_count(self, video_idx: int) -> int:
        if self.cache == "store":
            return self._stored_frame_count(video_idx)
        if self.cache is not None:
            return len(self._cached_frames(video_idx))
        if video_idx not in self._num_frames:
            path = self.videos[video_idx]
            num_frames = probe(path, self.backend, self.decode_device).num_frames
            if num_frames < 1:
                raise VideoDecodeError(path, "the video has no frames")
            self._num_frames[video_idx] = num_frames
        return self._num_frames[video_idx]

    def _stored_frame_count(self, video_idx: int) -> int:
        """Frames of a video in the clip store, from its shard's header."""
        if video_idx not in self._num_frames:
            path = self.videos[video_idx]
            if not self._store.has(path):
                raise VideoDecodeError(path, "it did not decode when the clip store was built")
            self._num_frames[video_idx] = self._store.shape(path, "frames")[0]
        return self._num_frames[video_idx]

    def _cached_frames(self, video_idx: int) -> np.ndarray:
        """(T, H, W, 3) uint8 frames from the cache, decoding the video on a miss."""
        if self.cache == "memory":
            if video_idx not in self._memory:
                self._memory[video_idx] = self._decode_all(video_idx)
            return self._memory[video_idx]
        if video_idx in self._mapped:  # opened before by this process
            return self._mapped[video_idx]
        file = self._disk_cache_file(video_idx)
        if file.is_file():
            try:
                # Memory-mapped: cutting a clip reads only its frames from disk.
                frames = np.load(file, mmap_mode="r")
                if len(self._mapped) >= MAX_MAPPED:  # bounded: the kernel limits mappings
                    del self._mapped[next(iter(self._mapped))]
                self._mapped[video_idx] = frames
                return frames
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
        frames = read_all_frames(path, self.backend, self.decode_device)
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


class ImageFolderDataset(Dataset):
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
        self._cache: torch.Tensor | list[torch.Tensor] | None = None
        if cache:
            images = [torch.from_numpy(read_image(p)) for p, _ in self.samples]
            same_size = len({tuple(im.shape) for im in images}) == 1
            self._cache = torch.stack(images) if same_size else images

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):  # one pass; indexing past len() reaches later passes
        return (self[i] for i in range(len(self)))

    def __getitem__(self, item: int) -> dict:
        pass_, index = _split(item, len(self))
        path, label = self.samples[index]
        image = self._cache[index] if self._cache is not None else torch.from_numpy(read_image(path))
        if self.transform is None:
            out = to_float_clip(image.unsqueeze(0))[:, 0]  # (C, H, W)
        else:
            rng = _item_rng(self.seed, pass_, index)
            out = self.transform(image, generator=_torch_generator(rng))
        return {"image": out, "label": label, "index": index}
