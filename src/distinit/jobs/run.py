"""`distinit pretrain | distill | finetune | eval`: build a run from its config and train it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from distinit.arguments import Parser
from distinit.build import (
    STUDENT_HINT,
    clip_dataset,
    describe_student,
    init_student,
    input_channels,
    labeled_split,
    make_student,
    prepare_data,
    pretrained_weights,
    resolve_normalization,
)
from distinit.config import Config, ModelConfig, config_from_args
from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.corpus.record import labeled_corpus, unlabeled_corpus
from distinit.data.video.io import list_videos
from distinit.engine import dist, run_dir
from distinit.engine.checkpoint import (
    load_checkpoint,
    load_weights,
    model_state,
    seed_all,
    write_failure,
)
from distinit.engine.runtime import Runtime
from distinit.engine.train import train
from distinit.errors import UserError
from distinit.jobs.evaluate import PREDICTIONS, evaluate
from distinit.jobs.label_map import RESUME_FIX, check_classes, head_note
from distinit.jobs.probe import frozen_scores
from distinit.methods import config_class, get_method
from distinit.methods.supervised import Supervised

COMMANDS = ("pretrain", "distill", "finetune", "eval")


# ---- building blocks (the demo and tests use these too) -------------------------------------

class _FrozenBackbone(Supervised):
    """Linear probe: only the classifier trains; batch-norm statistics stay frozen too."""

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.trainable.modules():
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
                 num_videos: int, num_classes: int, keep_probs: bool = False) -> dict:
    result = evaluate(student, test_set, num_videos, num_classes,
                      batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers,
                      runtime=Runtime.of(cfg, next(student.parameters()).device),
                      keep_probs=keep_probs)
    # The protocol beside the numbers: 10 clips x 1 crop and 10 x 3 are not comparable.
    crops = "centre crop" if cfg.data.test_crops == 1 else f"{cfg.data.test_crops} crops"
    return {**result, "test_protocol": f"{cfg.data.num_test_clips} clips x {crops}"}


# ---- the three jobs ---------------------------------------------------------------------------

@run_dir.one_writer
def pretrain(cfg: Config, name: str = "distinit", resume: bool = False,
             overwrite: bool = False) -> dict:
    """Pretrain with the method registered as `name` (`distinit.methods.METHODS`)."""
    plugin = get_method(name)
    dist.setup(cfg.device, cfg.dist_timeout)  # the plugin may shard its held-out data by rank
    cfg = resolve_normalization(cfg, pretrained_weights(cfg.model))
    # What the run reads, built now if its own command has not built it: the corpus's clip
    # store (data.cache=store), and what the method asks for (DistInit: the target cache).
    prepare_data(cfg.data)
    if hasattr(plugin, "prepare"):
        plugin.prepare(cfg)
    seed_all(cfg.seed)
    job = plugin.build(cfg)
    logs = train(cfg, job.method, job.dataset, resume=resume, overwrite=overwrite,
                 on_epoch_end=job.on_epoch_end, desc=name)
    result = job.finish(logs) if job.finish is not None else {}
    if _is_main():  # every pretraining's results.json says which videos it read
        result["corpus"] = unlabeled_corpus(cfg.data, _corpus_videos(cfg, job.dataset))
    _write_result(cfg, result, [])
    return {**logs, **result}


def _is_main() -> bool:
    return dist.rank_world()[0] == 0


def _corpus_videos(cfg: Config, dataset) -> list:
    """The unlabeled videos a pretraining read: its corpus data.videos (training and held-out
    videos), else those of its dataset."""
    if cfg.data.videos:
        return list_videos(cfg.data.videos, cfg.data.extensions)
    return list(getattr(dataset, "videos", []))


def distill(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """DistInit (`distinit distill`): `pretrain` with the distinit method."""
    return pretrain(cfg, "distinit", resume, overwrite)


@run_dir.one_writer
def finetune(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    dist.setup(cfg.device, cfg.dist_timeout)  # ranks share the work of building a clip store (data.cache=store)
    cfg = resolve_normalization(cfg, pretrained_weights(cfg.model))
    seed_all(cfg.seed)
    train_split, test_split = labeled_split(cfg.data, "train"), labeled_split(cfg.data, "test")
    num_classes = len(train_split.classes)
    last = Path(cfg.out_dir) / "last.pt"
    if resume and last.is_file():  # a head trained on one label map must not go on with another
        check_classes(load_checkpoint(last, mmap=True).get("classes"), train_split.classes,
                      str(last), "the training split", RESUME_FIX)
    student = make_student(cfg.model, num_classes, input_channels(cfg.data))
    source = init_student(student, cfg.model)
    if source is not None and _is_main():  # a fine-tuned checkpoint's head is not reused
        head_note(source, cfg.model.weights, train_split.classes)
    method = finetune_method(student, cfg.model)
    prepare_data(cfg.data, train_split.videos)
    prepare_data(cfg.data, test_split.videos)
    train_set = clip_dataset(cfg.data, train_split.videos, train_split.labels, True, cfg.seed)
    test_set = clip_dataset(cfg.data, test_split.videos, test_split.labels, False, cfg.seed)
    n_test = len(test_split.samples)

    def on_epoch_end(epoch: int) -> dict:
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            return {f"test_{k}": v for k, v in
                    eval_student(cfg, student, test_set, n_test, num_classes).items()}
        return {}

    # The checkpoint carries its label map: `eval` checks it against the test split's.
    logs = train(cfg, method, train_set, resume=resume, overwrite=overwrite,
                 head_prefixes=("fc.",), on_epoch_end=on_epoch_end, desc="finetune",
                 checkpoint_extra={"classes": list(train_split.classes)})
    result = eval_student(cfg, student, test_set, n_test, num_classes, keep_probs=True)
    result["train_loss"] = logs.get("loss")
    if _is_main():
        result["corpus"] = labeled_corpus(cfg.data, train_split, test_split)
    _write_result(cfg, result, train_split.classes, test_split.videos)
    return result


def frozen_eval(cfg: Config) -> dict:
    """kNN (k = 1, 20) and linear-probe video top-1 of the initial weights on the labeled split,
    with the test videos' features (`features`)."""
    cfg = resolve_normalization(cfg, pretrained_weights(cfg.model))
    seed_all(cfg.seed)
    train_split, test_split = labeled_split(cfg.data, "train"), labeled_split(cfg.data, "test")
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(cfg.data))
    init_student(student, cfg.model)
    rt = Runtime.of(cfg)
    rt.place(student)
    prepare_data(cfg.data, train_split.videos)
    prepare_data(cfg.data, test_split.videos)
    sets = [clip_dataset(cfg.data, s.videos, s.labels, False, cfg.seed)
            for s in (train_split, test_split)]
    return frozen_scores(student, sets[0], len(train_split.videos), sets[1],
                         len(test_split.videos), len(train_split.classes), runtime=rt,
                         keep_features=True)


