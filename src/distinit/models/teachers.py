"""Frozen still-image teachers: built from a spec, always from real weights, never trained.

Specs (`build_teacher`):
- `torchvision:<name>[.<WEIGHTS>]`: a torchvision classifier. Weights from `weights=` (a state
  dict file), else torchvision's own download cache `torch.hub.get_dir()/checkpoints/`.
- `timm:<name>[.<tag>]`: a timm model. Weights from `weights=`, else timm's files in the local
  Hugging Face cache (or the torch hub cache). Mean, std and input size from its pretrained_cfg.
- `torchscript:PATH`: a scripted or traced model; ImageNet mean/std unless given.
- `ckpt:PATH` with `arch` (a name in `image_resnet.IMAGE_MODELS`, `torchvision:<name>` or
  `timm:<name>`).

Nothing is ever downloaded; missing or mismatched weights raise `WeightsError`.

Weights files: the formats `checkpoint.read_checkpoint` reads (metadata as `teacher_checkpoint`
writes it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from distinit.engine.checkpoint import WeightsError, load_weights, read_checkpoint
from distinit.errors import UserError
from distinit.models.image_resnet import IMAGE_MODELS, build_image_model
from distinit.optional import import_timm, import_torchvision, require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def teacher_checkpoint(model: nn.Module, arch: str, num_classes: int, *,
                       arch_kwargs: dict | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD, input_size: int | None = None,
                       classes: Sequence[str] | None = None) -> dict:
    """The checkpoint dict that `build_teacher("ckpt:PATH")` reads back (save it with torch.save)."""
    ckpt = {"model": model.state_dict(), "arch": arch, "arch_kwargs": dict(arch_kwargs or {}),
            "num_classes": num_classes, "mean": list(mean), "std": list(std),
            "input_size": input_size}
    if classes is not None:
        ckpt["classes"] = list(classes)
    return ckpt


class Teacher(nn.Module):
    """A frozen image classifier that takes frames in [0, 1] and applies its own preprocessing."""

    def __init__(self, model: nn.Module, name: str, input_size: int | None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 num_classes: int | None = None, classes: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.input_size = input_size  # None: frames are used at the size they come
        # Not persistent: a teacher's state dict is its model's, as saved.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.classes = list(classes) if classes is not None else None
        self.requires_grad_(False)
        self.train(False)
        if num_classes is None:
            size = input_size or 224
            num_classes = self(torch.zeros(1, len(mean), size, size)).shape[1]
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> Teacher:
        # A teacher stays in eval mode (BN running statistics, no dropout) whatever its parent does.
        return super().train(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float frames in [0, 1] -> (N, num_classes) float32 logits."""
        if not frames.is_floating_point():
            raise TypeError(f"teacher {self.name} takes float frames in [0, 1], got {frames.dtype}")
        with torch.no_grad():
            x = frames
            s = self.input_size
            if s is not None and tuple(x.shape[-2:]) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                                  antialias=True)  # (N, 3, s, s)
            x = (x - self.mean) / self.std
            return self.model(x).float()


