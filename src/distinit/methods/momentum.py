"""The momentum (key) encoder of MoCo-style methods: a frozen copy moved towards the online one
by an exponential moving average after every optimizer step."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from distinit.engine import dist


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` that no optimizer moves, in train mode.

    Train mode on purpose: MoCo's key encoder normalises with the statistics of the batch it
    encodes (shuffled across ranks, see `dist.shuffle_batch`), not with running averages.
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target.train()


def _matched(kind: str, target: dict[str, torch.Tensor],
             source: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(target, source) pairs by name; an error naming what differs if the modules differ."""
    if target.keys() != source.keys():
        only_t = sorted(target.keys() - source.keys())[:5]
        only_s = sorted(source.keys() - target.keys())[:5]
        raise ValueError(f"momentum_update: the two modules have different {kind}: only in "
                         f"target {only_t}, only in source {only_s} (pass the source unwrapped, "
                         "not inside DDP)")
    bad = [f"{k} {tuple(target[k].shape)} vs {tuple(source[k].shape)}"
           for k in target if target[k].shape != source[k].shape]
    if bad:
        raise ValueError(f"momentum_update: {kind} differ in shape (target vs source): {bad[:5]}")
    return [(target[k], source[k]) for k in target]


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """target = m * target + (1 - m) * source for every parameter; buffers copied from source.

    Buffers (BatchNorm running statistics, batch counters) are not learned, so there is nothing
    to average: the source's are the current ones.
    """
    params = _matched("parameters", dict(target.named_parameters()),
                      dict(source.named_parameters()))
    for t, s in params:  # not lerp_ (swa_utils, timm's ModelEmaV3): measured to change last bits
        t.mul_(m).add_(s.detach().to(t.dtype), alpha=1.0 - m)
    buffers = _matched("buffers", dict(target.named_buffers()), dict(source.named_buffers()))
    for t, s in buffers:
        t.copy_(s)


@torch.no_grad()
def encode_keys(encoder: nn.Module, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
    """Keys (B, dim) of clips x (B, C, T, H, W) from a key encoder, without BN leakage.

    A query and its own key encoded in the same BatchNorm batch share its statistics, a cue
    that tells the positive apart. MoCo encodes keys from a batch shuffled across processes; in
    one process the shuffled batch is the same batch, so its rows are also encoded in `chunks`
    chunks: each key is normalised with the statistics of a random subset of the batch, not the
    batch its query saw. Chunks are cut per process, so the run depends on the key batch per
    process, like BatchNorm itself.
    """
    shuffled, idx = dist.shuffle_batch(x)
    keys = torch.cat([encoder(c) for c in shuffled.chunk(chunks)])
    return dist.unshuffle_batch(keys, idx)


MOMENTUM_SCHEDULES = ("constant", "cosine")


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    """The key encoder's momentum after optimizer step `step` (1-based) of `total_steps`.

    constant: `base` throughout (MoCo, ISD, auxSKD). cosine: BYOL's schedule (Grill et al. 2020,
    Sec. 3.2, `tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`), from `base` up to 1, so a short
    run can start with a teacher that moves fast and end with a settled one.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        progress = min(step, total_steps) / max(total_steps, 1)
        return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
    raise ValueError(f"unknown momentum schedule {schedule!r}; valid: {MOMENTUM_SCHEDULES}")
