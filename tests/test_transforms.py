import numpy as np
import pytest
import torch

from distinit.data.clips.transforms import (
    Box,
    ClipSizeError,
    ClipTransform,
    Compose,
    Draws,
    EvalCrop,
    Normalize,
    RandomCrop,
    ResizeShortSide,
    center_crop,
    horizontal_flip,
    normalize,
    random_crop,
    resize_short_side,
    to_float_clip,
)
from distinit.errors import UserError


def gradient_clip(T=3, H=24, W=32) -> np.ndarray:
    """(T, H, W, 3) uint8: R encodes x, G encodes y, B encodes t, so crops and flips are visible."""
    t, y, x = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    return np.stack([x * 7, y * 9, t * 50], axis=-1).astype(np.uint8)


def test_to_float_clip_layout_and_scale():
    frames = gradient_clip()
    clip = to_float_clip(frames)
    assert clip.shape == (3, 3, 24, 32) and clip.dtype == torch.float32
    assert clip[0, 1, 5, 10] == pytest.approx(70 / 255)  # R = 7 * x
    assert clip[1, 1, 5, 10] == pytest.approx(45 / 255)  # G = 9 * y
    assert clip[2, 2, 0, 0] == pytest.approx(100 / 255)  # B = 50 * t
    with pytest.raises(ValueError):
        to_float_clip(frames.astype(np.float32))


@pytest.mark.parametrize("hw, size, out", [((24, 32), 12, (12, 16)), ((32, 24), 12, (16, 12)),
                                           ((20, 20), 40, (40, 40)), ((15, 40), 15, (15, 40))])
def test_resize_short_side_shapes(hw, size, out):
    x = torch.rand(3, 2, *hw)
    y = resize_short_side(x, size)
    assert tuple(y.shape) == (3, 2, *out)
    if out == hw:
        assert y is x


def test_resize_keeps_constants_and_uint8():
    x = torch.full((2, 2, 30, 40), 0.25)
    assert torch.allclose(resize_short_side(x, 9), torch.full((2, 2, 9, 12), 0.25))
    u = torch.full((4, 30, 40, 3), 200, dtype=torch.uint8).permute(0, 3, 1, 2)
    v = resize_short_side(u, 10)
    assert v.dtype == torch.uint8 and tuple(v.shape) == (4, 3, 10, 13) and bool((v == 200).all())


def test_resize_antialiases_when_shrinking():
    # A one-pixel checkerboard averages to grey with antialiasing; plain bilinear aliases.
    board = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2
    y = resize_short_side(board.float()[None], 8)
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=0.02)


def test_crops_and_flip():
    clip = to_float_clip(gradient_clip())  # (3, 3, 24, 32)
    c = center_crop(clip, 16)
    assert c.shape == (3, 3, 16, 16)
    assert torch.equal(c, clip[..., 4:20, 8:24])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = random_crop(clip, 16, g)
        # The window is a contiguous slice, the same in every frame.
        top = round(float(r[1, 0, 0, 0]) * 255 / 9)
        left = round(float(r[0, 0, 0, 0]) * 255 / 7)
        assert torch.equal(r, clip[..., top:top + 16, left:left + 16])
    f = horizontal_flip(clip)
    assert torch.equal(f[..., 0], clip[..., -1]) and torch.equal(horizontal_flip(f), clip)
    with pytest.raises(ClipSizeError, match="smaller than the crop size 30") as info:
        center_crop(clip, 30)
    assert isinstance(info.value, UserError)


def test_normalize_per_channel():
    clip = torch.ones(3, 2, 4, 4) * torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1, 1)
    out = normalize(clip, mean=(0.2, 0.4, 0.6), std=(1.0, 0.5, 0.25))
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.0, 0.2, 0.8]))
    assert normalize(torch.ones(3, 5, 5), (1, 1, 1), (1, 1, 1)).abs().max() == 0  # images too


