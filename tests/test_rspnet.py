"""RSPNet: its clip sampler (speeds against indices, short videos), the RSP loss against its
formula, the whole loss against its InfoNCE and ranking terms, and a tiny CLI run that resumes
exactly."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from distinit.build import clip_dataset
from distinit.cli import main
from distinit.config import load_config
from distinit.data.clips.rspnet_sampling import FAST, NORMAL, key_clips, query_clip
from distinit.data.clips.views import View
from distinit.engine.checkpoint import load_checkpoint
from distinit.jobs.run import pretrain
from distinit.losses.contrastive import info_nce
from distinit.methods import config_class
from distinit.methods.rspnet import RSPNet, RSPNetConfig, RSPNetNet, relative_speed_loss


def _steps(indices):
    return set(np.diff(indices).tolist())


@pytest.mark.parametrize("stride", [1, 2])
def test_speed_labels_match_the_frames_drawn(stride):
    rng = np.random.default_rng(0)
    labels, starts = set(), {NORMAL: set(), FAST: set()}
    for _ in range(200):
        idx, label = query_clip(rng, 100, 8, speed=3, stride=stride)
        assert idx.shape == (8,) and _steps(idx) == {stride * (3 if label == FAST else 1)}
        labels.add(label)
        starts[label].add(int(idx[0]))
        keys = key_clips(rng, 100, 8, speed=3, stride=stride)
        assert keys.shape == (2, 8) and keys[NORMAL, 0] == keys[FAST, 0]  # one window
        assert _steps(keys[NORMAL]) == {stride} and _steps(keys[FAST]) == {3 * stride}
        assert keys.max() <= 99
    assert labels == {NORMAL, FAST}
    # Both speeds start anywhere a fast clip fits: the start says nothing about the speed.
    last = 100 - (7 * 3 * stride + 1)
    assert max(starts[NORMAL]) <= last and max(starts[FAST]) <= last
    assert max(starts[NORMAL]) > last - 10


def test_short_videos_repeat_their_last_frame_and_keep_the_labels():
    rng = np.random.default_rng(1)
    for _ in range(20):  # 15 frames fit a fast clip of 8 at speed 2 exactly: start 0
        idx, label = query_clip(rng, 15, 8, speed=2)
        assert idx[0] == 0 and idx[-1] == (14 if label == FAST else 7)
    idx, label = query_clip(np.random.default_rng(2), 10, 8, speed=2)
    keys = key_clips(np.random.default_rng(2), 10, 8, speed=2)
    assert keys[FAST].tolist() == [0, 2, 4, 6, 8, 9, 9, 9]
    assert keys[NORMAL].tolist() == list(range(8))
    assert key_clips(np.random.default_rng(0), 1, 4).tolist() == [[0] * 4, [0] * 4]
    with pytest.raises(ValueError, match="speed"):
        query_clip(np.random.default_rng(0), 50, 8, speed=1)


def test_the_dataset_cuts_the_query_and_both_keys(world):
    cfg = load_config("configs/demo/rspnet.yaml", ["data.cache=none"], cls=config_class("rspnet"))
    videos = sorted(world.corpus_dir.rglob("*.mp4"))[:3]
    views = [View("video", sampler="rspnet_query", options=(("speed", 2),)),
             View("video2", sampler="rspnet_keys", options=(("speed", 2),))]
    item = clip_dataset(cfg.data, videos, None, True, 0, views=views)[2]
    assert item["video"].shape == (3, 8, 32, 32) and item["video2"].shape == (2, 3, 8, 32, 32)
    assert item["video_speed"] in (NORMAL, FAST)


def test_rsp_loss_is_the_margin_ranking_of_scaled_similarities():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    other = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    # sample 0: (0.6 - 0.8) / 0.5 = -0.4 -> 1 + 0.4; sample 1: (1 - 0) / 0.5 = 2 > margin -> 0
    loss = relative_speed_loss(q, same, other, temperature=0.5, margin=1.0)
    assert loss.item() == pytest.approx((1.4 + 0.0) / 2)


class _Encoder(nn.Module):
    """(B, 3, T, H, W) -> (B, 8), BN-free: keys are the same whole or in chunks."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool3d(1), nn.Flatten())

    def forward_features(self, x):
        return self.net(x)


