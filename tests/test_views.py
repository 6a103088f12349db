"""Multi-view samples: RGB and flow of one clip share frames and crop; the flow student path
(DistInit's Table 5: the student sees flow, the teacher an RGB frame of the same clip)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import SMALL

from distinit.build import clip_dataset
from distinit.cli import main
from distinit.config import load_config
from distinit.data.clips.transforms import ClipTransform
from distinit.data.clips.views import View
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def flows(world, tmp_path_factory):
    """`distinit flow` of the tiny world's corpus and action set."""
    root = tmp_path_factory.mktemp("flow")
    for src, name in ((world.corpus_dir, "corpus"), (world.actions_videos, "actions")):
        assert main(["flow", str(src), str(root / name), "--workers", "1"]) == 0
    return root


def _data(world, flows, *extra):
    cfg = load_config(None, [*SMALL, "data.resize=36", "data.scale=[0.4,1]", "data.flip=true", "data.mean=[0.5,0.5,0.5]",
                             "data.std=[0.25,0.25,0.25]",
                             f"data.videos={world.corpus_dir}",
                             f"data.flow_dir={flows / 'corpus'}", *extra])
    return cfg.data


def test_a_view_with_frames_of_gets_the_same_frames_crop_and_flip(world, flows):
    views = [View("a", "flow"), View("b", "flow", frames_of="a"), View("c", "flow")]
    ds = clip_dataset(_data(world, flows), world.corpus_videos, None, True, 0, views)
    differ = 0
    for item in range(8):
        sample = ds[item]
        assert sample["a"].shape == (2, 8, 32, 32)
        assert torch.equal(sample["a"], sample["b"])  # same frames, same window, same flip
        differ += not torch.equal(sample["a"], sample["c"])  # its own time and augmentation
    assert differ >= 6


def test_rgb_and_flow_views_of_one_clip_and_the_default_recipe_is_unchanged(world, flows):
    dc = _data(world, flows)
    views = [View("video"), View("flow", "flow", frames_of="video"), View("video2", rate=2)]
    ds = clip_dataset(dc, world.corpus_videos, None, True, 0, views)
    sample = ds[3]
    assert sample["video"].shape == (3, 8, 32, 32) and sample["flow"].shape == (2, 8, 32, 32)
    assert sample["video2"].shape == (3, 8, 32, 32)
    # Adding views leaves the first view's draws as they were: runs stay reproducible.
    plain = clip_dataset(dc, world.corpus_videos, None, True, 0)[3]
    assert torch.equal(plain["video"], sample["video"]) and plain["rng_seed"] == sample["rng_seed"]


def test_a_mirrored_flow_clip_points_the_other_way():
    flow = torch.zeros(2, 6, 6, 2)
    flow[..., 0] = torch.arange(6.0)  # x flow grows to the right
    t = ClipTransform(train=True, resize=None, crop=6, mean=(0, 0), std=(1, 1), flip=True,
                      flow=True)
    flips = 0
    for seed in range(6):
        out = t(flow, generator=torch.Generator().manual_seed(seed))
        mirrored = torch.equal(out[0, 0, 0], -torch.arange(5.0, -1, -1))
        flips += mirrored
        assert mirrored or torch.equal(out[0, 0, 0], torch.arange(6.0))
    assert 0 < flips < 6


def test_flow_views_without_flow_say_what_to_run(world, flows, tmp_path):
    no_dir = _data(world, flows, "data.flow_dir=")
    with pytest.raises(UserError, match="data.flow_dir"):
        clip_dataset(no_dir, world.corpus_videos, None, True, 0, [View("f", "flow")])
    empty = tmp_path / "empty"
    (empty).mkdir()
    (empty / "flow.json").write_text((flows / "corpus" / "flow.json").read_text())
    with pytest.raises(UserError, match="distinit flow"):
        clip_dataset(_data(world, flows, f"data.flow_dir={empty}"), world.corpus_videos, None,
                     True, 0, [View("f", "flow")])


def test_flow_student_distilled_from_rgb_teacher_then_finetuned(world, flows, teacher_file,
                                                                labeled, tmp_path):
    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    assert main(["distill", *SMALL, teachers, f"data.videos={world.corpus_dir}",
                 "data.input=flow", f"data.flow_dir={flows / 'corpus'}",
                 f"out_dir={tmp_path / 'd'}"]) == 0
    stem = load_checkpoint(tmp_path / "d" / "last.pt")["backbone"]["stem.0.weight"]
    assert stem.shape[1] == 2  # a flow student
    flow_ft = [*SMALL, *labeled, "data.input=flow", f"data.flow_dir={flows / 'actions'}"]
    assert main(["finetune", *flow_ft, "model.init=checkpoint",
                 f"model.weights={tmp_path / 'd' / 'last.pt'}", f"out_dir={tmp_path / 'f'}"]) == 0
    result = json.loads((tmp_path / "f" / "results.json").read_text())
    assert result["videos"] == len(world.action_classes)
    # Mean inflation of an RGB image model into the flow student (the paper's Table 5 baseline).
    tiny = ["model.stem_kernel=[3,3]", "model.stem_stride=1"]  # resnet_tiny's own stem
    assert main(["finetune", *flow_ft, *tiny, "model.init=inflate",
                 f"model.weights={teacher_file}", f"out_dir={tmp_path / 'i'}"]) == 0
    inflated = load_checkpoint(tmp_path / "i" / "last.pt")["model"]["stem.0.weight"]
    assert inflated.shape[1] == 2
    assert np.isfinite(inflated.numpy()).all()