def test_clip_transform_train_is_seeded_and_consistent_across_frames():
    frames = gradient_clip(T=4, H=40, W=60)
    t = ClipTransform(train=True, resize=20, crop=16, mean=(0, 0, 0), std=(1, 1, 1))
    outs = [t(frames, generator=torch.Generator().manual_seed(s)) for s in range(12)]
    assert all(o.shape == (3, 4, 16, 16) and o.dtype == torch.float32 for o in outs)
    again = t(frames, generator=torch.Generator().manual_seed(3))
    assert torch.equal(outs[3], again)
    # Both flips and several crops occur; R (= x) increases or decreases along W in every frame.
    directions = set()
    for o in outs:
        d = torch.sign(o[0, :, 8, -1] - o[0, :, 8, 0])
        assert bool((d == d[0]).all())  # every frame flipped alike
        directions.add(int(d[0]))
    assert directions == {-1, 1}
    assert len({tuple(o[:, 0, 0, 0].tolist()) for o in outs}) > 3


def test_clip_transform_eval_and_images():
    frames = gradient_clip(T=2, H=40, W=60)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    t = ClipTransform(train=False, resize=20, crop=16, mean=mean, std=std)
    out = t(frames)
    expect = normalize(center_crop(resize_short_side(to_float_clip(frames), 20), 16), mean, std)
    assert torch.allclose(out, expect)
    assert torch.equal(t(frames), out)  # no randomness in eval
    image = t(frames[0])  # (H, W, C) -> (C, H, W)
    assert image.shape == (3, 16, 16) and torch.allclose(image, out[:, 0])
    no_flip = ClipTransform(train=True, resize=None, crop=40, mean=(0, 0, 0), std=(1, 1, 1), flip=False)
    for seed in range(8):
        o = no_flip(frames, torch.Generator().manual_seed(seed))
        assert o.shape == (3, 2, 40, 40)
        assert bool((o[0, :, 5, -1] > o[0, :, 5, 0]).all())  # never mirrored


def test_clip_size_errors_name_the_config_keys_and_frame_size():
    # A resize below the crop can never fit: refused when the transform is built.
    with pytest.raises(ClipSizeError, match=r"data.resize=20 is smaller than data.crop=32.*"
                                            r"set data.resize to at least 32 or data.crop to "
                                            r"at most 20") as info:
        ClipTransform(train=True, resize=20, crop=32)
    assert isinstance(info.value, UserError)
    # Without a resize (data.resize=0) the decoded frames themselves must hold the crop.
    t = ClipTransform(train=False, resize=None, crop=30)
    with pytest.raises(ClipSizeError, match=r"frames of 32x24 pixels are smaller than "
                                            r"data.crop=30 .*set data.crop to at most 24, or "
                                            r"data.resize to at least 30"):
        t(gradient_clip(T=2, H=24, W=32))


def test_scale_jitter_takes_one_window_per_clip_and_resizes_it():
    from distinit.data.clips.transforms import random_resized_crop

    clip = to_float_clip(gradient_clip(T=3, H=36, W=36))
    g = torch.Generator().manual_seed(0)
    sizes = set()
    for _ in range(20):
        out = random_resized_crop(clip, 32, scale=(0.35, 1.0), generator=g)
        assert out.shape == (3, 3, 32, 32)
        assert torch.equal(out[:2, 0], out[:2, 1]) and torch.equal(out[:2, 1], out[:2, 2])
        span = (out[0, 0, 0, -1] - out[0, 0, 0, 0]).item() * 255 / 7  # x pixels the window spans
        sizes.add(round(span))
        assert 0.35 ** 0.5 * 36 * 0.8 <= span + 1 <= 36
    assert len(sizes) > 3  # the scale varies from clip to clip


