"""RSPNet's paper recipe augments as the official code does (PeihaoChen/RSPNet
datasets/classification/__init__.py:173-202, the `aug_plus: false` branch), and both keys of a
window keep one crop."""

import numpy as np

from distinit.build import color_steps
from distinit.config import load_config
from distinit.data.clips.color import ColorJitter, RandomGrayscale
from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.transforms import ClipTransform
from distinit.data.clips.views import View
from distinit.methods import config_class


def test_the_paper_recipe_has_the_official_crop_flip_jitter_and_grayscale():
    dc = load_config("configs/rspnet_r3d18_k400.yaml", cls=config_class("rspnet")).data
    assert dc.scale == [0.4, 1.0] and dc.flip  # :174-178, :200
    assert dc.color_jitter == [0.4, 0.4, 0.4, 0.4] and dc.color_jitter_p == 1.0  # :194-199
    assert dc.grayscale_p == 0.2 and not dc.color_per_frame  # :193, one draw per clip
    assert dc.blur_p == 0.0  # blur is aug_plus only (:213-215)
    steps = color_steps(dc)
    assert [type(s) for s in steps] == [ColorJitter, RandomGrayscale]


class Ramp:
    """Frames holding x * 3 in red and y * 3 in green at pixel (y, x)."""

    def num_frames(self, video):
        return 40

    def frames(self, video, indices):
        y, x = np.mgrid[0:64, 0:64]
        frame = np.stack([x * 3, y * 3, np.zeros_like(x)], axis=-1).astype(np.uint8)
        return np.repeat(frame[None], len(indices), axis=0)


def test_both_keys_of_a_window_share_their_crop():
    """The per-clip crop of VCOP is off for RSPNet's keys: its negative must differ from the
    positive in speed alone."""
    views = [View("video", sampler="rspnet_query", options=(("speed", 2),)),
             View("video2", sampler="rspnet_keys", options=(("speed", 2),))]
    ds = VideoClipDataset([f"v{i}.mp4" for i in range(4)], clips=ClipSpec(clip_len=4),
                          frames=Ramp(), transform=ClipTransform(True, None, 16, mean=(0, 0, 0),
                                                                 std=(1, 1, 1), flip=False),
                          views=views, seed=0)
    for i in range(4):
        keys = ds[i]["video2"]  # (2, C, T, H, W)
        assert (keys[0, :2, :, 0, 0] == keys[1, :2, :, 0, 0]).all()