def _last_linear_outputs(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> int | None:
    # The classifier is the last nn.Linear of every torchvision/timm/ImageResNet classifier.
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    weight = state_dict.get(f"{last}.weight") if last is not None else None
    return None if weight is None else int(weight.shape[0])


def _torchvision_weights(name: str):
    """(model name, weights enum member or None) for `resnet50` or `resnet50.IMAGENET1K_V2`."""
    tv = import_torchvision()
    base, _, tag = name.partition(".")
    names = tv.models.list_models(module=tv.models)
    if base not in names:
        raise UserError(f"unknown torchvision classifier {base!r}; valid names: "
                        f"{', '.join(names)}")
    try:
        enum = tv.models.get_model_weights(base)
    except ValueError:
        return base, None
    if not tag:
        return base, enum.DEFAULT
    if tag not in enum.__members__:
        raise UserError(f"torchvision {base} has no weights {tag!r}; valid: "
                        f"{', '.join(enum.__members__)}")
    return base, enum[tag]


def _torchvision_arch(name: str, num_classes: int | None, kwargs: dict):
    tv = import_torchvision()
    base, weights = _torchvision_weights(name)
    defaults = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": 224}
    if weights is not None:
        preprocess = weights.transforms()
        defaults = {"mean": tuple(preprocess.mean), "std": tuple(preprocess.std),
                    "input_size": int(preprocess.crop_size[0])}
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    return (lambda **kw: tv.models.get_model(base, weights=None, **{**kwargs, **kw})), defaults


def _timm_arch(name: str, num_classes: int | None, kwargs: dict):
    timm = import_timm()
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models() for valid names")
    cfg = timm.models.get_pretrained_cfg(name)
    defaults = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": 224}
    if cfg is not None:
        defaults = {"mean": tuple(cfg.mean), "std": tuple(cfg.std),
                    "input_size": int(cfg.input_size[-1])}
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    return (lambda **kw: timm.create_model(name, pretrained=False, **{**kwargs, **kw})), defaults


def _arch_builder(arch: str, num_classes: int | None, kwargs: dict):
    """(builder(**overrides) -> model, default preprocessing) for an arch name."""
    family, _, name = arch.partition(":")
    if family == "torchvision" and name:
        return _torchvision_arch(name, num_classes, kwargs)
    if family == "timm" and name:
        return _timm_arch(name, num_classes, kwargs)
    if arch in IMAGE_MODELS:
        if num_classes is not None:
            kwargs = {**kwargs, "num_classes": num_classes}
        defaults = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": None}
        return (lambda **kw: build_image_model(arch, **{**kwargs, **kw})), defaults
    raise UserError(f"unknown teacher arch {arch!r}; valid: {', '.join(IMAGE_MODELS)}, "
                    "'torchvision:<name>' or 'timm:<name>'")


def _model_from_file(arch: str, path: str | os.PathLike, state_dict: dict, meta: dict,
                     kwargs: dict) -> tuple[nn.Module, dict]:
    build, defaults = _arch_builder(arch, meta.get("num_classes"), kwargs)
    model = build()
    if meta.get("num_classes") is None:
        # No recorded class count: take it from the file's classifier, then check the rest.
        found = _last_linear_outputs(model, state_dict)
        if found is not None and found != _last_linear_outputs(model, model.state_dict()):
            model = build(num_classes=found)
    load_weights(model, state_dict, path, arch,
                 "check the arch, arch_kwargs and number of classes it was saved with")
    return model, defaults


def _torchvision_from_cache(name: str) -> nn.Module:
    tv = import_torchvision()
    base, weights = _torchvision_weights(name)
    if weights is None:
        raise WeightsError(f"torchvision {base} has no published weights; pass weights=FILE")
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise WeightsError(f"teacher weights not found: {path} (torchvision's cache for "
                           f"{base} {weights.name}; nothing is downloaded here). Copy the file "
                           "there, or pass weights=/path/to/state_dict.pth")
    try:
        return tv.models.get_model(base, weights=weights)  # read from the cache file above
    except Exception as e:
        raise WeightsError(f"cannot load {path} into torchvision {base}: {e}") from None


def _timm_from_cache(name: str) -> nn.Module:
    timm = import_timm()
    hub = require("huggingface_hub", "timm")
    cfg = timm.models.get_pretrained_cfg(name)
    candidates: list[str] = []
    if cfg is not None and cfg.hf_hub_id:
        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else [
                "model.safetensors", "pytorch_model.bin"]:
            found = hub.try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                candidates.append(found)
    if cfg is not None and cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if cached.is_file():
            candidates.append(str(cached))
    if not candidates:
        where = f"Hugging Face repo {cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else name
        raise WeightsError(f"teacher weights not found: no cached pretrained file for timm {name} "
                           f"({where}, cache {hub.constants.HF_HUB_CACHE}); nothing is "
                           "downloaded here: pass weights=/path/to/state_dict")
    try:
        return timm.create_model(name, pretrained=True,
                                 pretrained_cfg_overlay={"file": candidates[0]})
    except Exception as e:
        raise WeightsError(f"cannot load {candidates[0]} into timm {name}: {e}") from None


def _torchscript_teacher(path: str, input_size: int | None, mean, std) -> Teacher:
    if not Path(path).is_file():
        raise WeightsError(f"teacher weights not found: {path} (expected a TorchScript file "
                           "saved with torch.jit.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated, still works
            model = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise WeightsError(f"cannot load {path} as TorchScript: {e}") from None
    return Teacher(model, f"torchscript:{path}", input_size, mean or IMAGENET_MEAN,
                   std or IMAGENET_STD)


def build_teacher(spec: str, weights: str | None = None, arch: str | None = None,
                  input_size: int | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, arch_kwargs: dict | None = None) -> Teacher:
    """A frozen `Teacher` from a spec (see the module docstring). Arguments given here override
    the preprocessing recorded in the checkpoint or the library's defaults."""
    kind, _, rest = spec.partition(":")
    if kind == "torchscript" and rest:
        return _torchscript_teacher(rest, input_size, mean, std)
    meta: dict = {}
    if kind == "ckpt" and rest:
        state_dict, meta = read_checkpoint(rest, arch or "an image model")
        arch = arch or meta.get("arch")
        if not arch:
            raise UserError(f"{rest} does not record its arch: give arch= (one of "
                            f"{', '.join(IMAGE_MODELS)}, 'torchvision:<name>', 'timm:<name>')")
        kwargs = arch_kwargs if arch_kwargs is not None else meta.get("arch_kwargs") or {}
        model, defaults = _model_from_file(arch, rest, state_dict, meta, kwargs)
    elif kind in ("torchvision", "timm") and rest:
        arch = spec
        kwargs = arch_kwargs or {}
        if weights is not None:
            state_dict, meta = read_checkpoint(weights, arch)
            model, defaults = _model_from_file(arch, weights, state_dict, meta, kwargs)
        else:
            _, defaults = _arch_builder(arch, None, kwargs)
            model = _torchvision_from_cache(rest) if kind == "torchvision" else _timm_from_cache(rest)
    else:
        raise UserError(f"unknown teacher spec {spec!r}; use torchvision:<name>, timm:<name>, "
                        "torchscript:PATH or ckpt:PATH")

    def pick(key: str, given):
        return given if given is not None else meta.get(key, defaults[key])

    return Teacher(model, spec, pick("input_size", input_size), pick("mean", mean),
                   pick("std", std), classes=meta.get("classes"))