def test_scale_jitter_in_the_transform_and_its_bounds():
    tf = ClipTransform(train=True, resize=36, crop=32, flip=False, scale=[0.5, 1.0],
                       mean=(0, 0, 0), std=(1, 1, 1))
    assert tf(gradient_clip(T=2, H=36, W=36), generator=torch.Generator().manual_seed(1)).shape == \
        (3, 2, 32, 32)
    with pytest.raises(UserError, match="data.scale"):
        ClipTransform(train=True, resize=36, crop=32, scale=[0.0, 1.0])


@pytest.mark.parametrize("flip", [True, False])
def test_scale_jitter_flips_half_the_boxes_when_flip_is_on_and_none_when_off(flip):
    """torchvision's RandomResizedCrop then RandomHorizontalFlip: data.flip is never ignored."""
    from distinit.data.clips.transforms import draw_box

    g = torch.Generator().manual_seed(0)
    boxes = [draw_box(36, 48, 32, scale=(0.35, 1.0), flip=flip, generator=g) for _ in range(400)]
    mirrored = sum(box.flip for box in boxes)
    assert (150 <= mirrored <= 250) if flip else mirrored == 0
    assert len({(box.height, box.width) for box in boxes}) > 20  # the scale still varies
    # The window is drawn before the coin: turning the flip on moves no window.
    g = torch.Generator().manual_seed(0)
    plain = draw_box(36, 48, 32, scale=(0.35, 1.0), flip=False, generator=g)
    g = torch.Generator().manual_seed(0)
    flipped = draw_box(36, 48, 32, scale=(0.35, 1.0), flip=True, generator=g)
    assert (plain.top, plain.left, plain.height, plain.width) == \
        (flipped.top, flipped.left, flipped.height, flipped.width)


