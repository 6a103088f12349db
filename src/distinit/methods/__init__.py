"""Pretraining methods by name: `distinit pretrain NAME CONFIG.yaml key=value ...`.

Each entry is a module (or `module:object`, for several methods in one file) with
- `SECTION`: `(key, dataclass)` of the method's own config section, or None;
- `build(cfg) -> engine.method.Pretraining`: the method and its data recipe;
- optionally `prepare(cfg)`: build what the run reads before it is built, when its own command
  has not (DistInit: the teacher-target cache); `run.pretrain` calls it.

Adding a method is one new file and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from distinit.errors import UserError

METHODS = {
    "distinit": "distinit.methods.distinit",
    "modist": "distinit.methods.modist",
    "auxskd": "distinit.methods.auxskd",
    "vspp": "distinit.methods.pretext:VSPP",
    "pace": "distinit.methods.pretext:PACE",
    "vcop": "distinit.methods.pretext:VCOP",
    "rspnet": "distinit.methods.rspnet",
}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    module, _, attr = METHODS[name].partition(":")
    plugin = importlib.import_module(module)
    return getattr(plugin, attr) if attr else plugin


def config_class(name: str) -> type:
    """The run config of method `name`: the common sections plus the method's own."""
    from distinit.config import Config, with_section

    section = get_method(name).SECTION
    return Config if section is None else with_section(Config, *section)


def any_config_class() -> type:
    """A run config with every method's section, so any run's file loads: for commands that read
    only the common sections (`distinit store-clips`)."""
    from distinit.config import Config, with_section

    cls = Config
    for name in METHODS:
        section = get_method(name).SECTION
        if section is not None:
            cls = with_section(cls, *section)
    return cls
