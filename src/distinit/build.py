"""Building a run's parts from its config: students, their initial weights, clip datasets,
labeled splits, input normalisation. Every job and method plugin builds through these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from distinit.config import KINETICS_MEAN, KINETICS_STD, Config, DataConfig, ModelConfig
from distinit.data.clips.color import ColorAugment
from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.transforms import ClipTransform, Step
from distinit.data.clips.views import RGB, FlowSource, View
from distinit.data.flow.render import flow_channels
from distinit.data.labels.splits import LabeledSplit, absent_note, load_labeled
from distinit.data.stores.clip_store import COMMAND, clip_store_for, find_clip_store
from distinit.data.video.frames import frame_source
from distinit.data.video.io import list_videos
from distinit.engine import dist
from distinit.engine.checkpoint import (
    backbone_state,
    load_checkpoint,
    load_weights,
    read_checkpoint,
)
from distinit.errors import UserError
from distinit.models.inflate import inflate_from_file
from distinit.models.students import STUDENTS, build_student
from distinit.models.teachers import IMAGENET_MEAN, IMAGENET_STD


def make_student(mc: ModelConfig, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The student `model` describes; `in_channels=2` for a flow student."""
    kwargs = {} if in_channels == 3 else {"in_channels": in_channels}
    if mc.arch in STUDENTS:  # user architectures take no scaling arguments
        kwargs.update(width=mc.width, stem_stride=mc.stem_stride)
        if mc.layers:
            kwargs["layers"] = mc.layers
        if mc.stem_kernel:
            kwargs["stem_kernel"] = tuple(mc.stem_kernel)
    return build_student(mc.arch, num_classes=num_classes, **kwargs)


def input_channels(dc: DataConfig) -> int:
    return flow_channels(dc.flow_format) if dc.input == "flow" else 3


def student_views(dc: DataConfig) -> tuple[View, ...]:
    """The student's input is always the view `video`: an RGB clip, or its flow."""
    return (View("video", "flow"),) if dc.input == "flow" else RGB


def prepare_data(dc: DataConfig, videos: Sequence[str | Path] | None = None) -> None:
    """Build what the datasets of a run read, before they are made: with data.cache=store, the
    clip store of `videos` (default: the corpus `data.videos`, which a pretraining method trains
    on, or on part of), found or built now (resumable; under torchrun every rank calls it and
    they build together). `distinit store-clips` builds the same stores ahead of time."""
    if dc.cache != "store":
        return
    if not dc.cache_dir:
        raise UserError("data.cache=store keeps its clip stores under data.cache_dir; set it")
    if videos is None:
        if not dc.videos:
            return
        videos = list_videos(dc.videos, dc.extensions)
    clip_store_for(videos, dc.cache_dir, dc.resize, dc.backend, dc.decode_device, dc.frame_template,
                   dc.store_codec, dc.store_quality)


def _store_of(dc: DataConfig, videos: Sequence[str | Path]) -> Path:
    if not dc.cache_dir:
        raise UserError("data.cache=store keeps its clip stores under data.cache_dir; set it")
    folder = find_clip_store(dc.cache_dir, videos, dc.resize, dc.backend, dc.frame_template,
                             dc.store_codec, dc.store_quality)
    if folder is None:
        codec = "" if dc.store_codec == "raw" else (
            f", data.store_codec={dc.store_codec}, data.store_quality={dc.store_quality}")
        raise UserError(f"no clip store of these {len(videos)} videos (data.resize={dc.resize}, "
                        f"data.backend={dc.backend}{codec}) under {dc.cache_dir}; build it with "
                        f"{COMMAND}, or call distinit.build.prepare_data before the datasets")
    return folder


def color_steps(dc: DataConfig) -> list[Step]:
    """The colour augmentation steps of RGB training clips (data.color_jitter and friends)."""
    return ColorAugment(dc.color_jitter, dc.color_jitter_p, dc.grayscale_p, dc.blur_p,
                        dc.blur_sigma, dc.color_per_frame).steps(dc.crop)


