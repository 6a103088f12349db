"""Checkpoints: plain dicts written atomically, and loading weights from several formats."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distinit.errors import UserError


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file, then rename: a crash or a full disk never leaves a half-written
    checkpoint, and the previous one stays intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if path.is_file() else "no checkpoint exists yet"
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; {kept}. Free disk "
                        "space or fix the folder's permissions, then run again with --resume") from None


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return {"model": load_file(str(path))}
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle trace
        raise UserError(f"cannot read checkpoint {path}: {e}") from None


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: ours ({"model": ...}), {"state_dict": ...} or a plain
    state dict (torchvision's files), with DDP's `module.` prefix removed."""
    sd = ckpt.get("model", ckpt.get("state_dict", ckpt))
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


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
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
