"""Run configuration: defaults, then a YAML file, then `key=value` overrides, strictly typed.

An unknown key or a value of the wrong type is a `ConfigError` that lists the valid keys, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distinit.errors import UserError

KINETICS_MEAN = [0.43216, 0.394666, 0.37645]  # torchvision's video models' normalisation
KINETICS_STD = [0.22803, 0.22145, 0.216989]


class ConfigError(UserError):
    pass


@dataclass
class DataConfig:
    # Unlabeled videos (distill, extract-features): a folder (searched recursively) or a list file.
    videos: str = ""
    extensions: list[str] = field(default_factory=lambda: ["mp4", "avi", "webm", "mkv", "mov"])
    # Labeled videos (finetune, eval): format hmdb51 | ucf101 | csv.
    format: str = "hmdb51"
    video_root: str = ""
    split_dir: str = ""  # folder of official split files, or the CSV file for format=csv
    split: int = 1
    clip_len: int = 8
    stride: int = 1
    resize: int = 128  # short side before cropping; 0 keeps the decoded size
    crop: int = 112
    flip: bool = True
    num_test_clips: int = 10
    mean: list[float] = field(default_factory=lambda: list(KINETICS_MEAN))
    std: list[float] = field(default_factory=lambda: list(KINETICS_STD))
    backend: str = "pyav"
    cache: str = "none"  # none | memory | disk: decode each video once, cut clips from the cache
    cache_dir: str = ""
    num_workers: int = 4


@dataclass
class ModelConfig:
    arch: str = "r2plus1d_18"  # a registered student or package.module:function
    width: int = 64
    layers: list[int] = field(default_factory=list)  # blocks per stage; empty = the arch's own
    stem_stride: int = 2
    stem_kernel: list[int] = field(default_factory=list)  # (temporal, spatial); empty = arch's
    init: str = "scratch"  # scratch | checkpoint | inflate
    weights: str = ""  # checkpoint (init=checkpoint) or 2D image checkpoint (init=inflate)
    linear_probe: bool = False  # fine-tune only the new head on a frozen backbone


@dataclass
class TeacherConfig:
    spec: str = ""  # torchvision:resnet50 | timm:NAME | torchscript:PATH | ckpt:PATH
    weights: str = ""
    arch: str = ""  # architecture for ckpt:PATH
    weight: float = 1.0  # this teacher's loss weight (Eq. 3)
    input_size: int = 0  # 0 = the teacher's own
    mean: list[float] = field(default_factory=list)  # empty = the teacher's own
    std: list[float] = field(default_factory=list)


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig] = field(default_factory=list)
    frames: str = "random"  # center | random | multi: which frames of the clip the teachers see
    num_frames: int = 4  # frames averaged when frames=multi
    temperature: float = 1.0
    loss: str = "ce"  # ce (soft-target cross-entropy, Eq. 2) | mse (on logits)
    max_entropy: float = 0.0  # drop examples whose target entropy (nats) is above; 0 = keep all


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # step | cosine
    warmup_epochs: float = 0.0
    step_epochs: float = 10.0  # step schedule: multiply lr by gamma every step_epochs
    gamma: float = 0.1
    epochs: float = 45.0
    batch_size: int = 32  # per process
    accum_steps: int = 1
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    head_lr_mult: float = 1.0  # fine-tuning: lr multiplier for the new head


@dataclass
class Config:
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    channels_last: str = "auto"  # auto | on | off (channels_last_3d memory format)
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    log_every: int = 20
    ckpt_every: int = 500  # steps between checkpoints (and one at the end)
    stop_after: int = 0  # stop after this many steps (schedule unchanged); 0 = run to the end
    eval_every: int = 0  # epochs between evaluations during fine-tuning; 0 = only at the end
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += _valid_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {tp}")  # keep the schema simple: no Optionals
    ok = (
        (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp in (str, bool) and isinstance(value, tp))
    )
    if not ok:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return float(value) if tp is float else value


def _from_dict(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        valid = ", ".join(_valid_keys(cls, prefix))
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys: {valid}")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()})


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _field_type(key: str, cls: type) -> Any:
    """The annotation of a dotted key (list indices skipped), or None if there is none."""
    tp: Any = cls
    for part in key.split("."):
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
            if part.isdigit():
                continue
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _set_dotted(tree: dict, key: str, value: Any, cls: type) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node[int(part)] if isinstance(node, list) and part.isdigit() else node.get(part)
        if not isinstance(nxt, dict | list):
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])} in override {key}; "
                              f"valid keys: {', '.join(_valid_keys(cls))}")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {key}: no list item {last}")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                base: Any = None, cls: type = Config) -> Any:
    """Merge defaults (or `base`), the YAML file at `path`, and `key=value` overrides into a
    `cls` (a run `Config` unless told otherwise)."""
    cls = type(base) if base is not None else cls
    tree = to_dict(base if base is not None else cls())
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
        _merge(tree, loaded, path, cls)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if _field_type(key, cls) is str:  # `channels_last=off` means the string, not YAML's False
            value = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw else ""
            except yaml.YAMLError:
                value = raw
        _set_dotted(tree, key, value, cls)
    return _from_dict(cls, tree)


def _merge(tree: dict, new: dict, source: Path, cls: type, prefix: str = "") -> None:
    for k, v in new.items():
        if k not in tree:
            raise ConfigError(f"{source}: unknown config key {prefix}{k}; "
                              f"valid keys: {', '.join(_valid_keys(cls))}")
        if isinstance(tree[k], dict) and isinstance(v, dict):
            _merge(tree[k], v, source, cls, f"{prefix}{k}.")
        elif k == "teachers" and isinstance(v, list):
            tree[k] = [{**to_dict(TeacherConfig()), **t} if isinstance(t, dict) else t for t in v]
        else:
            tree[k] = v


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_from_args(args: list[str], cls: type = Config) -> Any:
    """`[CONFIG.yaml] [key=value ...]` from a command line."""
    path = args[0] if args and "=" not in args[0] else None
    return load_config(path, args[1:] if path else args, cls=cls)
