"""Object masks of the synthetic world, Grad-CAM, and the share of attribution inside a mask."""

import numpy as np
import pytest
import torch

from distinit.data.synth.generate import make_recipe
from distinit.data.synth.items import action_frames_and_mask, action_video_path
from distinit.data.synth.objects import OBJECT_CLASSES
from distinit.data.synth.render import render_frames
from distinit.data.synth.scenes import SCENE_CLASSES
from distinit.data.video.io import read_all_frames
from distinit.models.students import r3d_18
from distinit.tools.attribution import (
    attribution,
    cam_layer,
    grad_cam,
    in_mask,
    peak_in_mask,
    world_clips,
)


def test_asking_for_the_mask_leaves_the_frames_unchanged():
    kw = dict(size=32, T=6, scene=SCENE_CLASSES[0], obj=OBJECT_CLASSES[0], motion="translate")
    plain = render_frames(np.random.default_rng(3), **kw)
    mask = np.zeros((6, 32, 32), np.float32)
    masked = render_frames(np.random.default_rng(3), **kw, mask=mask)
    assert np.array_equal(plain, masked)
    assert mask.min() >= 0 and mask.max() <= 1 and 0.02 < (mask > 0.5).mean() < 0.5


def test_the_mask_follows_the_encoded_video(world):
    recipe = make_recipe(world.root, world.seed, world.params)
    frames, mask = action_frames_and_mask(recipe, 1)
    a, k = divmod(1, recipe.action_videos_per_class)
    video = read_all_frames(world.actions_videos / action_video_path(recipe.action_classes[a], k))
    assert frames.shape == video.shape and mask.shape == video.shape[:3]
    # The re-rendered frames are the encoded ones up to compression (a few grey levels) ...
    assert np.abs(frames.astype(int) - video.astype(int)).mean() < 8
    # ... and the object differs from its surroundings where the mask says it is.
    inside, outside = mask > 0.9, mask < 0.01
    assert inside.any() and outside.any()


def test_in_mask_is_the_share_of_the_maps_mass_and_pointing_of_its_peaks():
    cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]], [[5.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.5]], [[1.0, 0.0], [0.0, 0.0]]])
    assert in_mask(cam[:1], mask[:1]) == pytest.approx((1 + 0 + 2) / 8)
    assert peak_in_mask(cam, mask) == 0.5  # frame 0 peaks at 4 (mask 0.5: out), frame 1 in
    assert np.isnan(in_mask(torch.zeros_like(cam), mask))


def test_cam_layer_is_the_deepest_stage_at_least_7_wide():
    net = r3d_18(num_classes=0, width=4, layers=[1, 1, 1, 1], stem_stride=1, stem_kernel=(3, 3))
    assert cam_layer(net, torch.randn(1, 3, 4, 16, 16)) is net.layer2  # 16, 8, 4, 2 px wide
    assert cam_layer(net, torch.randn(1, 3, 4, 56, 56)) is net.layer4  # 56, 28, 14, 7


class _Reader(torch.nn.Module):
    """Features = the mean of one input channel: Grad-CAM weights that channel alone."""

    def __init__(self, channel: int):
        super().__init__()
        self.layer1, self.channel = torch.nn.Identity(), channel

    def forward_features(self, x):
        return self.layer1(x)[:, self.channel].mean(dim=(1, 2, 3))[:, None]

    forward = forward_features


def test_grad_cam_weights_the_channels_the_target_reads():
    clip = torch.zeros(2, 4, 16, 16)
    clip[0, :, :8, :8] = 1.0  # channel 0: only in the top-left quarter
    clip[1] = 1.0  # channel 1: everywhere
    top_left = torch.zeros(4, 16, 16)
    top_left[:, :8, :8] = 1
    reader = _Reader(0)
    cams = grad_cam(reader, torch.stack([clip, clip.flip(-1)]), reader.layer1)
    assert cams.shape == (2, 4, 16, 16) and (cams >= 0).all()
    cam = cams[0]  # each clip's own map: the second one's corner is the top-right
    assert in_mask(cams[1], top_left.flip(-1)) == pytest.approx(1.0)
    assert in_mask(cam, top_left) == pytest.approx(1.0)
    reader = _Reader(1)
    assert in_mask(grad_cam(reader, clip[None], reader.layer1)[0], top_left) == pytest.approx(0.25)


def test_attribution_on_the_worlds_test_clips(world):
    videos = sorted(world.actions_videos.rglob("*.mp4"))[:3]
    clips = world_clips(world, videos, [0, 1, 2], clip_len=4, stride=1, resize=36, crop=32,
                        mean=[0.5] * 3, std=[0.25] * 3)
    assert clips[0].video.shape == (3, 4, 32, 32) and clips[0].mask.shape == (4, 32, 32)
    torch.manual_seed(0)
    net = r3d_18(num_classes=3, width=4, layers=[1, 1, 1, 1], stem_stride=2, stem_kernel=(3, 3))
    for fine_tuned in (False, True):
        r = attribution(net, clips, fine_tuned)
        assert 0 <= r["in_mask"] <= 100 and 0 < r["area"] < 100 and r["layer"] == "layer2"
        assert 0 <= r["pointing"] <= 100
        assert len(r["maps"]) == 3 and r["maps"][0].shape == (4, 32, 32)
