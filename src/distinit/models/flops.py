"""Counted FLOPs of a network (`torch.utils.flop_counter`): what `distinit plan`, `cache-targets`
and `benchmarks/scaling.py` say a clip or a frame costs. Counted, not timed: a multiply-add is two
FLOPs; normalisation, activations and resampling are not counted (a few percent of a ResNet)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def counted(fn: Callable[[], object]) -> float:
    """The FLOPs of the matrix products and convolutions `fn()` runs."""
    with FlopCounterMode(display=False) as c:
        fn()
    return float(c.get_total_flops())


def _total(out) -> torch.Tensor:
    # A multi-head student returns one logit tensor per teacher: the loss touches all of them.
    return sum(o.float().sum() for o in out) if isinstance(out, list | tuple) else out.sum()


def training_flops(net: nn.Module, x: torch.Tensor) -> float:
    """Forward and backward of `net` on `x` (one training step's arithmetic, optimizer aside)."""
    net.train()
    flops = counted(lambda: _total(net(x)).backward())
    net.zero_grad(set_to_none=True)
    return flops


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """One forward of `model` on `x` in eval mode, without gradients (a frozen teacher)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        flops = counted(lambda: model(x))
    model.train(was)
    return flops


def frame_flops(teacher: nn.Module, frame_size: int) -> float:
    """One frame through an image teacher's network at the size it resizes frames to (its
    `input_size`; `frame_size`, the crop it is handed, when it takes frames as they come)."""
    size = getattr(teacher, "input_size", None) or frame_size
    return forward_flops(getattr(teacher, "model", teacher), torch.zeros(1, 3, size, size))
