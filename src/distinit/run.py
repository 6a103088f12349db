"""`distinit distill | finetune | eval`: build data, models and method from a config and run."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from distinit import dist
from distinit.checkpoint import backbone_state, load_checkpoint, model_state
from distinit.config import Config, DataConfig, ModelConfig, config_from_args
from distinit.data.datasets import VideoClipDataset
from distinit.data.splits import load_labeled
from distinit.data.transforms import ClipTransform
from distinit.data.video import list_videos
from distinit.errors import UserError
from distinit.evaluate import evaluate
from distinit.methods.distinit import DistInit, MultiHeadStudent
from distinit.methods.supervised import Supervised
from distinit.models.inflate import inflate_from_file
from distinit.models.students import STUDENTS, build_student
from distinit.models.teachers import build_teacher
from distinit.train import resolve_precision, train, use_channels_last

COMMANDS = ("distill", "finetune", "eval")


# ---- building blocks (the demo and tests use these too) -------------------------------------

def make_student(mc: ModelConfig, num_classes: int) -> nn.Module:
    kwargs = {}
    if mc.arch in STUDENTS:  # user architectures take no scaling arguments
        kwargs = {"width": mc.width, "stem_stride": mc.stem_stride}
        if mc.layers:
            kwargs["layers"] = mc.layers
        if mc.stem_kernel:
            kwargs["stem_kernel"] = tuple(mc.stem_kernel)
    return build_student(mc.arch, num_classes=num_classes, **kwargs)


def clip_dataset(dc: DataConfig, videos: list, labels: list[int] | None, train_mode: bool,
                 seed: int) -> VideoClipDataset:
    transform = ClipTransform(train=train_mode, resize=dc.resize or None, crop=dc.crop,
                              mean=dc.mean, std=dc.std, flip=dc.flip and train_mode)
    return VideoClipDataset(videos, labels, clip_len=dc.clip_len, stride=dc.stride,
                            mode="train" if train_mode else "test",
                            num_clips=1 if train_mode else dc.num_test_clips,
                            transform=transform, backend=dc.backend,
                            cache=None if dc.cache == "none" else dc.cache,
                            cache_dir=dc.cache_dir or None, seed=seed)


def labeled_split(dc: DataConfig, subset: str):
    return load_labeled(dc.format, dc.video_root, dc.split_dir, dc.split, subset)


def init_student(student: nn.Module, mc: ModelConfig) -> None:
    """Scratch, a pretrained checkpoint (distillation, supervised or torchvision), or inflation."""
    if mc.init == "scratch":
        return
    if not mc.weights:
        raise UserError(f"model.init={mc.init} needs model.weights=PATH")
    if mc.init == "inflate":
        inflate_from_file(student, mc.weights)
        return
    if mc.init != "checkpoint":
        raise UserError(f"model.init must be scratch, checkpoint or inflate, got {mc.init!r}")
    state = backbone_state(load_checkpoint(mc.weights))
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise UserError(
            f"{mc.weights} does not match model.arch={mc.arch} (width {mc.width}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}; check model.arch/width/layers")


class _FrozenBackbone(Supervised):
    """Linear probe: only the classifier trains; batch-norm statistics stay frozen too."""

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def finetune_method(student: nn.Module, mc: ModelConfig) -> Supervised:
    if not mc.linear_probe:
        return Supervised(student)
    for name, p in student.named_parameters():
        p.requires_grad = name.startswith("fc.")
    return _FrozenBackbone(student)


def eval_student(cfg: Config, student: nn.Module, test_set: VideoClipDataset,
                 num_videos: int, num_classes: int) -> dict:
    device = next(student.parameters()).device
    return evaluate(student, test_set, num_videos, num_classes,
                    batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers,
                    device=device, amp_dtype=resolve_precision(cfg.precision, device),
                    channels_last=use_channels_last(cfg.channels_last, device))


# ---- the three jobs ---------------------------------------------------------------------------

def distill(cfg: Config, resume: bool = False) -> dict:
    dc, dcfg = cfg.data, cfg.distill
    if not dcfg.teachers:
        raise UserError("distill needs at least one teacher: set distill.teachers in the config "
                        "(e.g. - {spec: 'torchvision:resnet50', weights: resnet50.pth})")
    if not dc.videos:
        raise UserError("distill needs data.videos: a folder of videos or a list file")
    teachers = [build_teacher(t.spec, weights=t.weights or None, arch=t.arch or None,
                              input_size=t.input_size or None, mean=t.mean or None,
                              std=t.std or None) for t in dcfg.teachers]
    videos = list_videos(dc.videos, dc.extensions)
    student = make_student(cfg.model, num_classes=1)  # its fc is unused; heads sit beside it
    init_student(student, cfg.model)
    net = MultiHeadStudent(student, [t.num_classes for t in teachers])
    method = DistInit(net, teachers, [t.weight for t in dcfg.teachers], dc.mean, dc.std,
                      frames=dcfg.frames, num_frames=dcfg.num_frames,
                      temperature=dcfg.temperature, loss=dcfg.loss, max_entropy=dcfg.max_entropy)
    dataset = clip_dataset(dc, videos, None, train_mode=True, seed=cfg.seed)
    return train(cfg, method, dataset, resume=resume, desc="distill")


def finetune(cfg: Config, resume: bool = False) -> dict:
    train_split, test_split = labeled_split(cfg.data, "train"), labeled_split(cfg.data, "test")
    num_classes = len(train_split.classes)
    student = make_student(cfg.model, num_classes)
    init_student(student, cfg.model)
    method = finetune_method(student, cfg.model)
    train_set = clip_dataset(cfg.data, train_split.videos, train_split.labels, True, cfg.seed)
    test_set = clip_dataset(cfg.data, test_split.videos, test_split.labels, False, cfg.seed)
    n_test = len(test_split.samples)

    def on_epoch_end(epoch: int) -> dict:
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            return {f"test_{k}": v for k, v in
                    eval_student(cfg, student, test_set, n_test, num_classes).items()}
        return {}

    logs = train(cfg, method, train_set, resume=resume, head_prefixes=("fc.",),
                 on_epoch_end=on_epoch_end, desc="finetune")
    result = eval_student(cfg, student, test_set, n_test, num_classes)
    result["train_loss"] = logs.get("loss")
    _write_result(cfg, result, train_split.classes)
    return result


def evaluate_checkpoint(cfg: Config) -> dict:
    test_split = labeled_split(cfg.data, "test")
    num_classes = len(test_split.classes)
    if not cfg.model.weights:
        raise UserError("eval needs model.weights=PATH (a fine-tuned checkpoint, e.g. RUN/last.pt)")
    state = model_state(load_checkpoint(cfg.model.weights))
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        raise UserError(f"{cfg.model.weights} classifies {fc.shape[0]} classes but the test split "
                        f"has {num_classes}; evaluate it on the dataset it was fine-tuned on")
    student = make_student(cfg.model, num_classes)
    try:
        student.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{cfg.model.weights} does not match model.arch={cfg.model.arch}: "
                        f"{str(e).splitlines()[0]}") from None
    test_set = clip_dataset(cfg.data, test_split.videos, test_split.labels, False, cfg.seed)
    result = eval_student(cfg, student, test_set, len(test_split.samples), num_classes)
    _write_result(cfg, result, test_split.classes)
    return result


def _write_result(cfg: Config, result: dict, classes: list[str]) -> None:
    if dist.rank_world()[0] != 0:  # only rank 0 writes files
        return
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**result, "num_classes": len(classes),
                                                  "split": cfg.data.split}, indent=2))


def run_splits(cfg: Config, splits: list[int], job, **kwargs) -> dict:
    """Run `job` once per split (out_dir/splitN) and report each split and their mean."""
    if len(splits) == 1:
        return job(replace(cfg, data=replace(cfg.data, split=splits[0])), **kwargs)
    per_split = {}
    for s in splits:
        weights = cfg.model.weights.replace("{split}", str(s))
        sub = replace(cfg, out_dir=str(Path(cfg.out_dir) / f"split{s}"),
                      data=replace(cfg.data, split=s), model=replace(cfg.model, weights=weights))
        per_split[s] = job(sub, **kwargs)
    keys = ("clip_acc", "top1", "top5")
    mean = {k: sum(r[k] for r in per_split.values()) / len(per_split) for k in keys}
    summary = {"splits": per_split, "mean": mean}
    if dist.rank_world()[0] == 0:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out_dir) / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse(argv: list[str], prog: str) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog=f"distinit {prog}")
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument("--splits", default="", help="comma-separated splits, e.g. 1,2,3")
    ns = parser.parse_intermixed_args(argv)
    return config_from_args(ns.args), ns


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    cfg, ns = parse(rest, command)
    splits = [int(s) for s in ns.splits.split(",") if s] or [cfg.data.split]
    torch.set_float32_matmul_precision("high")
    if command == "distill":
        result = distill(cfg, resume=ns.resume)
    elif command == "finetune":
        result = run_splits(cfg, splits, finetune, resume=ns.resume)
    elif command == "eval":
        result = run_splits(cfg, splits, evaluate_checkpoint)
    else:
        raise UserError(f"unknown command {command}; valid: {', '.join(COMMANDS)}")
    print(json.dumps(result, indent=2, default=str))
    return 0
