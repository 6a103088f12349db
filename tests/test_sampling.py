import random

import numpy as np
import pytest

from distinit.data.clips import sampling
from distinit.data.clips.sampling import (
    ClipSpec,
    center_clip_indices,
    clip_indices,
    clip_span,
    sample_views,
    train_clip_indices,
)
from distinit.data.clips.views import View


def test_clip_span():
    assert clip_span(8, 1) == 8
    assert clip_span(8, 2) == 15
    assert clip_span(1, 5) == 1


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("rng_kind", ["random", "numpy"])
def test_train_clips_cover_every_start_and_stay_inside(stride, rng_kind):
    num_frames, clip_len = 20, 4
    rng = random.Random(0) if rng_kind == "random" else np.random.default_rng(0)
    last_start = num_frames - clip_span(clip_len, stride)
    starts = set()
    for _ in range(400):
        clip = train_clip_indices(num_frames, clip_len, stride, rng)
        assert len(clip) == clip_len
        assert np.all(np.diff(clip) == stride)
        assert clip[0] >= 0 and clip[-1] < num_frames
        starts.add(clip[0])
    assert starts == set(range(last_start + 1))  # uniform over all valid starts


def test_train_without_jitter_is_the_centre_clip():
    rng = random.Random(0)
    assert train_clip_indices(20, 4, 2, rng, jitter=False) == [6, 8, 10, 12]
    assert center_clip_indices(20, 4, 2) == [6, 8, 10, 12]
    assert center_clip_indices(9, 4, 2) == [1, 3, 5, 7]  # odd slack rounds towards the start


def test_same_seed_same_clips():
    a = [train_clip_indices(100, 8, 2, np.random.default_rng(7)) for _ in range(3)]
    b = [train_clip_indices(100, 8, 2, np.random.default_rng(7)) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("stride, expect", [
    (1, [0, 1, 2, 3, 4, 4, 4, 4]),
    (2, [0, 2, 4, 4, 4, 4, 4, 4]),
    (3, [0, 3, 4, 4, 4, 4, 4, 4]),
])
def test_short_video_pads_with_last_frame(stride, expect):
    rng = random.Random(0)
    for _ in range(5):
        assert train_clip_indices(5, 8, stride, rng) == expect
    assert center_clip_indices(5, 8, stride) == expect
    assert sampling.test_clip_indices(5, 8, stride, 3) == [expect] * 3


def test_single_frame_video():
    assert train_clip_indices(1, 4, 2, random.Random(0)) == [0, 0, 0, 0]
    assert sampling.test_clip_indices(1, 4, 2, 2) == [[0, 0, 0, 0]] * 2


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_test_clips_span_the_video(stride):
    num_frames, clip_len = 40, 4
    clips = sampling.test_clip_indices(num_frames, clip_len, stride, 5)
    assert len(clips) == 5
    assert clips[0][0] == 0
    assert clips[-1][-1] == num_frames - 1  # the last clip ends at the last frame
    starts = [c[0] for c in clips]
    gaps = np.diff(starts)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1  # evenly spaced
    assert all(np.all(np.diff(c) == stride) for c in clips)


def test_one_test_clip_is_the_centre_clip():
    assert sampling.test_clip_indices(20, 4, 2, 1) == [center_clip_indices(20, 4, 2)]


def test_more_test_clips_than_starts_repeat():
    # 10 frames, span 8: only starts 0, 1, 2 exist; 5 clips reuse them in order.
    clips = sampling.test_clip_indices(10, 8, 1, 5)
    assert len(clips) == 5
    assert [c[0] for c in clips] == [0, 0, 1, 1, 2]
    assert clips[-1][-1] == 9


@pytest.mark.parametrize("args", [(0, 4, 1), (10, 0, 1), (10, 4, 0)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        center_clip_indices(*args)
    with pytest.raises(ValueError):
        sampling.test_clip_indices(10, 4, 1, 0)


# ---- an item's views: sample_views ---------------------------------------------------------

def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_clip_spec_checks_mode_and_clip_count():
    with pytest.raises(ValueError, match="mode"):
        ClipSpec(mode="val")
    with pytest.raises(ValueError, match="num_clips"):
        ClipSpec(mode="train", num_clips=2)
    with pytest.raises(ValueError, match="num_clips"):
        ClipSpec(mode="test", num_clips=0)


def test_clip_indices_by_mode_rate_and_clip():
    train = ClipSpec(4, stride=2)
    assert clip_indices(20, train, _rng(3)) == train_clip_indices(20, 4, 2, _rng(3))
    assert clip_indices(20, train, _rng(3), rate=2) == train_clip_indices(20, 4, 4, _rng(3))
    test = ClipSpec(4, stride=1, mode="test", num_clips=3)
    rng = _rng(0)
    state = rng.bit_generator.state
    assert [clip_indices(20, test, rng, k) for k in range(3)] == sampling.test_clip_indices(20, 4, 1, 3)
    assert rng.bit_generator.state == state  # test clips draw nothing
    # Exact fit: a 7-frame span in 7 frames has one start; one frame fewer pads the clip.
    assert clip_indices(7, train, _rng(1)) == [0, 2, 4, 6]
    assert clip_indices(6, train, _rng(1)) == [0, 2, 4, 5]


def test_sample_views_draws_in_its_documented_order():
    views = (View("video"), View("flow", "flow", frames_of="video"), View("video2", rate=2))
    spec = ClipSpec(4, stride=1)
    drawn = sample_views(views, 30, spec, _rng(5), num_boxes=8)
    rng = _rng(5)  # by hand, in the documented order
    first = train_clip_indices(30, 4, 1, rng)
    rng_seed, seed_first = int(rng.integers(2**62)), int(rng.integers(2**62))
    second = train_clip_indices(30, 4, 2, rng)
    seed_second, box = int(rng.integers(2**62)), int(rng.integers(8))
    assert drawn.indices == {"video": first, "flow": first, "video2": second}
    assert drawn.seeds == {"video": seed_first, "flow": seed_first, "video2": seed_second}
    assert (drawn.rng_seed, drawn.box, drawn.labels) == (rng_seed, box, {})
    assert sample_views(views, 30, spec, _rng(5)).box is None  # no boxes: nothing drawn


def test_sample_views_on_a_one_frame_video_and_in_test_mode():
    views = (View("video"), View("video2"))
    drawn = sample_views(views, 1, ClipSpec(4, stride=3), _rng(0))
    assert drawn.indices == {"video": [0, 0, 0, 0], "video2": [0, 0, 0, 0]}
    assert drawn.seeds["video"] != drawn.seeds["video2"]  # own clip, own augmentation
    test = ClipSpec(2, mode="test", num_clips=2)
    assert sample_views(views[:1], 10, test, _rng(0), clip_idx=1).indices == {"video": [8, 9]}


def test_sample_views_carries_pretext_labels_and_vcop_rows():
    views = (View("video", sampler="vspp", options=(("max_segment", 2),)),
             View("order", sampler="vcop", options=(("n_clips", 3), ("interval", 2))))
    drawn = sample_views(views, 5, ClipSpec(4), _rng(2))  # shorter than either needs
    assert set(drawn.labels) == {"video_speed", "video_segment", "order_order"}
    assert 0 <= drawn.labels["order_order"] < 6
    assert np.shape(drawn.indices["order"]) == (3, 4)
    assert np.max(drawn.indices["video"]) <= 4 and np.max(drawn.indices["order"]) <= 4