@run_dir.one_writer
def evaluate_checkpoint(cfg: Config, overwrite: bool = False) -> dict:
    if not cfg.model.weights:
        raise UserError("eval needs model.weights=PATH (a fine-tuned checkpoint, e.g. RUN/last.pt)")
    run_dir.claim(Path(cfg.out_dir), resume=False, overwrite=overwrite, what="result")
    cfg = resolve_normalization(cfg, cfg.model.weights)
    test_split = labeled_split(cfg.data, "test")
    num_classes = len(test_split.classes)
    ckpt = load_checkpoint(cfg.model.weights)
    job = checkpoint_job(ckpt)
    if job not in (None, "finetune"):
        raise UserError(f"{cfg.model.weights} is a pretraining checkpoint (written by {job}), "
                        "not a fine-tuned classifier of this dataset; fine-tune it first "
                        "(distinit finetune CONFIG.yaml model.init=checkpoint "
                        f"model.weights={cfg.model.weights} out_dir=RUN), then evaluate "
                        "RUN/last.pt")
    state = model_state(ckpt)
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        raise UserError(f"{cfg.model.weights} classifies {fc.shape[0]} classes but the test split "
                        f"has {num_classes}; evaluate it on the dataset it was fine-tuned on")
    check_classes(ckpt.get("classes"), test_split.classes, cfg.model.weights)
    seed_all(cfg.seed)
    student = make_student(cfg.model, num_classes, input_channels(cfg.data))
    load_weights(student, state, cfg.model.weights, describe_student(cfg.model), STUDENT_HINT)
    prepare_data(cfg.data, test_split.videos)
    test_set = clip_dataset(cfg.data, test_split.videos, test_split.labels, False, cfg.seed)
    result = eval_student(cfg, student, test_set, len(test_split.samples), num_classes,
                          keep_probs=True)
    if _is_main():
        result["corpus"] = labeled_corpus(cfg.data, test=test_split)
    _write_result(cfg, result, test_split.classes, test_split.videos)
    return result


