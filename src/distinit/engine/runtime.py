"""Where and how networks run: device, autocast precision and memory layout, from a run's
config. Training, evaluation, feature extraction and the demo all set up through `Runtime`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from distinit.engine.dist import resolve_device
from distinit.errors import UserError


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that run it; fp32 on CPU unless asked.

    On CPU, oneDNN's bf16 Conv3d weight gradients are not deterministic and sometimes wrong
    (measured with torch 2.13 on an AMX CPU: one layer's gradient sum 3% from the fp64 reference
    in most processes and 16-29% in others; `benchmarks/check_bf16_conv3d.py`), so
    `precision=bf16` on CPU is an explicit choice of speed over exactness.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UserError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None


def use_channels_last(setting: str, amp_dtype: torch.dtype | None) -> bool:
    """channels_last(_3d): `auto` turns it on wherever the run uses bf16 autocast, on a GPU or
    (asked for) on a CPU: oneDNN's and cuDNN's fast bf16 convolutions want that layout."""
    if setting not in ("auto", "on", "off"):
        raise UserError(f"channels_last must be auto, on or off, got {setting!r}")
    if setting == "auto":
        return amp_dtype is not None
    return setting == "on"


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() in (4, 5):
                v = v.contiguous(memory_format=torch.channels_last_3d if v.dim() == 5
                                 else torch.channels_last)
        out[k] = v
    return out



def _has_conv3d(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv3d) for m in net.modules())


@dataclass(frozen=True)
class Runtime:
    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None  # None: fp32
    channels_last: bool = False

    @classmethod
    def of(cls, cfg, device: torch.device | None = None) -> Runtime:
        """A run config's settings (`device`, `precision`, `channels_last`); `device` instead of
        `cfg.device` when the network already lives somewhere (under torchrun: this rank's)."""
        device = device or resolve_device(cfg.device)
        amp = resolve_precision(cfg.precision, device)
        return cls(device, amp, use_channels_last(cfg.channels_last, amp))

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def place(self, module: nn.Module, keep_layout: tuple[str, ...] = ()) -> nn.Module:
        """Move `module` to the device, in channels_last(_3d) when asked, except the children
        named in `keep_layout` (frozen teachers keep the layout they were given)."""
        module.to(self.device)
        if self.channels_last:
            for name, child in module.named_children():
                if name not in keep_layout:
                    child.to(memory_format=torch.channels_last_3d if _has_conv3d(child)
                             else torch.channels_last)
        return module

    def batch(self, batch: dict) -> dict:
        return to_device(batch, self.device, self.channels_last)
