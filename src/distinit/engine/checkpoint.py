"""Checkpoints: plain dicts written atomically; reading weights files (ours, image models',
torchvision's) and loading them into a model.

Weights files for image models (teachers' `weights=` and `ckpt:`, `inflate.inflate_from_file`):
`.pth`/`.pt` from `torch.save` or `.safetensors`. Either a plain state dict, or a dict holding
it under "model" or "state_dict" beside optional metadata, which
`models.teachers.teacher_checkpoint` writes:

    {"model": state_dict, "arch": "resnet_tiny", "arch_kwargs": {...}, "num_classes": 20,
     "mean": [r, g, b], "std": [r, g, b], "input_size": 32, "classes": ["ball", ...]}

Keys prefixed "module." (DDP) or "_orig_mod." (torch.compile) are accepted. In a safetensors
file the same metadata keys are JSON strings in its header metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distinit.errors import UserError, first_line

META_KEYS = ("arch", "arch_kwargs", "num_classes", "mean", "std", "input_size", "classes")


class WeightsError(UserError):
    """A weights file is missing, unreadable, or does not match its model."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file, then rename: a crash or a full disk never leaves a half-written
    checkpoint, and the previous one stays intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        reason = write_failure(e, path.parent)  # re-raises what is not a failed write
        with contextlib.suppress(OSError):  # a read-only folder holds no temporary file either
            tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if path.is_file() else "no checkpoint exists yet"
        raise UserError(f"cannot write checkpoint {path}: {reason}; {kept}. Free disk space or "
                        "fix the folder's permissions, then run again with --resume") from None


def write_failure(error: BaseException, folder: Path) -> str:
    """Why writing a file into `folder` failed, in words; re-raises `error` when it is not a
    failed write. On a full disk or a read-only folder `torch.save` raises RuntimeError from its
    C++ writer ("open file failed with strerror: Read-only file system", or for a full disk only
    "unexpected pos N vs M"), not OSError."""
    if isinstance(error, OSError):
        return str(error.strerror or error)
    text = str(error)
    if "strerror:" in text:
        return text.rsplit("strerror:", 1)[1].strip()
    if "inline_container" not in text and "PytorchStreamWriter" not in text:
        raise error
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return f"the write stopped short ({free} on that disk: it is most likely full)"


def _read(path: Path, weights_only: bool, mmap: bool = False) -> dict:
    """What a file holds: the object `torch.save` wrote, or for a .safetensors file
    {"model": its tensors, "metadata": its header metadata}. Raises what the readers raise."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return {"model": load_file(str(path)), "metadata": metadata}
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)


# What checkpoints written before RNG states were plain tensors hold besides tensors and plain
# containers: numpy's RNG state, an ndarray. Rebuilding an ndarray calls no user code.
_OLD_NUMPY = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint of ours (or any torch.save'd dict of tensors and plain containers, or a
    .safetensors file's tensors under "model" and its header under "metadata").

    Read with `weights_only=True`: nothing in the file is called, so a checkpoint from a shared
    folder or a stranger cannot run code. A file that needs more than that is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_OLD_NUMPY):
            obj = _read(path, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        what = _unsafe_globals(path) or "Python objects"
        raise UserError(f"refusing to load {path}: it holds {what}, which only a full unpickling "
                        "could rebuild, and that can run code from the file. If you trust it, "
                        "save its tensors alone (torch.save(model.state_dict(), PATH)) or as "
                        ".safetensors, and pass that") from None
    except Exception as e:  # a truncated or foreign file: say which, not a pickle trace
        raise UserError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict; save a state "
                        "dict (torch.save(model.state_dict(), PATH))")
    if path.suffix == ".safetensors":  # `distinit export` keeps config, job and classes here
        for key in ("config", "job", "classes"):
            with contextlib.suppress(KeyError, json.JSONDecodeError):
                obj[key] = json.loads(obj["metadata"][key])
    return obj


def _unsafe_globals(path: Path) -> str:
    """The classes and functions a pickle names that `weights_only` refuses, read from the
    pickle's opcodes without unpickling anything."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:
        return ""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def strip_prefixes(state_dict: dict) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, without DDP's "module." and torch.compile's "_orig_mod."."""
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        while key.startswith(("module.", "_orig_mod.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def read_checkpoint(path: str | os.PathLike, expected: str = "an image model",
                    what: str = "teacher weights") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of an image model's weights file (see the module docstring);
    tensors only, never unpickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path} (expected a state dict for "
                           f"{expected}; give the path of a .pth/.pt/.safetensors file)")
    try:
        obj = _read(path, weights_only=True)
    except Exception as e:
        if path.suffix == ".safetensors":
            raise WeightsError(f"cannot read {path} as safetensors: {e}") from None
        raise WeightsError(f"cannot read {path} as a state dict ({first_line(e)}); save "
                           "`model.state_dict()` with "
                           "torch.save, not the pickled model") from None
    if path.suffix == ".safetensors":
        meta = {}
        for key in META_KEYS:
            if key in obj["metadata"]:
                try:
                    meta[key] = json.loads(obj["metadata"][key])
                except json.JSONDecodeError:
                    meta[key] = obj["metadata"][key]  # a bare string such as arch=resnet_tiny
        return strip_prefixes(obj["model"]), meta
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            meta = {k: obj[k] for k in META_KEYS if k in obj}
            return strip_prefixes(obj[key]), meta
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no tensors: expected a state dict or a dict with "
                           "'model' or 'state_dict'")
    return strip_prefixes(obj), {}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike,
                 expected: str, hint: str, skip: tuple[str, ...] = ()) -> None:
    """Load `state` into `model`, or raise `WeightsError` naming the file, what it should match
    (`expected`), the first keys and shapes that differ, and what to check (`hint`). Keys under
    `skip` may be absent (a fine-tuning run's new classifier)."""
    own = model.state_dict()
    # Checkpoints older than BatchNorm's counter lack it; torch fills it in itself.
    missing = [k for k in own if k not in state and not k.startswith(skip)
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})"
                 for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong shape", misshaped)) if keys]
    if problems:
        raise WeightsError(f"{source} does not match {expected} ({'; '.join(problems)}); {hint}")
    model.load_state_dict(state, strict=not skip)


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: ours ({"model": ...}), {"state_dict": ...} or a plain
    state dict (torchvision's files), without DDP's and torch.compile's prefixes."""
    return strip_prefixes(ckpt.get("model", ckpt.get("state_dict", ckpt)))


def backbone_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Student backbone weights: what the method that wrote a run exported
    (`Method.backbone_state_dict`), or a plain or torchvision state dict without its classifier
    (fine-tuning replaces it)."""
    if ckpt.get("backbone") is not None:
        return dict(ckpt["backbone"])
    return {k: v for k, v in model_state(ckpt).items() if not k.startswith("fc.")}


def seed_all(seed: int) -> None:
    """Seed torch, numpy and random: call before building models, so a seed means a run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    """Every generator's state as tensors and plain containers, which `weights_only` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    if isinstance(keys, torch.Tensor):  # older checkpoints hold the ndarray itself
        keys = keys.numpy()
    np.random.set_state((name, keys.astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
