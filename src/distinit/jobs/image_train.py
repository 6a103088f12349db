"""`distinit train-image`: train a 2D image classifier on stills, to teach or to inflate.

The paper's teachers are ImageNet and Places ResNets trained elsewhere; a user with weights on
disk passes those to `distill`. This job makes such a network from an ImageFolder tree (the
synthetic world's object and scene stills, or a user's own), with the same training loop,
config and run-folder rules as the video jobs, and writes `teacher.pt`, which
`distill.teachers: [{spec: ckpt:OUT/teacher.pt}]` and `model.init=inflate` both read.

model.arch is an image ResNet (`resnet18`, `resnet50`, `resnet_tiny`, ...); model.width,
model.layers and model.stem_stride scale it, and a 3x3 spatial `model.stem_kernel` gives the
small-input stem (3x3 convolution, no max-pool) that matches the video students' 3x3 stem, so
the network inflates one to one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from distinit.build import color_steps
from distinit.config import Config
from distinit.data.clips.datasets import ImageFolderDataset
from distinit.data.clips.transforms import ClipTransform
from distinit.engine import dist, run_dir
from distinit.engine.checkpoint import seed_all
from distinit.engine.runtime import Runtime
from distinit.engine.train import train
from distinit.errors import UserError
from distinit.jobs.evaluate import evaluate
from distinit.methods.supervised import Supervised
from distinit.models.image_resnet import IMAGE_MODELS, build_image_model
from distinit.models.teachers import IMAGENET_MEAN, IMAGENET_STD, teacher_checkpoint

CHECKPOINT = "teacher.pt"


class _AsClips(Dataset):
    """Stills as one-clip 'videos', so `evaluate` scores them like clips."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {**self.base[i], "video_idx": i}


def arch_kwargs(cfg: Config) -> dict:
    """The image model's constructor arguments from model.* (see the module docstring)."""
    mc = cfg.model
    kwargs: dict = {"width": mc.width, "stem_stride": mc.stem_stride}
    if mc.layers:
        kwargs["layers"] = list(mc.layers)
    if mc.stem_kernel:
        if mc.stem_kernel[-1] not in (3, 7):
            raise UserError(f"an image ResNet's stem is 7x7 (with max-pool) or 3x3 (without); "
                            f"got model.stem_kernel={mc.stem_kernel}")
        kwargs["small_input"] = mc.stem_kernel[-1] == 3
    return kwargs


@run_dir.one_writer
def train_image_model(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    dc, mc = cfg.data, cfg.model
    if mc.arch not in IMAGE_MODELS:
        raise UserError(f"train-image needs an image model in model.arch; got {mc.arch!r}, "
                        f"valid: {', '.join(IMAGE_MODELS)}")
    if not dc.images:
        raise UserError("train-image needs data.images: a folder of class folders of images")
    mean, std = list(dc.mean or IMAGENET_MEAN), list(dc.std or IMAGENET_STD)
    cfg = replace(cfg, data=replace(dc, mean=mean, std=std))
    train_tf = ClipTransform(train=True, resize=dc.resize or None, crop=dc.crop, mean=mean,
                             std=std, flip=dc.flip, scale=dc.scale, color=color_steps(dc))
    train_set = ImageFolderDataset(dc.images, train_tf, cache=dc.cache != "none", seed=cfg.seed)
    classes = train_set.classes
    test_set = test_images(cfg, classes) if dc.images_test else None  # checked before training
    seed_all(cfg.seed)
    kwargs = arch_kwargs(cfg)
    net = build_image_model(mc.arch, num_classes=len(classes), **kwargs)
    logs = train(cfg, Supervised(net, input_key="image"), train_set, resume=resume,
                 overwrite=overwrite, desc="train-image")
    result = {"train_loss": logs.get("loss"), "num_classes": len(classes)}
    if test_set is not None:
        result.update(evaluate_images(cfg, net, test_set))
    if dist.rank_world()[0] == 0:
        out = Path(cfg.out_dir)
        torch.save(teacher_checkpoint(net.cpu(), mc.arch, len(classes), arch_kwargs=kwargs,
                                      mean=mean, std=std, classes=classes), out / CHECKPOINT)
        (out / "results.json").write_text(json.dumps(result, indent=2))
    dist.barrier()
    return result


def test_images(cfg: Config, classes: list[str]) -> ImageFolderDataset:
    """data.images_test with centre crops; its class folders must be the training set's."""
    dc = cfg.data
    test_tf = ClipTransform(train=False, resize=dc.resize or None, crop=dc.crop, mean=dc.mean,
                            std=dc.std, flip=False)
    test_set = ImageFolderDataset(dc.images_test, test_tf, cache=dc.cache != "none")
    if test_set.classes != classes:
        raise UserError(f"data.images_test ({dc.images_test}) has classes {test_set.classes[:5]}"
                        f"... but data.images has {classes[:5]}...; both need the same class folders")
    return test_set


def evaluate_images(cfg: Config, net: torch.nn.Module, test_set: ImageFolderDataset) -> dict:
    """Top-1 and top-5 (%) on the test stills."""
    r = evaluate(net, _AsClips(test_set), len(test_set), len(test_set.classes),
                 batch_size=max(cfg.optim.batch_size, 64),
                 runtime=Runtime.of(cfg, next(net.parameters()).device), input_key="image")
    return {"test_top1": r["top1"], "test_top5": r["top5"], "test_images": r["videos"]}


def main(argv: list[str]) -> int:
    from distinit.jobs.run import parse

    cfg, ns = parse(argv, "train-image")
    torch.set_float32_matmul_precision("high")
    print(json.dumps(train_image_model(cfg, resume=ns.resume, overwrite=ns.overwrite), indent=2))
    return 0
