"""The shipped real-data configs parse, build and run a few steps on tiny stand-in data."""

from pathlib import Path

import pytest
import torch

from distinit.config import load_config
from distinit.data.synth import generate_world
from distinit.jobs.run import distill, finetune, pretrain
from distinit.methods import config_class
from distinit.models.image_resnet import build_image_model
from distinit.optional import import_torchvision

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


# name -> (frames, number of teachers): what makes each config the paper row it quotes
DISTILL = {
    "distill_r2plus1d18_table1_center": ("center", 1),  # Table 1: 40.3
    "distill_r3d18_table1_center": ("center", 1),  # Table 1: 39.9
    "distill_r2plus1d18_table2_random": ("random", 1),  # Table 2: 43.2
    "distill_r2plus1d18_table2_2random": ("multi", 1),  # Table 2: 44.0
    "distill_r2plus1d18_imagenet_places": ("random", 2),  # no paper number
}


# name -> the method it pretrains with (`distinit pretrain METHOD`)
PRETRAIN = {"auxskd_r3d18_k100": "auxskd", "vspp_r3d18_k100": "vspp"}
TESTED_ELSEWHERE = {"rspnet_r3d18_k400",  # tests/test_rspnet.py
                    "modist_r3d18_k400"}  # tests/test_modist_recipe.py


def test_every_shipped_config_is_tested():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == {*DISTILL, *FINETUNE, *SCRATCH, *PRETRAIN,
                                                         *TESTED_ELSEWHERE}


@pytest.mark.parametrize("name", PRETRAIN)
def test_pretrain_configs_run(name, world, tmp_path):
    method = PRETRAIN[name]
    cfg = load_config(CONFIGS / f"{name}.yaml",
                      [*FAST, "model.width=8", "data.clip_len=16", f"data.videos={world.corpus_dir}",
                       f"out_dir={tmp_path}", "auxskd.queue=8"] if method == "auxskd" else
                      [*FAST, "model.width=8", f"data.videos={world.corpus_dir}",
                       f"out_dir={tmp_path}"], cls=config_class(method))
    assert cfg.data.clip_len == 16 and cfg.optim.optimizer == "sgd"  # the paper's recipe
    assert cfg.optim.weight_decay == 0.005 and cfg.optim.step_epochs == 6
    pretrain(cfg, method)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize("name", DISTILL)
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
    frames, num_teachers = DISTILL[name]
    assert (cfg.distill.frames, len(cfg.distill.teachers)) == (frames, num_teachers)
    if frames == "multi":
        assert cfg.distill.num_frames == 2
    o = cfg.optim  # the paper's recipe: 45 epochs of 1M clips, lr 0.01 dropped 10x every 10
    assert (o.lr, o.weight_decay, o.epochs, o.epoch_size, o.step_epochs, o.gamma) == (
        0.01, 1e-4, 45, 1_000_000, 10, 0.1)
    assert cfg.data.clip_len == 8 and cfg.data.mean == [] and cfg.data.std == []
    logs = distill(cfg)
    assert (tmp_path / "last.pt").is_file() and torch.isfinite(torch.tensor(logs["loss"]))
    if num_teachers == 2:
        assert "loss_t1" in logs  # the Places-365 teacher contributed


# name -> (lr, epochs, step_epochs): fine-tuning (8 x 40K clips) and scratch (45 x 40K clips)
FINETUNE = {"finetune_hmdb51": (0.002, 8, 2), "finetune_ucf101": (0.002, 8, 2)}
SCRATCH = {"scratch_hmdb51": (0.01, 45, 10), "scratch_ucf101": (0.01, 45, 10)}


@pytest.mark.parametrize("name", [*FINETUNE, *SCRATCH])
def test_finetune_and_scratch_configs_run(name, world, tmp_path):
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
    o = cfg.optim
    assert (o.lr, o.epochs, o.step_epochs) == {**FINETUNE, **SCRATCH}[name]
    assert o.weight_decay == 0.005 and o.epoch_size == 40_000 and cfg.data.mean == []
    result = finetune(cfg)
    assert result["videos"] == len(world.action_classes)