def checkpoint_job(ckpt: dict) -> str | None:
    """The job that wrote a checkpoint of ours: `finetune`, `train-image` or a pretraining
    method's name; None for a file not written by distinit (a torchvision state dict). Checkpoints
    from before the "job" key count as finetune when their config read a labeled split."""
    if ckpt.get("job"):
        return ckpt["job"]
    data = ckpt.get("config", {}).get("data", {}) if isinstance(ckpt.get("config"), dict) else {}
    if data.get("split_dir"):
        return "finetune"
    return "a pretraining method" if data.get("videos") else None


def _write_result(cfg: Config, result: dict, classes: list[str], videos: list = ()) -> None:
    """results.json; with the test `videos`, also their per-video softmax (`distinit fuse`)."""
    probs, labels = result.pop("video_probs", None), result.pop("video_labels", None)
    if not _is_main():  # only rank 0 writes files
        return
    out = Path(cfg.out_dir)
    # A labeled split's classes; distillation has none.
    extra = ({"num_classes": len(classes), "classes": list(classes), "split": cfg.data.split}
             if classes else {})
    try:
        out.mkdir(parents=True, exist_ok=True)
        if probs is not None:
            torch.save({"probs": probs, "labels": labels, "videos": [str(v) for v in videos],
                        "classes": list(classes)}, out / PREDICTIONS)
        tmp = out / "results.json.tmp"  # a full disk never leaves half a results.json
        tmp.write_text(json.dumps({**result, **extra}, indent=2))
        os.replace(tmp, out / "results.json")
    except (OSError, RuntimeError) as e:
        with contextlib.suppress(OSError):
            (out / "results.json.tmp").unlink(missing_ok=True)
        raise UserError(f"cannot write the results into {out}: {write_failure(e, out)}; the "
                        "run's checkpoint is intact. Free disk space, then run the same command "
                        "again (with --resume for a training run: it evaluates without "
                        "training again)") from None


@run_dir.one_writer
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


def parse(argv: list[str], prog: str, cls: type = Config) -> tuple[Config, argparse.Namespace]:
    parser = Parser(prog=f"distinit {prog}")
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    if prog != "eval":
        parser.add_argument("--resume", action="store_true", help=(
            "continue the run in out_dir from its last.pt (same config), or start it when "
            "out_dir holds none; `--resume auto` says the same (what a requeued job passes)"))
        argv = _resume_auto(argv)
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in out_dir and start again")
    if prog in ("finetune", "eval"):
        parser.add_argument("--splits", default="", help="comma-separated splits, e.g. 1,2,3")
    ns = parser.parse_intermixed_args(argv)
    return config_from_args(ns.args, cls=cls), ns


def _resume_auto(argv: list[str]) -> list[str]:
    """`--resume auto` and `--resume=auto` as `--resume`: continue when out_dir holds a
    checkpoint of this config, start when it holds none, refuse when it holds another run
    (`train`'s checks). Only the word right after --resume is taken, so `--resume CONFIG.yaml`
    still reads CONFIG.yaml."""
    out: list[str] = []
    for arg in argv:
        if arg == "auto" and out and out[-1] == "--resume":
            continue
        out.append("--resume" if arg == "--resume=auto" else arg)
    return out


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    name = "distinit"
    if command == "pretrain":
        if not rest or rest[0].startswith("-") or "=" in rest[0] or rest[0].endswith(".yaml"):
            from distinit.methods import METHODS

            raise UserError("usage: distinit pretrain METHOD [CONFIG.yaml] [key=value ...]; "
                            f"methods: {', '.join(METHODS)}")
        name, rest = rest[0], rest[1:]
    cfg, ns = parse(rest, command, config_class(name) if command == "pretrain" else Config)
    torch.set_float32_matmul_precision("high")
    if command in ("pretrain", "distill"):
        result = pretrain(cfg, name, resume=ns.resume, overwrite=ns.overwrite)
    elif command in ("finetune", "eval"):
        splits = [int(s) for s in ns.splits.split(",") if s] or [cfg.data.split]
        job = finetune if command == "finetune" else evaluate_checkpoint
        kwargs = {"resume": ns.resume} if command == "finetune" else {}
        result = run_splits(cfg, splits, job, overwrite=ns.overwrite, **kwargs)
    else:
        raise UserError(f"unknown command {command}; valid: {', '.join(COMMANDS)}")
    print(json.dumps(result, indent=2, default=str))
    return 0