def clip_dataset(dc: DataConfig, videos: list, labels: list[int] | None, train_mode: bool,
                 seed: int, views: Sequence[View] | None = None,
                 targets=None) -> VideoClipDataset:
    """Clips of `videos` as `data` says; `views` (default: the student's input) make each
    sample a dict of named views (`distinit.data.clips.views`); `targets`: a teacher-target cache the
    clips are cut for. Builds nothing: a clip store (data.cache=store) must exist
    (`prepare_data`)."""
    views = student_views(dc) if views is None else tuple(views)
    transform = ClipTransform(train=train_mode, resize=dc.resize or None, crop=dc.crop,
                              mean=dc.mean, std=dc.std, flip=dc.flip and train_mode,
                              scale=dc.scale, color=color_steps(dc) if train_mode else ())
    flow = flow_transform = None
    if any(v.modality == "flow" for v in views):
        if not dc.flow_dir:
            raise UserError("this run reads optical flow: set data.flow_dir to the folder "
                            "`distinit flow VIDEOS FLOW_DIR` wrote")
        flow = FlowSource(dc.flow_dir, dc.flow_root or dc.videos or dc.video_root)
        flow.check(Path(videos[0]))
        channels = flow_channels(dc.flow_format)
        flow_transform = ClipTransform(train=train_mode, resize=dc.resize or None, crop=dc.crop,
                                       mean=(0.0,) * channels, std=(1.0,) * channels,
                                       flip=dc.flip and train_mode, scale=dc.scale, flow=True,
                                       render=dc.flow_format == "rgb")
    if dc.decode_device == "cuda" and dc.num_workers and dc.cache != "store":
        raise UserError("data.decode_device=cuda decodes in the loader's processes, and CUDA "
                        "cannot start in forked loader workers: set data.num_workers=0, or "
                        "data.cache=store (decoded once before the loader starts)")
    folder = _store_of(dc, videos) if dc.cache == "store" else (dc.cache_dir or None)
    frames = frame_source(None if dc.cache == "none" else dc.cache, folder,
                          [Path(v) for v in videos], dc.backend, dc.decode_device,
                          dc.frame_template, dc.store_codec, dc.store_quality)
    clips = ClipSpec(dc.clip_len, dc.stride, "train" if train_mode else "test",
                     1 if train_mode else dc.num_test_clips,
                     crops=1 if train_mode else dc.test_crops)
    return VideoClipDataset(videos, labels, clips=clips, frames=frames, transform=transform,
                            views=views, flow=flow, flow_transform=flow_transform,
                            targets=targets, seed=seed)


def labeled_split(dc: DataConfig, subset: str) -> LabeledSplit:
    """A subset of the labeled dataset; classes it lacks are fine, and said once (rank 0)."""
    split = load_labeled(dc.format, dc.video_root, dc.split_dir, dc.split, subset,
                         name_template=dc.name_template)
    if split.absent and dist.rank_world()[0] == 0:
        print(absent_note(split, subset), flush=True)
    return split


# What a student weights file that does not fit is checked against (`checkpoint.load_weights`).
STUDENT_HINT = ("set model.arch, model.width, model.layers, model.stem_* as the run that wrote it "
                "(its config.yaml)")


def describe_student(mc: ModelConfig) -> str:
    return f"model.arch={mc.arch} width={mc.width} layers={mc.layers or 'default'}"


def init_student(student: nn.Module, mc: ModelConfig) -> dict | None:
    """Scratch, a pretrained checkpoint (distillation, supervised or torchvision), or inflation.
    Only the backbone of a checkpoint is loaded: its classifier `fc` (a fine-tuned run's head)
    never is, so a fine-tune trains a new head. Returns the checkpoint read (model.init=checkpoint),
    whose "classes" say whether it was a fine-tuned classifier; else None."""
    if mc.init == "scratch":
        return None
    if not mc.weights:
        raise UserError(f"model.init={mc.init} needs model.weights=PATH")
    if mc.init == "inflate":
        inflate_from_file(student, mc.weights)
        return None
    if mc.init != "checkpoint":
        raise UserError(f"model.init must be scratch, checkpoint or inflate, got {mc.init!r}")
    ckpt = load_checkpoint(mc.weights)
    load_weights(student, backbone_state(ckpt), mc.weights, describe_student(mc), STUDENT_HINT,
                 skip=("fc.",))
    return ckpt


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


def corpus_encoder(cfg: Config, method: str) -> tuple[nn.Module, list[Path]]:
    """The RGB encoder a self-supervised `method` pretrains (no classifier, initialised as
    `model` says: e.g. an earlier stage's backbone) and the videos of its corpus `data.videos`."""
    dc = cfg.data
    if not dc.videos:
        raise UserError(f"{method} needs data.videos: a folder of videos or a list file")
    if dc.input != "rgb":
        raise UserError(f"{method} pretrains an RGB encoder: set data.input=rgb")
    encoder = make_student(cfg.model, num_classes=0)
    init_student(encoder, cfg.model)
    return encoder, list_videos(dc.videos, dc.extensions)

