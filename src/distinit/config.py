"""Run configuration: defaults, then a YAML file, then `key=value` overrides, strictly typed.

An unknown key, a value of the wrong type or a value outside its field's rules (`checked`) is a
`ConfigError`, so a typo or a zero batch size fails at start-up, not deep inside training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from distinit.config_rules import (  # checked and ConfigError are re-exported
    NUMBER,
    ConfigError,
    check_rules,
    checked,
    whole,
)
from distinit.config_schema import (
    KINETICS_MEAN,
    KINETICS_STD,
    MAX_BATCH,
    MAX_CACHE_CROPS,
    MAX_CLIP_LEN,
    MAX_PIXELS,
    MAX_QUEUE,
    MAX_SEED,
    MAX_TEST_CLIPS,
    MAX_WIDTH,
    QUEUE_WHY,
    SEED_WHY,
    Config,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    TeacherConfig,
)

# The schema's names and its rules' helpers are the config's: callers import them from here.
__all__ = [
    "Config", "ConfigError", "DataConfig", "DistillConfig", "KINETICS_MEAN", "KINETICS_STD",
    "MAX_BATCH", "MAX_CACHE_CROPS", "MAX_CLIP_LEN", "MAX_PIXELS", "MAX_QUEUE", "MAX_SEED",
    "MAX_TEST_CLIPS", "MAX_WIDTH", "ModelConfig", "OptimConfig", "QUEUE_WHY", "SEED_WHY",
    "TeacherConfig", "checked", "config_from_args", "load_config", "read_yaml", "save_config",
    "to_dict", "with_section",
]


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
