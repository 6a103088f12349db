"""configs/modist_r3d18_k400.yaml: MSCL's MoDist settings parse, build, and run two steps on
tiny synthetic videos with RAFT flow computed here (torchvision's raft_small, weights made here)."""

from pathlib import Path

import pytest
import torch

from distinit.config import load_config
from distinit.data.flow.compute import compute_flow, read_flow_meta
from distinit.data.synth import generate_world
from distinit.engine.checkpoint import load_checkpoint
from distinit.jobs.run import pretrain
from distinit.methods import config_class
from distinit.optional import import_torchvision

RECIPE = Path(__file__).parent.parent / "configs" / "modist_r3d18_k400.yaml"
SHRINK = ["data.resize=36", "data.crop=32", "data.num_workers=0", "model.width=8",
          "modist.queue=8", "optim.batch_size=2", "stop_after=2", "log_every=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(a list of three of a tiny world's videos, their RAFT flow folder)."""
    root = tmp_path_factory.mktemp("modist_recipe")
    world = generate_world(root / "world", seed=0, size="tiny")
    listing = root / "videos.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(world.corpus_dir.rglob("*.mp4"))[:3]))
    weights = root / "raft_small.pth"
    torch.manual_seed(0)
    torch.save(import_torchvision().models.optical_flow.raft_small().state_dict(), weights)
    flow = root / "flow"
    compute_flow(listing, flow, "raft_small", "float16", workers=1, weights=str(weights),
                 iters=2, device="cpu", gap=8)
    return listing, flow


def test_recipe_holds_mscl_settings():
    cfg = load_config(RECIPE, cls=config_class("modist"))
    m, d, o = cfg.modist, cfg.data, cfg.optim
    assert (m.dim, m.queue, m.momentum, m.temperature, m.motion) == (128, 65536, 0.994, 0.07, True)
    assert m.momentum_schedule == "cosine"  # MSCL moco.py:413-414
    assert (d.clip_len, d.stride, d.crop, d.scale) == (8, 16, 112, [0.2, 1.0])
    assert (d.color_jitter, d.color_jitter_p, d.grayscale_p, d.blur_p) == (
        [0.4, 0.4, 0.4, 0.1], 0.8, 0.2, 0.5)
    assert (o.optimizer, o.lr, o.weight_decay, o.schedule, o.epochs, o.batch_size,
            o.clip_grad) == ("sgd", 0.02, 1e-4, "cosine", 400, 32, 40.0)
    assert cfg.model.arch == "r3d_18"
    assert d.flow_format == "rgb" and "gap8" in d.flow_dir  # MSCL's colour wheel, t to t + 8


def test_recipe_runs_on_stand_in_data(corpus, tmp_path):
    listing, flow = corpus
    assert read_flow_meta(flow)["algorithm"] == "raft_small" and read_flow_meta(flow)["gap"] == 8
    cfg = load_config(RECIPE, [*SHRINK, f"data.videos={listing}", f"data.flow_dir={flow}",
                               f"out_dir={tmp_path}"], cls=config_class("modist"))
    logs = pretrain(cfg, "modist")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert {"loss_rgb", "loss_flow", "loss_rgb_flow", "loss_flow_rgb"} <= set(logs)
    assert torch.isfinite(torch.tensor(float(logs["loss"])))
