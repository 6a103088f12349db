"""RAFT optical flow (Teed and Deng, 2020) for `distinit flow --algorithm raft_small|raft_large`.

torchvision's `raft_small` / `raft_large` with weights from a local file (nothing is downloaded):
a torchvision RAFT state dict such as `raft_large_C_T_V1-22a6c225.pth`, the port of the original
`raft-things.pth` that MSCL's MoDist re-implementation computed its flow with (docs/FLOW.md).
Frames go in as RGB scaled to [-1, 1], torchvision's and the original code's input range.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distinit.engine.checkpoint import load_weights, read_checkpoint
from distinit.errors import UserError
from distinit.optional import import_torchvision

# The correlation pyramid pools 1/8-resolution feature maps three times and needs them 16+
# cells a side: a smaller frame is enlarged to this, and its flow shrunk back.
MIN_SIDE = 128
BATCH = 8  # frame pairs a forward: one video's pairs in a few calls, not one call a pair
# The files behind torchvision's weights enums, named in messages (not fetched).
EXAMPLE_WEIGHTS = {"raft_small": "raft_small_C_T_V2-01064c6d.pth",
                   "raft_large": "raft_large_C_T_V1-22a6c225.pth"}


def weights_digest(path: str | Path) -> str:
    """The first 16 hex digits of the file's sha256, recorded in flow.json."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def check_weights(name: str, weights: str) -> Path:
    """The weights file as an absolute path, or one line saying what to pass."""
    if not weights:
        raise UserError(f"--algorithm {name} needs --weights FILE: a torchvision {name} state "
                        f"dict on disk (e.g. {EXAMPLE_WEIGHTS[name]}); nothing is downloaded")
    path = Path(weights).absolute()
    if not path.is_file():
        raise UserError(f"RAFT weights not found: {path} (--weights takes a torchvision {name} "
                        "state dict saved with torch.save)")
    return path


@functools.cache  # one model per process, however many videos it computes
def load_raft(name: str, weights: str, device: str) -> nn.Module:
    """torchvision's `name` (raft_small | raft_large) with the state dict in `weights`, in eval."""
    tv = import_torchvision()
    model = getattr(tv.models.optical_flow, name)(weights=None, progress=False)
    state, _ = read_checkpoint(weights, expected=f"torchvision's {name}", what="RAFT weights")
    load_weights(model, state, weights, expected=f"torchvision's {name}",
                 hint="pass the weights of the same model as --algorithm (raft_small's and "
                      "raft_large's differ)")
    return model.eval().to(device)


def _padding(h: int, w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) to the next multiple of 8, split evenly as RAFT's own
    `InputPadder` does, so the borders are treated alike."""
    ph, pw = -h % 8, -w % 8
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


@torch.inference_mode()
def raft_flow(model: nn.Module, frames: np.ndarray, iters: int,
              device: str | torch.device = "cpu", gap: int = 1) -> np.ndarray:
    """(N+gap, h, w, 3) uint8 RGB -> (N, h, w, 2) float32 flow in pixels from frame t to
    t+gap."""
    n, h, w = len(frames) - gap, frames.shape[1], frames.shape[2]
    out = np.empty((n, h, w, 2), np.float32)
    scale = max(1.0, MIN_SIDE / h, MIN_SIDE / w)
    # Enlarged frames: a multiple of 8 at least MIN_SIDE a side, no padding needed.
    big = (math.ceil(h * scale / 8) * 8, math.ceil(w * scale / 8) * 8) if scale > 1 else None
    for start in range(0, n, BATCH):
        clip = torch.from_numpy(frames[start:start + BATCH + gap]).to(device)  # (b+gap, h, w, 3)
        x = clip.permute(0, 3, 1, 2).float() / 127.5 - 1  # (b+gap, 3, h, w) in [-1, 1]
        if big:
            x = F.interpolate(x, size=big, mode="bilinear", align_corners=False)
        else:
            x = F.pad(x, _padding(h, w), mode="replicate")  # (b+gap, 3, H, W), H, W % 8 == 0
        flow = model(x[:-gap], x[gap:], num_flow_updates=iters)[-1].float()  # (b, 2, H, W)
        if big:  # back to (h, w), vectors in pixels of the original frames
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * flow.new_tensor([w / big[1], h / big[0]]).view(1, 2, 1, 1)
        else:
            left, _, top, _ = _padding(h, w)
            flow = flow[:, :, top:top + h, left:left + w]  # (b, 2, h, w)
        out[start:start + len(flow)] = flow.permute(0, 2, 3, 1).cpu().numpy()
    return out