def test_loss_is_both_info_nce_terms_plus_rsp_with_keys_picked_by_speed():
    torch.manual_seed(0)
    cfg = RSPNetConfig(dim=4, queue=10, temperature=0.2, margin=0.5, weight_avid=0.5,
                       weight_rsp=2.0)
    method = RSPNet(RSPNetNet(_Encoder(), cfg.dim), cfg)
    g = torch.Generator().manual_seed(1)
    batch = {"video": torch.randn(4, 3, 4, 8, 8, generator=g),
             "video2": torch.randn(4, 2, 3, 4, 8, 8, generator=g),
             "video_speed": torch.tensor([0, 1, 1, 0])}
    fast = batch["video_speed"]
    queue = method.queue.keys.clone()
    with torch.no_grad():  # the key encoder is still the online one
        q = method.trainable(batch["video"])
        same = method.key(batch["video2"][torch.arange(4), fast])  # (B, 2, dim)
        other = method.key(batch["video2"][torch.arange(4), 1 - fast])
    out = method(batch)
    avid = info_nce(q[:, 0], same[:, 0], queue, 0.2) + info_nce(q[:, 0], other[:, 0], queue, 0.2)
    rsp = relative_speed_loss(q[:, 1], same[:, 1], other[:, 1], 0.2, 0.5)
    assert torch.allclose(out["loss"], 0.5 * avid + 2.0 * rsp, atol=1e-5)
    assert torch.allclose(out["loss_rsp"], rsp, atol=1e-5)
    right = ((q[:, 1] * same[:, 1]).sum(1) > (q[:, 1] * other[:, 1]).sum(1)).float().mean()
    assert out["acc_rsp"] == right
    for key, name in ((same, "acc_avid"), (other, "acc_avid_other")):  # top-1 of InfoNCE's logits
        logits = torch.cat([(q[:, 0] * key[:, 0]).sum(1, keepdim=True), q[:, 0] @ queue.T], 1)
        assert out[name] == (logits.argmax(1) == 0).float().mean(), name
    # the other-speed keys are queued (`builder_diffspeed_diffloss.py:545`)
    assert torch.allclose(method.queue.keys[:4], other[:, 0], atol=1e-6)
    assert int(method.queue.ptr) == 4
    out["loss"].backward()
    assert {k.split(".")[0] for k in method.method_state()} == {"key", "queue"}


TINY = ["model.width=8", "optim.batch_size=4", "optim.epochs=2", "log_every=1",
        "rspnet.queue=16"]


def test_a_tiny_run_logs_both_tasks_and_resumes_exactly(tmp_path, world):
    def run(name, *extra):
        return main(["pretrain", "rspnet", "configs/demo/rspnet.yaml", *TINY, *extra,
                     f"data.videos={world.corpus_dir}", f"data.cache_dir={world.root / 'cache'}",
                     f"out_dir={tmp_path / name}"])

    assert run("straight") == 0  # 12 videos, batches of 4: 6 steps
    logs = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
    assert {"acc_rsp", "acc_avid", "loss_rsp", "loss_avid"} <= set(logs[0])
    assert run("stopped", "stop_after=2") == 0
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["step"] == 2
    assert run("stopped", "--resume") == 0
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert b["step"] == 6
    for part in ("model", "method"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert any(k.startswith("layer1") for k in a["backbone"])


def test_the_paper_recipe_holds_the_official_numbers_and_runs(tmp_path, world):
    cfg = load_config("configs/rspnet_r3d18_k400.yaml",
                      ["data.resize=36", "data.crop=32", "data.num_workers=0", "model.width=8",
                       "optim.batch_size=2", "stop_after=2", f"data.videos={world.corpus_dir}",
                       f"out_dir={tmp_path}"], cls=config_class("rspnet"))
    rc, o = cfg.rspnet, cfg.optim
    assert (rc.queue, rc.momentum, rc.temperature, rc.speed, rc.margin) == (16384, 0.999, 0.07,
                                                                            2, 2.0)
    assert (o.optimizer, o.lr, o.weight_decay, o.schedule, o.epochs) == ("sgd", 0.4, 1e-4,
                                                                         "cosine", 200)
    assert cfg.data.clip_len == 16 and cfg.data.scale == [0.4, 1.0]
    pretrain(cfg, "rspnet")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
