"""Datasets of video clips and still images.

Items are addressed as `pass * len(dataset) + index` (what `distinit.engine.sampler.StreamSampler`
yields): index i of pass p. Randomness is a pure function of (seed, pass, index), so
augmentation is reproducible, a resumed run continues exactly, and the same video seen in two
passes gets two different clips. Plain indices are pass 0.

A clip dataset is built from parts: a frame source (`data.frames`: decoder, caches, clip store,
and the replacement of bad videos), a sampler (`data.sampling.sample_views`: which frames each
view reads, its augmentation seed, its labels) and a transform chain per view
(`data.transforms`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from distinit.data.clips.sampling import ClipSpec, clip_indices, sample_views
from distinit.data.clips.transforms import Box, to_float_clip
from distinit.data.clips.views import RGB, FlowSource, View, check_views
from distinit.data.video.frame_folders import IMAGE_EXTENSIONS
from distinit.data.video.frames import BadVideos, Decoder, DiskCache, FrameSource, MemoryCache
from distinit.data.video.io import VideoDecodeError
from distinit.engine.sampler import split_index
from distinit.errors import UserError

# transform(frames uint8 (T, H, W, C), generator) -> float (C, T, H, W)
Transform = Callable[..., torch.Tensor]


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
    """Clips cut from videos, as `clips` (a `ClipSpec`) says: in train mode one item per video
    and a random clip per access; in test mode K = `num_clips` x `crops` items per video, item
    i being view i % K of video i // K (clip (i % K) // crops, spatial crop (i % K) % crops).
    Items are dicts: each view (C, T, H, W) float, label (-1 when
    unlabeled), video_idx, clip_idx, index, bad, rng_seed, and any pretext labels.

    `frames` (`data.frames`; default: decode with PyAV) gives the RGB frames. A video that fails
    to decode is replaced by the same clip of the next good video (`frames.BadVideos`, in `bad`);
    that item has bad=1, so sum "bad" over an epoch to count the items that hit a bad video.

    `views` (`data.views`, default one RGB view `video`): the named views of one video each item
    holds; the RGB frames of all of them are read in one call. RGB views go through `transform`
    (called as `transform(frames, generator=...)`; None only converts to float in [0, 1]), flow
    views, read from `flow`, through `flow_transform`.

    `targets` (a teacher-target cache, training only): the `video` view is cut from one of the
    crop boxes the cache stored for the video (drawn per clip), and the item carries the cached
    teacher logits of its frames, `teacher_logits{i}` (T, C_i).
    """

    def __init__(self, videos: Sequence[str | Path], labels: Sequence[int] | None = None, *,
                 clips: ClipSpec | None = None, frames: FrameSource | None = None,
                 transform: Transform | None = None, views: Sequence[View] = RGB,
                 flow: FlowSource | None = None, flow_transform: Transform | None = None,
                 targets=None, seed: int = 0) -> None:
        self.clips = clips or ClipSpec()
        if not videos:
            raise UserError("the video dataset is empty; check the video folder or split file")
        if labels is not None and len(labels) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
        check_views(views)
        if any(v.modality == "flow" for v in views) and flow is None:
            raise UserError("a flow view needs optical flow: set data.flow_dir to a folder "
                            "written by `distinit flow`")
        if targets is not None and (self.clips.mode != "train" or transform is None):
            raise ValueError("cached teacher targets need train mode and a ClipTransform")
        self.videos = [Path(v) for v in videos]
        self.labels = None if labels is None else [int(label) for label in labels]
        self.frames = frames or Decoder()
        self.views, self.transform, self.seed = tuple(views), transform, seed
        self.flow, self.flow_transform, self.targets = flow, flow_transform, targets
        self.bad = BadVideos(self.videos)
        super().__init__()

    def __len__(self) -> int:
        return len(self.videos) * self.clips.per_video

    def __iter__(self):  # one pass; indexing past len() reaches later passes
        return (self[i] for i in range(len(self)))

    def __getitem__(self, item: int) -> dict:
        pass_, index = _split(item, len(self))
        first_video, clip_idx = divmod(index, self.clips.per_video)
        video_idx, (views, rng_seed) = self.bad.first_good(
            first_video, lambda i: self._load(i, clip_idx, pass_))
        item_index = video_idx * self.clips.per_video + clip_idx
        label = -1 if self.labels is None else self.labels[video_idx]
        return {**views, "label": label, "video_idx": video_idx, "clip_idx": clip_idx,
                "index": item_index, "bad": int(item_index != index), "rng_seed": rng_seed}

    def fill_cache(self) -> None:
        """Decode every video into the cache now (skipping, and remembering, bad ones)."""
        if not isinstance(self.frames, MemoryCache | DiskCache):
            raise ValueError("fill_cache() needs cache='memory' or cache='disk' (a clip store "
                             "is filled when it is built)")
        for video_idx, video in enumerate(self.videos):
            if self.bad.flags[video_idx]:
                continue
            try:
                self.frames.all_frames(video)
            except VideoDecodeError as e:
                self.bad.mark(video_idx, e.reason)

    def clip_indices(self, item: int) -> list[int]:
        """The frame indices item `item` reads (probes the video if needed)."""
        pass_, index = _split(item, len(self))
        video_idx, view = divmod(index, self.clips.per_video)
        return clip_indices(self.frames.num_frames(self.videos[video_idx]), self.clips,
                            _item_rng(self.seed, pass_, index), view // self.clips.crops)

    def _load(self, video_idx: int, view: int, pass_: int) -> tuple[dict, int]:
        """({view name: clip, labels, cached logits}, a seed for the method's own per-clip
        randomness, e.g. DistInit's frames) of item `view` of a video (one item per video in
        training). Every random draw comes from (seed, pass, index)."""
        video = self.videos[video_idx]
        rng = _item_rng(self.seed, pass_, video_idx * self.clips.per_video + view)
        clip_idx, crop = divmod(view, self.clips.crops)
        spatial = (crop, self.clips.crops) if self.clips.crops > 1 else None
        num_frames = self.frames.num_frames(video)
        boxes = None
        if self.targets is not None:  # the student's clip is cut from a box the cache stored
            try:
                boxes, _ = self.targets.boxes(video)
            except KeyError:
                raise VideoDecodeError(video, "the teacher-target cache skipped it (it did not "
                                       "decode when the cache was built)") from None
        drawn = sample_views(self.views, num_frames, self.clips, rng, clip_idx,
                             num_boxes=0 if boxes is None else len(boxes))
        box, cached = None, {}
        if boxes is not None:
            b = boxes[drawn.box]
            box = Box(*(int(v) for v in b[:4]), bool(b[4]))
            logits = self.targets.clip_logits(video, drawn.indices["video"], drawn.box)
            cached = {f"teacher_logits{i}": t for i, t in enumerate(logits)}
        # One read of the union of the frames every RGB view needs: {frame index: (H, W, 3)}.
        wanted = sorted({int(i) for v in self.views if v.modality == "rgb"
                         for i in np.ravel(drawn.indices[v.name])})
        rgb = dict(zip(wanted, self.frames.frames(video, wanted), strict=True)) if wanted else {}
        out = {v.name: self._clip(v, video, drawn.indices[v.name], drawn.seeds[v.name], rgb,
                                  box if v.name == "video" else None, spatial)
               for v in self.views}
        return {**out, **drawn.labels, **cached}, drawn.rng_seed

    def _clip(self, view: View, video: Path, indices: list[int] | np.ndarray, seed: int,
              rgb: dict[int, np.ndarray], box: Box | None = None,
              spatial: tuple[int, int] | None = None) -> torch.Tensor:
        """One view's clip (C, T, H, W) float: RGB frames (T, H, W, 3) uint8 or flow
        (T, H, W, 2) float through their transform (`spatial`: test crop k of n); (n, C, T, H,
        W) for n rows of indices (the clips of a VCOP sample): one crop for all, or with
        `view.crop_per_clip` clip k's own, drawn from seed + k."""
        if np.ndim(indices) == 2:
            return torch.stack([self._clip(view, video, list(row),
                                           seed + k if view.crop_per_clip else seed, rgb)
                                for k, row in enumerate(indices)])
        generator = torch.Generator().manual_seed(seed)
        where = {} if spatial is None else {"spatial": spatial}
        if view.modality == "flow":
            flow = torch.from_numpy(self.flow.read(video, indices))
            if self.flow_transform is None:
                return flow.permute(3, 0, 1, 2).contiguous()
            return self.flow_transform(flow, generator=generator, **where)
        frames = np.stack([rgb[i] for i in indices])  # (T, H, W, 3)
        if self.transform is None:
            return to_float_clip(frames)
        if box is not None:
            return self.transform(torch.from_numpy(frames), generator=generator, box=box)
        return self.transform(torch.from_numpy(frames), generator=generator, **where)


def list_images(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[tuple[Path, int]], list[str]]:
    """ImageFolder layout root/<class>/<image>: (image path, label) pairs and sorted class names."""
    # Not torchvision's ImageFolder/make_dataset: torchvision is an optional extra here and
    # train-image must run without it; and make_dataset also walks subfolders of a class folder
    # and refuses empty class folders, so it gives other samples on those layouts (on a flat
    # layout the samples, their order and the pixels are the same).
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
