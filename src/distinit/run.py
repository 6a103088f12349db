"""`distinit distill | finetune | eval`: build data, models and method from a config and run."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distinit import dist, run_dir
from distinit.checkpoint import backbone_state, load_checkpoint, model_state, seed_all
from distinit.config import (
    KINETICS_MEAN,
    KINETICS_STD,
    Config,
    DataConfig,
    ModelConfig,
    config_from_args,
)
from distinit.data.datasets import VideoClipDataset
from distinit.data.splits import load_labeled
from distinit.data.transforms import ClipTransform
from distinit.data.video import list_videos
from distinit.errors import UserError
from distinit.evaluate import evaluate
from distinit.methods.distinit import DistInit, MultiHeadStudent, holdout_agreement
from distinit.methods.supervised import Supervised
from distinit.models.inflate import inflate_from_file
from distinit.models.students import STUDENTS, build_student
from distinit.models.teachers import IMAGENET_MEAN, IMAGENET_STD, build_teacher, read_checkpoint
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
                              mean=dc.mean, std=dc.std, flip=dc.flip and train_mode,
                              scale=dc.scale)
    return VideoClipDataset(videos, labels, clip_len=dc.clip_len, stride=dc.stride,
                            mode="train" if train_mode else "test",
                            num_clips=1 if train_mode else dc.num_test_clips,
                            transform=transform, backend=dc.backend,
                            cache=None if dc.cache == "none" else dc.cache,
                            cache_dir=dc.cache_dir or None, seed=seed)


def labeled_split(dc: DataConfig, subset: str):
    return load_labeled(dc.format, dc.video_root, dc.split_dir, dc.split, subset)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                 mc: ModelConfig, skip: tuple[str, ...] = ()) -> None:
    """Load `state` into `model`, or say which keys and shapes differ (keys under `skip` may be
    absent: a fine-tuning run's new classifier)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(skip)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(shapes)} shapes differ, e.g. {shapes[0]}" if shapes else "",
                 f"missing {missing[:3]}" if missing else "",
                 f"unexpected {unexpected[:3]}" if unexpected else ""]
        raise UserError(
            f"{source} does not match model.arch={mc.arch} width={mc.width} "
            f"layers={mc.layers or 'default'}: {'; '.join(p for p in parts if p)}. Set model.arch, "
            "model.width, model.layers, model.stem_* as the run that wrote it (its config.yaml)")
    model.load_state_dict(state, strict=not skip)


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
    load_weights(student, state, mc.weights, mc, skip=("fc.",))


def resolve_normalization(cfg: Config, trained_weights: str = "") -> Config:
    """Fill an empty data.mean/std with what the initial weights expect: an inflated image
    model's own (ImageNet's for an ImageNet ResNet), the run's that wrote `trained_weights`
    (a checkpoint of ours), else Kinetics' (torchvision's video models)."""
    dc, mc = cfg.data, cfg.model
    if dc.mean and dc.std:
        return cfg
    mean, std = KINETICS_MEAN, KINETICS_STD
    if mc.init == "inflate" and mc.weights:
        _, meta = read_checkpoint(mc.weights, "a 2D ResNet", what="2D weights to inflate")
        mean, std = meta.get("mean", IMAGENET_MEAN), meta.get("std", IMAGENET_STD)
    elif trained_weights:
        saved = load_checkpoint(trained_weights).get("config", {}).get("data", {})
        if saved.get("mean") and saved.get("std"):
            mean, std = saved["mean"], saved["std"]
    return replace(cfg, data=replace(dc, mean=list(dc.mean or mean), std=list(dc.std or std)))


def pretrained_weights(mc: ModelConfig) -> str:
    return mc.weights if mc.init == "checkpoint" else ""


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

