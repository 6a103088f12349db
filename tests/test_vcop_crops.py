"""VCOP's tuples: each clip cut from its own crop box, as the official code does
(xudejing/video-clip-order-prediction datasets/ucf101.py:267-281), or one box for the tuple."""

import numpy as np
import pytest

from distinit.config import load_config
from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.transforms import ClipTransform
from distinit.data.clips.views import View
from distinit.methods import config_class
from distinit.methods.pretext import PretextConfig, _task

SIZE, CROP = 64, 16  # 49 x 49 places a crop can start: two draws rarely meet


class Ramp:
    """A frame source whose every frame holds x * 3 in red and y * 3 in green at pixel (y, x), so
    a crop's top-left pixel says where the crop was cut."""

    def num_frames(self, video):
        return 40

    def frames(self, video, indices):
        y, x = np.mgrid[0:SIZE, 0:SIZE]
        frame = np.stack([x * 3, y * 3, np.zeros_like(x)], axis=-1).astype(np.uint8)
        return np.repeat(frame[None], len(indices), axis=0)


def tuple_boxes(crop_per_clip: bool, items: int = 6) -> list[set[tuple[int, int]]]:
    """For each item, the set of (left, top) corners its clips were cut at, every frame alike."""
    view = View("video", sampler="vcop", options=(("n_clips", 3), ("interval", 2)),
                crop_per_clip=crop_per_clip)
    transform = ClipTransform(True, None, CROP, mean=(0, 0, 0), std=(1, 1, 1), flip=False)
    ds = VideoClipDataset([f"v{i}.mp4" for i in range(items)], clips=ClipSpec(clip_len=4),
                          frames=Ramp(), transform=transform, views=[view], seed=0)
    out = []
    for i in range(items):
        clips = ds[i]["video"]  # (n, C, T, H, W)
        assert clips.shape == (3, 3, 4, CROP, CROP)
        corners = (clips[:, :2, :, 0, 0] * 255 / 3).round().int()  # (n, 2 = x, y, T)
        assert (corners == corners[..., :1]).all()  # one box for all frames of a clip
        out.append({tuple(c) for c in corners[..., 0].tolist()})
    return out


def test_each_clip_of_a_tuple_is_cut_from_its_own_box_when_asked():
    assert all(len(boxes) == 3 for boxes in tuple_boxes(crop_per_clip=True))


def test_one_box_serves_the_whole_tuple_otherwise():
    boxes = tuple_boxes(crop_per_clip=False)
    assert all(len(b) == 1 for b in boxes)
    assert len(set().union(*boxes)) > 1  # ... still drawn afresh for each item


@pytest.mark.parametrize("per_clip", [True, False])
def test_the_pretext_config_reaches_the_vcop_view(per_clip):
    view = _task("vcop", PretextConfig(crop_per_clip=per_clip))[0]
    assert view.sampler == "vcop" and view.crop_per_clip is per_clip


def test_the_official_behaviour_is_the_default_and_the_demo_keeps_its_one_box():
    assert PretextConfig().crop_per_clip is True
    demo = load_config("configs/demo/vcop.yaml", cls=config_class("vcop"))
    assert demo.pretext.crop_per_clip is False  # its numbers were measured so
