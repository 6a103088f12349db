"""Frame samplers of the pretext tasks (VSPP segments and speeds, playback pace, VCOP orders), and
the pretext method's loss and per-head accuracies."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distinit.data.clips.pretext import (
    pace_sample,
    vcop_orders,
    vcop_sample,
    vspp_sample,
    vspp_steps,
)
from distinit.methods.pretext import Pretext, PretextConfig, PretextNet, task_heads


def test_vspp_plays_one_segment_faster():
    # 16 frames in 4 segments of 4; segment 2 (frames 8..11) at speed 3: 3 steps of 3 between
    # its 4 frames, the step into it stays normal.
    steps = vspp_steps(16, 4, speed=3, altered=2)
    assert steps.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 1, 1, 1, 1]
    # A remainder follows the last segment at normal speed; strides scale every step.
    assert vspp_steps(10, 4, speed=2, altered=3).tolist() == [0, 1, 1, 1, 1, 1, 1, 2, 1, 1]
    assert vspp_steps(8, 4, speed=2, altered=0, stride=2).tolist() == [0, 4, 2, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        vspp_steps(8, 4, speed=2, altered=4)


@pytest.mark.parametrize("clip_len,segments", [(16, 4), (8, 4), (8, 2), (10, 4), (16, 2)])
def test_every_vspp_segment_gets_the_same_cue(clip_len, segments):
    """The altered segment's cue (how many steps are `speed`) does not depend on which segment
    it is: the first segment used to get one step fewer than the others."""
    length = clip_len // segments
    for altered in range(segments):
        steps = vspp_steps(clip_len, segments, speed=3, altered=altered)
        fast = np.flatnonzero(steps == 3)
        assert len(fast) == length - 1
        # ... all between consecutive frames of that segment
        assert all(altered * length < i < (altered + 1) * length for i in fast)


def test_vspp_unlike_draws_another_speed_and_segment():
    """auxSKD's pair: the second clip's speed and segment both differ from the first's."""
    rng = np.random.default_rng(3)
    pairs = set()
    for _ in range(300):
        _, s1, g1 = vspp_sample(rng, 100, 16)
        _, s2, g2 = vspp_sample(rng, 100, 16, unlike={"speed": s1, "segment": g1})
        assert s1 != s2 and g1 != g2
        pairs.add((s1, s2))
    assert len(pairs) == 12  # every ordered pair of distinct speeds occurs


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


class _Encoder(torch.nn.Module):
    """(B, 3, T, H, W) -> (B, 8)."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())

    def forward_features(self, x):
        return self.net(x)


@pytest.mark.parametrize("task", ["vspp", "pace", "vcop"])
def test_pretext_loss_is_the_sum_of_each_heads_cross_entropy_and_logs_its_accuracy(task):
    """The loss against a hand computation from the heads' logits, and each head's accuracy
    (what `experiments/diagnostics.py` judges against 1 / classes) from the same logits."""
    pc = PretextConfig()
    heads = task_heads(task, pc)
    n_clips = pc.n_clips if task == "vcop" else 0
    torch.manual_seed(0)
    method = Pretext(PretextNet(_Encoder(), heads, n_clips, hidden=4, dropout=0.0))
    g = torch.Generator().manual_seed(1)
    shape = (6, n_clips, 3, 4, 8, 8) if n_clips else (6, 3, 4, 8, 8)
    batch = {"video": torch.randn(*shape, generator=g),
             **{f"video_{h}": torch.randint(n, (6,), generator=g) for h, n in heads.items()}}
    with torch.no_grad():
        logits = method.trainable(batch["video"])
    out = method(batch)
    assert set(out) == {"loss", *(f"loss_{h}" for h in heads), *(f"acc_{h}" for h in heads)}
    expected = sum(F.cross_entropy(logits[h], batch[f"video_{h}"]) for h in heads)
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    for h in heads:
        assert logits[h].shape == (6, heads[h])
        right = (logits[h].argmax(1) == batch[f"video_{h}"]).float().mean()
        assert out[f"acc_{h}"] == right
    out["loss"].backward()


def test_task_heads_name_each_heads_classes():
    pc = PretextConfig(max_segment=3, max_speed=5, max_pace=6, n_clips=4)
    assert task_heads("vspp", pc) == {"speed": 5, "segment": 3}
    assert task_heads("pace", pc) == {"pace": 6}
    assert task_heads("vcop", pc) == {"order": 24}
