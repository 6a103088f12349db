"""Named views of one video: the data recipe of a method.

A sample is a dict of views cut from one video: its RGB clip, the optical flow of that clip, a
second clip at another time or playback rate, and so on. Each method asks for the views it
reads (`View`); the dataset (`VideoClipDataset(views=...)`) decodes the video once, cuts every
view from it, and pairs RGB with flow, so no method knows how flow is stored.

- `frames_of`: reuse the frame indices of an earlier view, with the same crop and flip (the
  flow of an RGB clip). Empty: a clip of its own, at a random time, with its own augmentation.
- `rate`: playback rate, a multiple of `data.stride` (2 = every other frame).
- `modality`: `rgb`, or `flow` read from the `distinit flow` folder `data.flow_dir`.
- `sampler`: a pretext task's frame sampler (`data/clips/pretext.py`: `vspp`, `pace`, `vcop`) with its
  `options`, in place of a plain clip; the labels it draws come with the sample as
  `NAME_LABEL` (e.g. `video_speed`). A `vcop` view is (n_clips, C, T, H, W). The option
  `unlike=EARLIER_VIEW` hands the sampler that view's labels to differ from (auxSKD's pair).
- `crop_per_clip`: for a sampler that cuts n clips (`vcop`, `rspnet_keys`), each clip gets its
  own augmentation draw (crop, flip, colour), as VCOP's official code does; off, one draw
  serves all n (RSPNet's keys must share theirs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distinit.data.clips.pretext import SAMPLERS
from distinit.data.flow.store import dequantize, flow_file, read_flow_meta
from distinit.data.video.io import VideoDecodeError
from distinit.errors import UserError

MODALITIES = ("rgb", "flow")
FLOW_SCALE = 20.0  # flow clips are pixels / 20 (TSN's bound): mostly within [-1, 1]


@dataclass(frozen=True)
class View:
    name: str = "video"
    modality: str = "rgb"
    frames_of: str = ""
    rate: int = 1
    sampler: str = ""
    options: tuple[tuple[str, int | str], ...] = ()
    crop_per_clip: bool = False


RGB = (View("video"),)  # one RGB clip: the default recipe


def check_views(views: Sequence[View]) -> None:
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise UserError(f"view names must differ, got {names}")
    for i, v in enumerate(views):
        if v.modality not in MODALITIES:
            raise UserError(f"view {v.name}: modality must be one of {', '.join(MODALITIES)}, "
                            f"got {v.modality!r}")
        if v.frames_of and v.frames_of not in names[:i]:
            raise UserError(f"view {v.name}: frames_of={v.frames_of!r} must name an earlier view "
                            f"({', '.join(names[:i]) or 'none'})")
        if v.rate < 1:
            raise UserError(f"view {v.name}: rate must be >= 1, got {v.rate}")
        if v.sampler and v.sampler not in SAMPLERS:
            raise UserError(f"view {v.name}: unknown sampler {v.sampler!r}; valid: "
                            f"{', '.join(SAMPLERS)}")
        unlike = dict(v.options).get("unlike")
        if unlike is not None and not any(w.name == unlike and w.sampler for w in views[:i]):
            raise UserError(f"view {v.name}: unlike={unlike!r} must name an earlier view with "
                            "a sampler")
        if v.sampler and (v.frames_of or v.modality != "rgb"):
            raise UserError(f"view {v.name}: a pretext sampler cuts its own RGB clip")
    if views and views[0].frames_of:
        raise UserError(f"the first view ({views[0].name}) must cut its own clip")


class FlowSource:
    """Reads the flow of frames of a video from a `distinit flow` folder, as float32
    (T, H, W, 2) in units of `FLOW_SCALE` pixels."""

    def __init__(self, flow_dir: str | Path, video_root: str | Path):
        self.flow_dir, self.video_root = Path(flow_dir), Path(video_root)
        self.meta = read_flow_meta(self.flow_dir)

    def file(self, video: Path) -> Path:
        return flow_file(video, self.video_root, self.flow_dir)

    def check(self, video: Path) -> None:
        """A one-line error when the first video has no flow: the wrong folder, or flow not
        computed yet (a single missing file is only a skipped video)."""
        if not self.file(video).is_file():
            raise UserError(f"no flow for {video} at {self.file(video)}; compute it with "
                            f"`distinit flow {self.video_root} {self.flow_dir}`, or set "
                            "data.flow_dir to the folder it wrote")

    def read(self, video: Path, indices: Sequence[int]) -> np.ndarray:
        path = self.file(video)
        try:
            stored = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise VideoDecodeError(video, f"cannot read its flow {path} ({e})") from None
        rows = np.clip(np.asarray(indices), 0, len(stored) - 1)  # flow may be one frame short
        return dequantize(np.asarray(stored[rows]), self.meta) / FLOW_SCALE
