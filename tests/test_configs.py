"""The shipped real-data configs parse, build and run a few steps on tiny stand-in data."""

from pathlib import Path

import pytest
import torch

from distinit.config import load_config
from distinit.data.synth import generate_world
from distinit.models.image_resnet import build_image_model
from distinit.optional import import_torchvision
from distinit.run import distill, finetune

CONFIGS = Path(__file__).parent.parent / "configs"
FAST = ["data.resize=36", "data.crop=32", "data.num_workers=0", "data.num_test_clips=2",
        "optim.batch_size=2", "stop_after=2", "log_every=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), seed=0, size="tiny")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Stand-ins for the real files, in their real formats: torchvision's ImageNet ResNet-50
    state dict and CSAILVision's Places-365 checkpoint ({"state_dict": module.* keys})."""
    d = tmp_path_factory.mktemp("weights")
    tv = import_torchvision()
    torch.save(tv.models.resnet50().state_dict(), d / "resnet50-0676ba61.pth")
    places = build_image_model("resnet50", num_classes=365).state_dict()
    torch.save({"epoch": 90, "arch": "resnet50",
                "state_dict": {f"module.{k}": v for k, v in places.items()}},
               d / "resnet50_places365.pth.tar")
    return d


@pytest.mark.parametrize("name", ["distill_r2plus1d18_kinetics", "distill_r3d18_kinetics"])
def test_distill_configs_run(name, world, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(weights.parent)  # the configs name weights/... relative to the cwd
    (weights.parent / "weights").mkdir(exist_ok=True)
    for f in weights.iterdir():
        link = weights.parent / "weights" / f.name
        if not link.exists():
            link.symlink_to(f)
    cfg = load_config(CONFIGS / f"{name}.yaml",
                      [*FAST, f"data.videos={world.corpus_dir}", f"out_dir={tmp_path}",
                       "distill.teachers.0.input_size=64"])
    assert cfg.optim.lr == 0.01 and cfg.data.clip_len == 8
    logs = distill(cfg)
    assert (tmp_path / "last.pt").is_file() and torch.isfinite(torch.tensor(logs["loss"]))
    if len(cfg.distill.teachers) == 2:
        assert "loss_t1" in logs  # the Places-365 teacher contributed


@pytest.mark.parametrize("name", ["finetune_hmdb51", "finetune_ucf101"])
def test_finetune_configs_run(name, world, tmp_path):
    if "ucf" in name:  # UCF-101's official split files over the stand-in videos
        split_dir = tmp_path / "ucfTrainTestlist"
        split_dir.mkdir()
        classes = world.action_classes
        (split_dir / "classInd.txt").write_text(
            "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
        train, test = [], []
        for i, c in enumerate(classes):
            names = sorted(p.name for p in (world.actions_videos / c).glob("*.mp4"))
            train.append(f"{c}/{names[0]} {i + 1}\n")
            test.append(f"{c}/{names[1]}\n")
        (split_dir / "trainlist01.txt").write_text("".join(train))
        (split_dir / "testlist01.txt").write_text("".join(test))
    else:
        split_dir = world.actions_splits
    cfg = load_config(CONFIGS / f"{name}.yaml",
                      [*FAST, f"data.video_root={world.actions_videos}", f"data.split_dir={split_dir}",
                       "model.init=scratch", f"out_dir={tmp_path / 'run'}"])
    assert cfg.optim.lr == 0.002 and cfg.optim.weight_decay == 0.005
    result = finetune(cfg)
    assert result["videos"] == len(world.action_classes)
