"""Colour augmentation steps (data.color_jitter, data.grayscale_p, data.blur_p, ...)."""

import numpy as np
import pytest
import torch

from distinit.build import color_steps
from distinit.config import ConfigError, DataConfig, load_config
from distinit.data.clips.color import (
    ColorAugment,
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    blur_kernel,
)
from distinit.data.clips.transforms import (
    ClipTransform,
    apply_box,
    draw_box,
    normalize,
    resize_short_side,
    to_float_clip,
)
from distinit.errors import UserError
from distinit.optional import import_torchvision

MOCO_V2 = dict(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2, blur_p=0.5)
PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(autouse=True)
def torchvision_or_skip():
    try:
        import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")


def colourful_clip(T=4, H=40, W=48, same_frames=False, seed=0) -> np.ndarray:
    """(T, H, W, 3) uint8 of smooth random colours; with `same_frames` every frame is the first."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(30, 226, size=(T, H // 8, W // 8, 3)).repeat(8, 1).repeat(8, 2)
    if same_frames:
        frames = np.repeat(frames[:1], T, axis=0)
    return frames.astype(np.uint8)


def transform(augment: ColorAugment, crop=32, **kwargs) -> ClipTransform:
    return ClipTransform(train=True, resize=36, crop=crop, color=augment.steps(crop),
                         **PLAIN, **kwargs)


def run(tf: ClipTransform, frames: np.ndarray, seed: int) -> torch.Tensor:
    return tf(frames, generator=torch.Generator().manual_seed(seed))


def test_one_draw_per_clip_colours_every_frame_alike():
    frames = colourful_clip(same_frames=True)
    tf = transform(ColorAugment((0.4, 0.4, 0.4, 0.1), jitter_p=1.0))
    plain = ClipTransform(train=True, resize=36, crop=32, **PLAIN)
    for seed in range(4):
        out = run(tf, frames, seed)  # (C, T, H, W)
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, out.shape[1]))
        assert not torch.allclose(out, run(plain, frames, seed), atol=1e-3)  # it was jittered


def test_per_frame_draws_colour_each_frame_afresh():
    frames = colourful_clip(same_frames=True)
    tf = transform(ColorAugment((0.8, 0.8, 0.8, 0.2), jitter_p=1.0, per_frame=True))
    out = run(tf, frames, 0)
    assert all(not torch.allclose(out[:, 0], out[:, t], atol=1e-3) for t in range(1, 4))
    assert [type(s) for s in tf.steps[2:-1]] == [ColorJitter]


@pytest.mark.parametrize("per_frame", [False, True])
def test_a_seed_repeats_a_clip_bit_for_bit(per_frame):
    frames = colourful_clip()
    tf = transform(ColorAugment(**MOCO_V2, per_frame=per_frame))
    assert [type(s) for s in tf.steps[2:-1]] == [ColorJitter, RandomGrayscale, GaussianBlur]
    outs = [run(tf, frames, s) for s in range(6)]
    assert all(torch.equal(o, run(tf, frames, s)) for s, o in enumerate(outs))
    assert len({o.sum().item() for o in outs}) == 6  # the seeds differ


def test_grayscale_makes_the_channels_equal():
    out = run(transform(ColorAugment(grayscale_p=1.0)), colourful_clip(), 0)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_colour_draws_come_after_the_crop():
    # So a seed still gives an RGB clip and its flow (which has no colour steps) the same crop.
    frames = colourful_clip()
    plain = run(ClipTransform(train=True, resize=36, crop=32, **PLAIN), frames, 5)
    gray = run(transform(ColorAugment(grayscale_p=1.0)), frames, 5)
    luma = 0.2989 * plain[0] + 0.587 * plain[1] + 0.114 * plain[2]
    assert torch.allclose(gray[0], luma, atol=1e-5)


def test_blur_smooths_and_its_kernel_follows_the_crop():
    assert (blur_kernel(224), blur_kernel(112), blur_kernel(32), blur_kernel(16)) == (23, 11, 3, 1)
    board = ((np.indices((2, 36, 36)).sum(0) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[..., None], 3, axis=-1)  # (T, H, W, 3) checkerboard
    out = run(transform(ColorAugment(blur_p=1.0, blur_sigma=(1.0, 2.0))), frames, 0)
    assert out.std() < 0.5 * torch.from_numpy(board / 255.0).std()


def test_defaults_add_nothing_and_draw_nothing_more():
    assert ColorAugment().steps(32) == [] and color_steps(DataConfig()) == []
    assert color_steps(load_config(None, ["data.color_jitter=[0, 0, 0, 0]"]).data) == []
    frames = colourful_clip(H=40, W=60)
    tf = ClipTransform(train=True, resize=36, crop=32, scale=(0.35, 1.0),
                       color=color_steps(DataConfig()))
    for seed in range(4):
        g, ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        out = tf(frames, generator=g)
        # The chain before colour steps existed, written out: resize, drawn box, normalise.
        clip = resize_short_side(to_float_clip(frames), 36)
        box = draw_box(*clip.shape[-2:], 32, (0.35, 1.0), True, generator=ref)
        expect = normalize(apply_box(clip, box, 32), tf.mean, tf.std)
        assert torch.equal(out, expect)
        assert torch.equal(g.get_state(), ref.get_state())  # no draw more, none fewer


def test_colour_steps_are_refused_for_flow_and_evaluation():
    steps = ColorAugment(grayscale_p=0.5).steps(32)
    with pytest.raises(ValueError, match="RGB training"):
        ClipTransform(train=True, resize=36, crop=32, mean=(0, 0), std=(1, 1), flow=True,
                      color=steps)
    with pytest.raises(ValueError, match="RGB training"):
        ClipTransform(train=False, resize=36, crop=32, color=steps)


@pytest.mark.parametrize("override, words", [
    ("data.color_jitter=[0.4, 0.4, 0.4]", "data.color_jitter must have 0 or 4 values"),
    ("data.color_jitter=[0.4, -0.4, 0.4, 0.1]", "data.color_jitter[1] must be >= 0"),
    ("data.color_jitter_p=1.5", "data.color_jitter_p must be <= 1, got 1.5"),
    ("data.grayscale_p=-0.1", "data.grayscale_p must be >= 0"),
    ("data.blur_p=2", "data.blur_p must be <= 1"),
    ("data.blur_sigma=[0.1]", "data.blur_sigma must have 2 values"),
    ("data.blur_sigma=[0, 2]", "data.blur_sigma[0] must be > 0"),
])
def test_bad_settings_are_one_line_config_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, words", [
    ("data.color_jitter=[0.4, 0.4, 0.4, 0.6]", "hue <= 0.5"),
    ("data.blur_sigma=[2, 0.1]", "0 < min <= max"),
])
def test_settings_the_rules_cannot_say_fail_when_the_steps_are_built(override, words):
    dc = load_config(None, ["data.blur_p=0.5", override]).data
    with pytest.raises(UserError, match=words):
        color_steps(dc)
