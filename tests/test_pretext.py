"""Frame samplers of the pretext tasks: VSPP segments and speeds, playback pace, VCOP orders."""

import numpy as np
import pytest

from distinit.data.pretext import (
    pace_sample,
    vcop_orders,
    vcop_sample,
    vspp_sample,
    vspp_steps,
)


def test_vspp_plays_one_segment_faster():
    # 16 frames in 4 segments of 4; segment 2 at speed 3: steps of 3 for its 4 frames.
    steps = vspp_steps(16, 4, speed=3, altered=2)
    assert steps.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1]
    # The first frame of segment 0 has no step before it; a remainder joins the last segment.
    assert vspp_steps(10, 4, speed=2, altered=3).tolist() == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert vspp_steps(8, 4, speed=2, altered=0, stride=2).tolist() == [0, 4, 2, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        vspp_steps(8, 4, speed=2, altered=4)


def test_vspp_labels_match_the_indices():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        idx, speed, segment = vspp_sample(rng, num_frames=200, clip_len=16)
        seen.add((speed, segment))
        assert len(idx) == 16 and idx.min() >= 0 and idx.max() < 200
        gaps = np.diff(idx)
        expected = vspp_steps(16, 4, speed + 1, segment)[1:]
        assert gaps.tolist() == expected.tolist()
    assert seen == {(s, g) for s in range(4) for g in range(4)}  # every label occurs


def test_short_videos_repeat_their_last_frame():
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx, _, _ = vspp_sample(rng, num_frames=10, clip_len=16)
        assert len(idx) == 16 and idx.max() == 9 and (np.diff(idx) >= 0).all()
        idx, _ = pace_sample(rng, num_frames=5, clip_len=8)
        assert idx.max() <= 4
    idx, _, _ = vspp_sample(rng, num_frames=1, clip_len=4)
    assert idx.tolist() == [0, 0, 0, 0]


def test_pace_label_is_the_step_between_frames():
    rng = np.random.default_rng(2)
    for _ in range(100):
        idx, label = pace_sample(rng, num_frames=100, clip_len=8, max_pace=4)
        assert set(np.diff(idx).tolist()) == {label + 1}


def test_vcop_labels_name_the_order_of_the_clips():
    assert vcop_orders(3) == [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    rng = np.random.default_rng(3)
    labels = set()
    for _ in range(200):
        clips, label = vcop_sample(rng, num_frames=100, clip_len=4, n_clips=3, interval=8)
        labels.add(label)
        assert clips.shape == (3, 4)
        # Undo the shuffle: the clips come back in time order, 4 + 8 frames apart.
        in_time = np.empty_like(clips)
        in_time[list(vcop_orders(3)[label])] = clips
        assert (np.diff(in_time[:, 0]) == 12).all()
    assert labels == set(range(6))