def test_a_transform_is_a_chain_of_steps_and_a_new_step_is_one_small_class():
    frames = gradient_clip(T=2, H=40, W=60)

    class Darken:  # an augmentation a chain can take without touching ClipTransform
        def __call__(self, clip: torch.Tensor, draws: Draws) -> torch.Tensor:
            return clip * (0.5 + 0.5 * float(torch.rand((), generator=draws.generator)))

    standard = ClipTransform(train=True, resize=20, crop=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert [type(s) for s in standard.steps] == [ResizeShortSide, RandomCrop, Normalize]
    darker = Compose([*standard.steps[:2], Darken(), standard.steps[2]])
    b = darker(frames, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    a = standard(frames, generator=g)  # the same crop and flip: the same draws come first
    assert torch.allclose(b, a * (0.5 + 0.5 * float(torch.rand((), generator=g))))
    # A box from elsewhere (the target cache's) replaces the drawn crop, flip included.
    box = Box(2, 3, 16, 16, flip=True)
    cut = standard(frames, generator=torch.Generator().manual_seed(0), box=box)
    expect = horizontal_flip(resize_short_side(to_float_clip(frames), 20)[..., 2:18, 3:19])
    assert torch.allclose(cut, expect)
    assert isinstance(EvalCrop(16)(torch.zeros(3, 2, 20, 30), Draws()), torch.Tensor)


def uniform_flow(dx: float, dy: float, T=2, H=24, W=32) -> torch.Tensor:
    """(T, H, W, 2) flow of a uniform translation by (dx, dy) pixels."""
    return torch.tensor([dx, dy]).expand(T, H, W, 2).contiguous()


def vectors(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy) of a flow clip (2, T, H, W) that should be uniform: its per-channel values."""
    assert torch.allclose(flow, flow[:, :1, :1, :1].expand_as(flow), atol=1e-5)
    return flow[0, 0, 0, 0], flow[1, 0, 0, 0]


@pytest.mark.parametrize("hw, size", [((24, 32), 48), ((24, 36), 16), ((30, 20), 10)])
def test_flow_vectors_scale_with_the_short_side_resize(hw, size):
    flow = uniform_flow(3.0, -2.0, H=hw[0], W=hw[1]).permute(3, 0, 1, 2)  # (2, T, H, W)
    out = ResizeShortSide(size, crop=1, flow=True)(flow, Draws())
    sx, sy = out.shape[-1] / hw[1], out.shape[-2] / hw[0]  # each axis's own factor
    dx, dy = vectors(out)
    assert torch.allclose(dx, torch.tensor(3.0 * sx)) and torch.allclose(dy, torch.tensor(-2.0 * sy))
    rgb = ResizeShortSide(size, crop=1)(flow, Draws())  # not a flow chain: values untouched
    assert torch.allclose(rgb, torch.tensor([3.0, -2.0]).view(2, 1, 1, 1).expand_as(rgb))


@pytest.mark.parametrize("box, scale", [(Box(2, 3, 16, 32), (2.0, 4.0)),  # squeezed in x, 2x in y
                                        (Box(0, 5, 32, 16, flip=True), (4.0, 2.0)),
                                        (Box(1, 1, 32, 32, flip=True), (2.0, 2.0))])
def test_flow_vectors_scale_with_each_axis_of_a_resized_box_and_flip_negates_dx(box, scale):
    # 24x32 frames resized 2x to 48x64, then the box resized to the 32x32 crop.
    tf = ClipTransform(train=True, resize=48, crop=32, mean=(0, 0), std=(1, 1), flow=True)
    dx, dy = vectors(tf(uniform_flow(3.0, -2.0), box=box))
    sign = -1.0 if box.flip else 1.0
    sx, sy = 2.0 * 32 / box.width, 2.0 * 32 / box.height
    assert (sx, sy) == scale
    assert torch.allclose(dx, torch.tensor(sign * 3.0 * sx))
    assert torch.allclose(dy, torch.tensor(-2.0 * sy))


def test_flow_vectors_in_drawn_crops_and_evaluation():
    flow = uniform_flow(3.0, -2.0, H=24, W=32)
    for seed in range(6):  # scale jitter: windows of many shapes, each resized to the crop
        g = torch.Generator().manual_seed(seed)
        tf = ClipTransform(train=True, resize=24, crop=16, mean=(0, 0), std=(1, 1),
                           scale=(0.2, 1.0), flow=True)
        box = tf.draw(24, 32, generator=torch.Generator().manual_seed(seed))
        dx, dy = vectors(tf(flow, generator=g))
        sign = -1.0 if box.flip else 1.0  # a mirrored window moves the other way
        assert torch.allclose(dx, torch.tensor(sign * 3.0 * 16 / box.width))
        assert torch.allclose(dy, torch.tensor(-2.0 * 16 / box.height))
    ev = ClipTransform(train=False, resize=12, crop=12, mean=(0, 0), std=(1, 1), flow=True)
    dx, dy = vectors(ev(flow))  # 24x32 -> 12x16: half in both axes
    assert torch.allclose(dx, torch.tensor(1.5)) and torch.allclose(dy, torch.tensor(-1.0))


def test_spatial_crops_run_along_the_long_side_and_the_middle_one_is_the_centre():
    from distinit.data.clips.transforms import spatial_crop

    wide = torch.arange(20 * 30, dtype=torch.float32).view(1, 1, 20, 30)
    tall = wide.transpose(-1, -2).contiguous()  # 30 x 20
    assert torch.equal(spatial_crop(wide, 16, 1, 3), center_crop(wide, 16))
    assert torch.equal(spatial_crop(wide, 16, 0, 1), center_crop(wide, 16))
    assert torch.equal(spatial_crop(wide, 16, 0, 3), wide[..., 2:18, 0:16])
    assert torch.equal(spatial_crop(wide, 16, 2, 3), wide[..., 2:18, 14:30])
    assert torch.equal(spatial_crop(tall, 16, 0, 3), tall[..., 0:16, 2:18])
    assert torch.equal(spatial_crop(tall, 16, 2, 3), tall[..., 14:30, 2:18])
