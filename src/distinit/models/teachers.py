"""Frozen still-image teachers: built from a spec, always from real weights, never trained.

Specs (`build_teacher`):
- `torchvision:<name>[.<WEIGHTS>]`: a torchvision classifier. Weights from `weights=` (a state
  dict file), else torchvision's own download cache `torch.hub.get_dir()/checkpoints/`.
- `timm:<name>[.<tag>]`: a timm model. Weights from `weights=`, else timm's files in the local
  Hugging Face cache (or the torch hub cache). Mean, std and input size from its pretrained_cfg.
- `torchscript:PATH`: a scripted or traced model; ImageNet mean/std unless given.
- `ckpt:PATH` with `arch` (a name in `image_resnet.IMAGE_MODELS`, `torchvision:<name>` or
  `timm:<name>`).
- `python:package.module:function`: the function, called with no arguments, returns the network
  ((N, 3, H, W) images -> (N, C) logits) with its weights. Preprocessing: the config's
  `input_size`, `mean`, `std`, else the model's own attributes of those names (and `classes`),
  else ImageNet's mean and std at the size the frames come in.

Nothing is ever downloaded; missing or mismatched weights raise `WeightsError`.

Weights files: the formats `checkpoint.read_checkpoint` reads (metadata as `teacher_checkpoint`
writes it).
"""

from __future__ import annotations

import hashlib
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
from distinit.models.students import import_callable
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


class TeacherError(UserError):
    """A teacher whose output is not (N, C) finite logits of the classes it declares."""


def check_logits(name: str, logits, num_images: int, num_classes: int | None = None,
                 finite: bool = True) -> None:
    """Raise `TeacherError` unless `logits` (teacher `name`'s output for `num_images` images) is
    a float (num_images, C) tensor with C >= 2, C == `num_classes` (what it declares) when given,
    and, with `finite`, no NaN or inf. Called on a teacher's first batch, not on every step."""
    what = f"teacher {name} returns"
    if not isinstance(logits, torch.Tensor):
        raise TeacherError(f"{what} a {type(logits).__name__}, not a tensor; a teacher must "
                           "return (N, C) logits for N images: return only the logits")
    shape = tuple(logits.shape)
    if logits.ndim != 2 or shape[0] != num_images:
        images = f"{num_images} image{'s' if num_images != 1 else ''}"
        raise TeacherError(f"{what} logits of shape {shape} for {images}; a teacher must return "
                           "(N, C) logits for N images: squeeze or flatten its output")
    if shape[1] < 2:
        raise TeacherError(f"{what} {shape[1]} class; a teacher must score at least 2 classes "
                           "(the softmax of one is always 1 and teaches nothing): check its "
                           "output layer")
    if num_classes is not None and shape[1] != num_classes:
        raise TeacherError(f"{what} {shape[1]} classes but declares {num_classes} (the student's "
                           "head is sized from it); a teacher must give the same classes for "
                           "every input: set its input_size (distill.teachers[].input_size) to "
                           "the size it was made for")
    if finite and not bool(torch.isfinite(logits).all()):
        raise TeacherError(f"{what} NaN or infinite logits on its first batch; check its "
                           "weights file and its preprocessing (distill.teachers[].mean, std, "
                           "input_size), and try precision=fp32")


def first_check(teacher: nn.Module, logits, num_images: int) -> None:
    """`check_logits` on a teacher module's first output in this process; later calls only test
    a flag. The name is the teacher's spec, its class count the one it declares."""
    if teacher.__dict__.get("_logits_checked"):
        return
    check_logits(getattr(teacher, "name", type(teacher).__name__), logits, num_images,
                 getattr(teacher, "num_classes", None))
    teacher.__dict__["_logits_checked"] = True


