"""Imports of optional libraries, with one clear error when they are missing."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

from distinit.errors import UserError


class MissingDependency(UserError, ImportError):
    pass


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(
            f"{module} is not installed; install it with: pip install 'distinit[{extra}]' ({e})"
        ) from None


def import_torchvision() -> ModuleType:
    """Import torchvision, also where its C extension does not match the installed torch.

    A CUDA torchvision wheel beside a CPU torch fails with `operator torchvision::nms does
    not exist`. Its models and transforms are pure Python, so declaring the two operator
    schemas it registers at import time lets it load; only its C++ ops stay unavailable.
    """
    try:
        return require("torchvision", "torchvision")
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)  # the schemas live as long as the Library object
    return importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    import_torchvision()  # timm imports torchvision
    return require("timm", "timm")


_KEEP: list = []