def test_the_modist_recipe_runs_and_its_rgb_encoder_finetunes(world, flows, labeled, tmp_path):
    recipe = CONFIGS / "demo" / "modist.yaml"
    tiny = ["model.width=8", "optim.batch_size=4", "optim.epochs=1", "modist.queue=16",
            "data.num_workers=0", "data.cache=none", f"data.videos={world.corpus_dir}"]
    assert main(["pretrain", "modist", str(recipe), *tiny, f"data.flow_dir={flows / 'corpus'}",
                 f"out_dir={tmp_path / 'm'}"]) == 0
    ckpt = load_checkpoint(tmp_path / "m" / "last.pt")
    assert {"queue_rgb.keys", "queue_flow.ptr", "key_flow.head.0.weight"} <= set(ckpt["method"])
    assert ckpt["backbone"]["stem.0.weight"].shape[1] == 3  # the RGB encoder is exported
    assert main(["pretrain", "modist", str(recipe), *tiny, "modist.motion=false",
                 f"out_dir={tmp_path / 'rgb'}"]) == 0
    assert main(["finetune", str(CONFIGS / "demo" / "finetune.yaml"), *labeled, "model.width=8",
                 "optim.epochs=1", "optim.batch_size=4", "data.cache=none", "model.init=checkpoint",
                 f"model.weights={tmp_path / 'm' / 'last.pt'}", f"out_dir={tmp_path / 'f'}"]) == 0


def test_colour_wheel_flow_is_torchvisions_image_of_the_cropped_mirrored_flow(world, flows):
    """data.flow_format=rgb: each frame of the flow view is torchvision's colour-wheel image
    of that frame's cropped (and, when drawn, mirrored) vectors, in [0, 1]: the same crop and
    flip as the vectors, rendered after them."""
    from distinit.optional import import_torchvision

    to_image = import_torchvision().utils.flow_to_image
    views = [View("v", "flow"), View("w", "flow", frames_of="v")]
    vectors = clip_dataset(_data(world, flows), world.corpus_videos, None, True, 0, views)
    wheel = clip_dataset(_data(world, flows, "data.flow_format=rgb"), world.corpus_videos, None,
                         True, 0, views)
    for item in range(4):
        v, w = vectors[item]["v"], wheel[item]["v"]
        assert w.shape == (3, 8, 32, 32) and w.min() >= 0 and w.max() <= 1
        for t in range(8):
            assert torch.equal(w[:, t], to_image(v[:, t]).float() / 255)
    # Mirroring flow negates dx: rightward motion mirrored renders as leftward motion.
    right = torch.zeros(2, 1, 6, 6, 2)[0]
    right[..., 0] = 1.0
    t = ClipTransform(train=True, resize=None, crop=6, mean=(0,) * 3, std=(1,) * 3, flip=True,
                      flow=True, render=True)
    colours = {tuple(t(right, generator=torch.Generator().manual_seed(s))[:, 0, 0, 0].tolist())
               for s in range(8)}
    left = -right.permute(3, 0, 1, 2)[:, 0]
    assert colours == {tuple((to_image(-left).float() / 255)[:, 0, 0].tolist()),
                       tuple((to_image(left).float() / 255)[:, 0, 0].tolist())}


def test_a_colour_wheel_modist_has_a_three_channel_motion_pathway(world, flows, tmp_path):
    recipe = CONFIGS / "demo" / "modist.yaml"
    tiny = ["model.width=8", "optim.batch_size=4", "optim.epochs=1", "modist.queue=16",
            "data.num_workers=0", "data.cache=none", f"data.videos={world.corpus_dir}",
            "optim.epoch_size=8"]
    assert main(["pretrain", "modist", str(recipe), *tiny, f"data.flow_dir={flows / 'corpus'}",
                 "data.flow_format=rgb", f"out_dir={tmp_path / 'm'}"]) == 0
    method = load_checkpoint(tmp_path / "m" / "last.pt")["method"]
    stems = [k for k in method if "flow" in k and k.endswith("stem.0.weight")]
    assert stems and all(method[k].shape[1] == 3 for k in stems)  # student and key encoder