class Teacher(nn.Module):
    """A frozen image classifier that takes frames in [0, 1] and applies its own preprocessing.
    Its output is checked on the first call (`first_check`): (N, C) finite logits of its
    `num_classes` classes, which are found at build time, from a probe, unless given."""

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
        self.num_classes = num_classes
        if num_classes is None:  # a (1, 1, C) output would otherwise declare one class
            size = input_size or 224
            try:
                probe = self._logits(torch.zeros(1, len(mean), size, size))
            except Exception as e:  # e.g. a shape error; TorchScript's own is its last line
                said = [line for line in str(e).splitlines() if line.strip()]
                raise TeacherError(f"teacher {name} fails on a (1, {len(mean)}, {size}, {size}) "
                                   f"image: {said[-1].strip() if said else type(e).__name__}; "
                                   "check the model, or set its input_size to the size it "
                                   "takes") from None
            check_logits(name, probe, 1, finite=False)  # a blank image may well give NaN
            self.num_classes = probe.shape[1]

    def train(self, mode: bool = True) -> Teacher:
        # A teacher stays in eval mode (BN running statistics, no dropout) whatever its parent does.
        return super().train(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float frames in [0, 1] -> (N, num_classes) float32 logits."""
        logits = self._logits(frames)
        if not self.__dict__.get("_logits_checked"):
            first_check(self, logits, frames.shape[0])
        return logits

    def _logits(self, frames: torch.Tensor):
        if not frames.is_floating_point():
            raise TypeError(f"teacher {self.name} takes float frames in [0, 1], got {frames.dtype}")
        with torch.no_grad():
            x = frames
            s = self.input_size
            if s is not None and tuple(x.shape[-2:]) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                                  antialias=True)  # (N, 3, s, s)
            x = (x - self.mean) / self.std
            out = self.model(x)
            return out.float() if isinstance(out, torch.Tensor) else out  # else: check_logits


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


def _declared(model: nn.Module, spec: str) -> dict:
    """A `python:` model's own `input_size`, `mean`, `std`, `classes` (None where absent)."""
    out = {k: getattr(model, k, None) for k in ("input_size", "mean", "std", "classes")}
    size, classes = out["input_size"], out["classes"]
    bad = [] if size is None or (type(size) is int and size > 0) else ["input_size"]
    bad += [k for k in ("mean", "std") if out[k] is not None and not (isinstance(
        out[k], list | tuple) and len(out[k]) == 3 and all(type(x) in (int, float) for x in out[k]))]
    if classes is not None and not (isinstance(classes, list | tuple) and all(
            isinstance(c, str) for c in classes)):
        bad.append("classes")
    if bad:
        raise TeacherError(f"teacher {spec} declares {bad[0]}={out[bad[0]]!r}; expected "
                           "input_size a pixel count, mean and std 3 numbers, classes names")
    return out


def python_model(spec: str) -> nn.Module:
    """The network `python:package.module:function` returns (see the module docstring)."""
    module_name, _, attr = spec.removeprefix("python:").partition(":")
    if not module_name or not attr:
        raise UserError(f"teacher spec {spec!r}: expected python:package.module:function")
    fn = import_callable(f"{module_name}:{attr}", "teacher", TeacherError, shown=spec,
                         noun="function")
    try:
        model = fn()
    except UserError:
        raise  # e.g. a missing package, said with its pip command
    except SystemExit as e:
        raise TeacherError(f"teacher {spec}: {attr}() called sys.exit({e.code!r}); it must "
                           "return the network") from None
    except Exception as e:
        raise TeacherError(f"teacher {spec}: {attr}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise TeacherError(f"teacher {spec}: {attr}() returned a {type(model).__name__}, not a "
                           "torch nn.Module mapping (N, 3, H, W) images to (N, C) logits")
    return model


def python_teacher_digest(spec: str) -> str:
    """A sha256 of what a `python:` teacher's function returns now: every tensor of its state
    dict and its declared preprocessing, so a changed function or weights file changes it."""
    model = python_model(spec)
    h = hashlib.sha256(repr(_declared(model, spec)).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _python_teacher(spec: str, input_size: int | None, mean, std) -> Teacher:
    model = python_model(spec)
    own = _declared(model, spec)
    return Teacher(model, spec, input_size or own["input_size"], mean or own["mean"] or
                   IMAGENET_MEAN, std or own["std"] or IMAGENET_STD, classes=own["classes"])


def build_teacher(spec: str, weights: str | None = None, arch: str | None = None,
                  input_size: int | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, arch_kwargs: dict | None = None) -> Teacher:
    """A frozen `Teacher` from a spec (see the module docstring). Arguments given here override
    the preprocessing recorded in the checkpoint or the library's defaults."""
    kind, _, rest = spec.partition(":")
    if kind == "torchscript" and rest:
        return _torchscript_teacher(rest, input_size, mean, std)
    if kind == "python":
        if weights or arch or arch_kwargs:  # its function loads its own weights
            raise UserError(f"teacher {spec}: unset weights, arch and arch_kwargs")
        return _python_teacher(spec, input_size, mean, std)
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
                        "torchscript:PATH, ckpt:PATH or python:package.module:function")

    def pick(key: str, given):
        return given if given is not None else meta.get(key, defaults[key])

    return Teacher(model, spec, pick("input_size", input_size), pick("mean", mean),
                   pick("std", std), classes=meta.get("classes"))
