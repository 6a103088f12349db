"""Run configuration: defaults, then a YAML file, then `key=value` overrides, strictly typed.

An unknown key, a value of the wrong type or a value outside its field's rules (`checked`) is a
`ConfigError`, so a typo or a zero batch size fails at start-up, not deep inside training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distinit.config_rules import (
    NUMBER,
    ConfigError,
    check_rules,
    checked,
    whole,
)

KINETICS_MEAN = [0.43216, 0.394666, 0.37645]  # torchvision's video models' normalisation
KINETICS_STD = [0.22803, 0.22145, 0.216989]


# Sizes that are allocated whole: 1e8 must be one line as the config loads, not a MemoryError.
MAX_CLIP_LEN, MAX_TEST_CLIPS, MAX_CACHE_CROPS, MAX_BATCH = 4096, 1000, 1000, 4096
MAX_PIXELS, MAX_WIDTH, MAX_QUEUE = 4096, 1024, 2**20
QUEUE_WHY = ("the queue keeps this many embeddings in memory, and every step compares each clip "
             "with all of them (MoCo's is 65536)")
MAX_SEED, SEED_WHY = 2**32 - 1, "numpy's seeds are 32-bit"


@dataclass
class DataConfig:
    # Unlabeled videos (distill, extract-features): a folder (searched recursively) or a list file.
    videos: str = ""
    extensions: list[str] = field(default_factory=lambda: ["mp4", "avi", "webm", "mkv", "mov"])
    # Still images in ImageFolder layout (train-image): training and evaluation folders.
    images: str = ""
    images_test: str = ""
    # Labeled videos (finetune, eval): format hmdb51 | ucf101 | csv.
    format: str = checked("hmdb51", choices=("hmdb51", "ucf101", "csv"))
    video_root: str = ""
    split_dir: str = ""  # folder of official split files, or the CSV file for format=csv
    split: int = checked(1, min=1, max=100)
    clip_len: int = checked(8, min=1, max=MAX_CLIP_LEN, why=(
        "a clip is held in memory whole, padded with its last frame on shorter videos "
        f"({MAX_CLIP_LEN} frames are 2.7 minutes at 25 fps)"))
    stride: int = checked(1, min=1, max=MAX_CLIP_LEN, why=(
        "frames between a clip's frames; a clip spans clip_len x stride frames"))
    # Short side before cropping; 0 keeps the decoded size.
    resize: int = checked(128, min=0, max=MAX_PIXELS, why="frames are held in memory at this size")
    crop: int = checked(112, min=1, max=MAX_PIXELS, why="clips are held in memory at this size")
    flip: bool = True
    # Scale jitter in training: random windows of [min, max] of the frame's area, resized to
    # data.crop (RandomResizedCrop); empty = plain random crops of data.crop.
    scale: list[float] = checked([], sizes=(0, 2), gt=0, max=1)
    # Colour augmentation of RGB training clips, after the crop (MoCo v2's --aug-plus:
    # jitter [0.4, 0.4, 0.4, 0.1] with p 0.8, grayscale_p 0.2, blur_p 0.5); all off by default.
    # color_jitter: [brightness, contrast, saturation, hue] strengths (hue <= 0.5), applied in
    # a random order with probability color_jitter_p; empty = off. grayscale_p: probability of
    # a grayscale clip. blur_p: probability of a Gaussian blur with sigma drawn from blur_sigma
    # (kernel ~10% of data.crop, odd). color_per_frame: false draws once per clip, so its
    # frames change colour together; true draws every frame afresh (auxSKD's jitter).
    color_jitter: list[float] = checked([], sizes=(0, 4), min=0)
    color_jitter_p: float = checked(0.8, min=0, max=1)
    grayscale_p: float = checked(0.0, min=0, max=1)
    blur_p: float = checked(0.0, min=0, max=1)
    blur_sigma: list[float] = checked([0.1, 2.0], sizes=(2,), gt=0)
    color_per_frame: bool = False
    num_test_clips: int = checked(10, min=1, max=MAX_TEST_CLIPS, why=(
        "every test video is evaluated on all of them, and more than a video has starts "
        "repeat the same frames (the paper uses 10)"))
    # Spatial crops per test clip: 1, the centre (torchvision's reference, and every number in
    # this project's docs; the DistInit paper takes its evaluation from R(2+1)D [44] and states
    # 10 clips, not their crops); 3, both ends and the centre of the long side (SlowFast's and
    # MMAction2's "3 crops x 10 clips"). Video accuracy averages the softmax over all of them.
    test_crops: int = checked(1, choices=(1, 3))
    # Input normalisation; empty = what the initial weights expect: the image model's own for
    # model.init=inflate, the pretraining run's for model.init=checkpoint, else Kinetics'.
    mean: list[float] = checked([], sizes=(0, 3))
    std: list[float] = checked([], sizes=(0, 3), gt=0)
    backend: str = "pyav"
    # Where videos are decoded: cpu, or cuda (NVDEC; data.backend=torchcodec only; the frames
    # are copied back to the CPU, sparing it the decoding). CUDA cannot start in forked loader
    # workers, so cuda needs data.num_workers=0 unless data.cache=store (the store is built
    # before the loader starts; its workers only read it).
    decode_device: str = checked("cpu", choices=("cpu", "cuda"))
    # Optical flow written by `distinit flow SRC OUT`: OUT, and SRC when it is not data.videos
    # (unlabeled) or data.video_root (labeled).
    flow_dir: str = ""
    flow_root: str = ""
    input: str = checked("rgb", choices=("rgb", "flow"))  # what the student sees: RGB, or flow
    # memory | disk: decode each video once, cut clips from the cache. memory: kept by each
    # process that decodes (loader workers last the whole run, so each fills its own copy);
    # disk: one .npy per video in cache_dir, shared by every process and run. store: frames
    # decoded and resized to data.resize once, uint8 in memory-mapped shards under cache_dir
    # (`distinit store-clips`, or built when a run starts); a clip reads only its frames.
    cache: str = checked("none", choices=("none", "memory", "disk", "store"))
    cache_dir: str = ""
    num_workers: int = checked(4, min=0, max=256, why="each worker is a process")


@dataclass
class ModelConfig:
    arch: str = "r2plus1d_18"  # a registered student or package.module:function
    width: int = checked(64, min=1, max=MAX_WIDTH, why=(
        "channels of the first stage; the last has 8 times as many (the paper's 64 gives 512), "
        "and the weights grow with the square"))
    # Blocks per stage; empty = the arch's own.
    layers: list[int] = checked([], min=1, max=64, why="ResNet-200 has 36 blocks in a stage")
    stem_stride: int = checked(2, min=1, max=64)
    # (temporal, spatial); empty: the arch's own.
    stem_kernel: list[int] = checked([], sizes=(0, 2), min=1, max=64)
    init: str = checked("scratch", choices=("scratch", "checkpoint", "inflate"))
    weights: str = ""  # checkpoint (init=checkpoint) or 2D image checkpoint (init=inflate)
    linear_probe: bool = False  # fine-tune only the new head on a frozen backbone


@dataclass
class TeacherConfig:
    spec: str = ""  # torchvision:resnet50 | timm:NAME | torchscript:PATH | ckpt:PATH
    weights: str = ""
    arch: str = ""  # architecture for ckpt:PATH
    weight: float = checked(1.0, min=0)  # this teacher's loss weight (Eq. 3)
    input_size: int = checked(0, min=0, max=MAX_PIXELS, why="the teacher's input size in pixels")  # 0: its own
    mean: list[float] = checked([], sizes=(0, 3))  # empty = the teacher's own
    std: list[float] = checked([], sizes=(0, 3), gt=0)


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig] = field(default_factory=list)
    # Which frames of the clip the teachers see: one centre frame, one random, or num_frames random.
    frames: str = checked("random", choices=("center", "random", "multi"))
    num_frames: int = checked(4, min=1, max=MAX_CLIP_LEN)  # frames averaged when frames=multi
    temperature: float = checked(1.0, gt=0)
    # Multiply the soft-target loss by temperature^2 (Hinton et al. 2015), so that tau > 1 does
    # not also cut the gradient (and so the learning rate) tau^2-fold; no effect at tau = 1.
    tau_squared: bool = True
    # ce: soft-target cross-entropy (Eq. 2); mse: on the logits.
    loss: str = checked("ce", choices=("ce", "mse"))
    # Drop examples whose target entropy (nats) is above this; 0 = keep all.
    max_entropy: float = checked(0.0, min=0)
    # Corpus videos set aside (the same ones in every run) to measure, after each epoch, how
    # well the student agrees with its teachers on clips it never trained on; at most 1/10 of
    # the corpus. 0 = off.
    holdout: int = checked(256, min=0)
    # The teacher-target cache (`distinit cache-targets`): a folder; set, the student distills
    # from the stored logits instead of running the teachers in every step (built first when
    # the folder holds no finished cache; one made for other settings is refused).
    target_cache: str = ""
    cache_crops: int = checked(8, min=1, max=MAX_CACHE_CROPS, why=(  # boxes from the crop policy
        "the teachers run on every frame of every crop, and the cache keeps crops x frames x "
        "classes logits per video and teacher (the default is 8)"))
    cache_frame_step: int = checked(1, min=1)  # store every Nth frame (nearest one is used)
    # float16: every logit; topk: the top cache_topk logits and the log-mass of the rest.
    cache_dtype: str = checked("float16", choices=("float16", "topk"))
    cache_topk: int = checked(10, min=1, max=100_000)
    cache_shard_size: int = checked(64, min=1, max=100_000)  # videos per shard file


@dataclass
class OptimConfig:
    optimizer: str = checked("sgd", choices=("sgd", "adamw"))
    lr: float = checked(0.01, gt=0, max=10, why=(
        "SGD and AdamW diverge long before; the paper's are 0.01 and 0.002"))
    momentum: float = checked(0.9, min=0, lt=1)
    weight_decay: float = checked(1e-4, min=0)
    schedule: str = checked("step", choices=("step", "cosine"))
    warmup_epochs: float = checked(0.0, min=0, max=1e6)
    step_epochs: float = checked(10.0, gt=0, max=1e6)  # step schedule: lr times gamma every step_epochs
    gamma: float = checked(0.1, gt=0, max=1)
    epochs: float = checked(45.0, gt=0, max=1e6, why=(
        "a schedule this long would never end (the paper's is 45)"))
    # Clips per epoch, drawn across passes over the data; 0 = one pass.
    epoch_size: int = checked(0, min=0, max=10**12, why=(
        "clips per epoch (the paper's is 1e6; Kinetics-400 has 2.4e5 videos)"))
    batch_size: int = checked(32, min=1, max=MAX_BATCH, why=(  # per process
        f"per process; the activations of more than {MAX_BATCH} clips fit no accelerator"))
    accum_steps: int = checked(1, min=1, max=MAX_BATCH)
    clip_grad: float = checked(0.0, min=0)  # max gradient norm; 0 = off
    head_lr_mult: float = checked(1.0, gt=0)  # fine-tuning: lr multiplier for the new head


@dataclass
class Config:
    out_dir: str = "runs/default"
    seed: int = checked(0, min=0, max=MAX_SEED, why=SEED_WHY)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = checked("auto", choices=("auto", "bf16", "fp32"))  # auto: bf16 where supported
    # The channels_last_3d memory format.
    channels_last: str = checked("auto", choices=("auto", "on", "off"))
    threads: int = checked(0, min=0, max=1024)  # torch intra-op threads; 0 = torch's default
    log_every: int = checked(20, min=1)
    ckpt_every: int = checked(500, min=1)  # steps between checkpoints (and one at the end)
    # Stop after this many steps (schedule unchanged); 0 = run to the end.
    stop_after: int = checked(0, min=0)
    eval_every: int = checked(0, min=0)  # epochs between evaluations in fine-tuning; 0: at the end
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def with_section(base: type, key: str, section: type) -> type:
    """`base` with one more config section `key` (a method's own settings); a section the base
    already has (DistInit's `distill`) is returned as is."""
    if key in {f.name for f in dataclasses.fields(base)}:
        return base
    name = f"{key.title().replace('_', '')}{base.__name__}"
    return dataclasses.make_dataclass(name, [(key, section, field(default_factory=section))],
                                      bases=(base,))


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
    """Check `value` against the annotation `tp`; ints and numbers written as text (1e-4) are
    accepted where floats are expected, as long as they are finite; whole ones (1e8) as ints."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, f"{key}.")
    if origin is dict:  # str keys only: per-name settings (a demo's overrides per stage)
        key_tp, item = typing.get_args(tp)
        if not isinstance(value, dict) or not all(isinstance(k, key_tp) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names, got {value!r}")
        return {k: _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {tp}")  # keep the schema simple: no Optionals
    if tp is float and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)
    if tp is int:
        value = whole(value)
    ok = (
        (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp in (str, bool) and isinstance(value, tp))
    )
    if not ok:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    if tp is float and not math.isfinite(value):  # .inf, .nan or 1e999
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return float(value) if tp is float else value


def _from_dict(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(_valid_keys(cls, prefix))
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys: {valid}")
    coerced = {}
    for k, v in values.items():
        coerced[k] = _coerce(v, hints[k], f"{prefix}{k}")
        check_rules(coerced[k], fields[k].metadata, f"{prefix}{k}")
    return cls(**coerced)


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
        loaded = read_yaml(path) or {}
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


def read_yaml(path: Path) -> Any:
    """A YAML file's contents; a file that is not YAML is one line with where and why."""
    try:
        # Bytes, so that PyYAML finds a UTF-16 file's byte-order mark itself.
        return yaml.safe_load(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {what} (save it as UTF-8 text, "
                          "indent with spaces)") from None


def _merge(tree: dict, new: dict, source: Path, cls: type, prefix: str = "") -> None:
    for k, v in new.items():
        if k not in tree:
            raise ConfigError(f"{source}: unknown config key {prefix}{k}; "
                              f"valid keys: {', '.join(_valid_keys(cls))}")
        if isinstance(tree[k], dict) and not isinstance(v, dict):  # blamed on no later override
            raise ConfigError(f"{source}: {prefix}{k} must be a section of keys (e.g. "
                              f"{', '.join(list(tree[k])[:3])}), got {v!r}")
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