def distill(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    dc, dcfg = cfg.data, cfg.distill
    if not dcfg.teachers:
        raise UserError("distill needs at least one teacher: set distill.teachers in the config "
                        "(e.g. - {spec: 'torchvision:resnet50', weights: resnet50.pth})")
    if not dc.videos:
        raise UserError("distill needs data.videos: a folder of videos or a list file")
    cfg = resolve_normalization(cfg, pretrained_weights(cfg.model))
    seed_all(cfg.seed)
    teachers = [build_teacher(t.spec, weights=t.weights or None, arch=t.arch or None,
                              input_size=t.input_size or None, mean=t.mean or None,
                              std=t.std or None) for t in dcfg.teachers]
    videos = list_videos(cfg.data.videos, cfg.data.extensions)
    student = make_student(cfg.model, num_classes=0)  # no classifier: the heads sit beside it
    init_student(student, cfg.model)
    net = MultiHeadStudent(student, [t.num_classes for t in teachers])
    method = DistInit(net, teachers, [t.weight for t in dcfg.teachers], cfg.data.mean,
                      cfg.data.std, frames=dcfg.frames, num_frames=dcfg.num_frames,
                      temperature=dcfg.temperature, loss=dcfg.loss, max_entropy=dcfg.max_entropy)
    videos, held = holdout_split(videos, dcfg.holdout)
    dataset = clip_dataset(cfg.data, videos, None, train_mode=True, seed=cfg.seed)
    on_epoch_end = None
    last: dict = {}  # the latest held-out measurement, with each clip's target entropy
    if held:
        rank, world = dist.rank_world()
        held_set = clip_dataset(replace(cfg.data, num_test_clips=1), held, None, False, cfg.seed)
        loader = DataLoader(held_set, batch_size=cfg.optim.batch_size,
                            sampler=list(range(rank, len(held), world)))

        def on_epoch_end(epoch: int) -> dict:
            device = next(net.parameters()).device
            last.clear()
            last.update(holdout_agreement(method, loader, device,
                                          resolve_precision(cfg.precision, device),
                                          use_channels_last(cfg.channels_last, device),
                                          per_clip=world == 1))
            return {k: v for k, v in last.items() if k != "entropies"}  # metrics.jsonl: scalars

    logs = train(cfg, method, dataset, resume=resume, overwrite=overwrite,
                 on_epoch_end=on_epoch_end, desc="distill")
    if not held:
        return logs
    if not last:  # a finished run reloaded: measure its student once
        on_epoch_end(-1)
    result = {**last, "holdout_videos": len(held)}
    _write_result(cfg, result, [])
    return {**logs, **result}


def holdout_split(videos: list, n: int) -> tuple[list, list]:
    """(training videos, held-out videos): n videos (at most a tenth) chosen by a fixed
    permutation, so every run on the same corpus holds out the same ones."""
    n = min(n, len(videos) // 10)
    if n == 0:
        return list(videos), []
    order = torch.randperm(len(videos), generator=torch.Generator().manual_seed(0)).tolist()
    held = set(order[:n])
    return ([v for i, v in enumerate(videos) if i not in held],
            [v for i, v in enumerate(videos) if i in held])


def finetune(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    cfg = resolve_normalization(cfg, pretrained_weights(cfg.model))
    seed_all(cfg.seed)
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

    logs = train(cfg, method, train_set, resume=resume, overwrite=overwrite,
                 head_prefixes=("fc.",), on_epoch_end=on_epoch_end, desc="finetune")
    result = eval_student(cfg, student, test_set, n_test, num_classes)
    result["train_loss"] = logs.get("loss")
    _write_result(cfg, result, train_split.classes)
    return result


def evaluate_checkpoint(cfg: Config, overwrite: bool = False) -> dict:
    if not cfg.model.weights:
        raise UserError("eval needs model.weights=PATH (a fine-tuned checkpoint, e.g. RUN/last.pt)")
    run_dir.claim(Path(cfg.out_dir), resume=False, overwrite=overwrite, what="result")
    cfg = resolve_normalization(cfg, cfg.model.weights)
    test_split = labeled_split(cfg.data, "test")
    num_classes = len(test_split.classes)
    state = model_state(load_checkpoint(cfg.model.weights))
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        raise UserError(f"{cfg.model.weights} classifies {fc.shape[0]} classes but the test split "
                        f"has {num_classes}; evaluate it on the dataset it was fine-tuned on")
    seed_all(cfg.seed)
    student = make_student(cfg.model, num_classes)
    load_weights(student, state, cfg.model.weights, cfg.model)
    test_set = clip_dataset(cfg.data, test_split.videos, test_split.labels, False, cfg.seed)
    result = eval_student(cfg, student, test_set, len(test_split.samples), num_classes)
    _write_result(cfg, result, test_split.classes)
    return result


def _write_result(cfg: Config, result: dict, classes: list[str]) -> None:
    if dist.rank_world()[0] != 0:  # only rank 0 writes files
        return
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A labeled split's classes; distillation has none.
    extra = ({"num_classes": len(classes), "classes": list(classes), "split": cfg.data.split}
             if classes else {})
    (out / "results.json").write_text(json.dumps({**result, **extra}, indent=2))


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
    if prog != "eval":
        parser.add_argument("--resume", action="store_true",
                            help="continue the run in out_dir from its last.pt (same config)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in out_dir and start again")
    parser.add_argument("--splits", default="", help="comma-separated splits, e.g. 1,2,3")
    ns = parser.parse_intermixed_args(argv)
    return config_from_args(ns.args), ns


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    cfg, ns = parse(rest, command)
    splits = [int(s) for s in ns.splits.split(",") if s] or [cfg.data.split]
    torch.set_float32_matmul_precision("high")
    if command == "distill":
        result = distill(cfg, resume=ns.resume, overwrite=ns.overwrite)
    elif command == "finetune":
        result = run_splits(cfg, splits, finetune, resume=ns.resume, overwrite=ns.overwrite)
    elif command == "eval":
        result = run_splits(cfg, splits, evaluate_checkpoint, overwrite=ns.overwrite)
    else:
        raise UserError(f"unknown command {command}; valid: {', '.join(COMMANDS)}")
    print(json.dumps(result, indent=2, default=str))
    return 0
