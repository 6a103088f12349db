"""Inflation: start a Res3D/MC3 student from a 2D ResNet (the paper's Table 1 baseline).

Each 2D kernel (O, I, kh, kw) is repeated over the student's temporal kernel size t and
divided by t, so on a clip of one repeated frame a 3D conv gives the 2D conv's output (away
from the temporal padding). BatchNorm parameters and statistics are copied; the classifier is
not (its classes differ). The name map follows torchvision's video ResNet, which puts each conv
and its BN in one Sequential: conv1 -> stem.0, bn1 -> stem.1, layerX.Y.convK ->
layerX.Y.convK.0, layerX.Y.bnK -> layerX.Y.convK.1, downsample.* unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

from distinit.engine.checkpoint import read_checkpoint
from distinit.errors import UserError
from distinit.models.students import Conv2Plus1D, R2Plus1dStem, VideoResNet


class InflationError(UserError):
    """The 2D weights cannot be inflated into this student."""


@dataclass
class InflationReport:
    inflated: list[str] = field(default_factory=list)  # student conv kernels built from 2D ones
    copied: list[str] = field(default_factory=list)  # BN parameters and buffers
    skipped: list[str] = field(default_factory=list)  # 2D keys not used (the classifier, ...)
    missing: list[str] = field(default_factory=list)  # student keys left as initialised
    notes: list[str] = field(default_factory=list)


_BLOCK_KEY = re.compile(r"^(layer\d+\.\d+)\.(conv|bn)(\d+)\.(.+)$")


def student_key(key_2d: str) -> str | None:
    """The video-ResNet name of a 2D ResNet key (torchvision names); None for the classifier."""
    if key_2d.startswith("fc."):
        return None
    if key_2d.startswith("conv1."):
        return "stem.0." + key_2d[len("conv1."):]
    if key_2d.startswith("bn1."):
        return "stem.1." + key_2d[len("bn1."):]
    match = _BLOCK_KEY.match(key_2d)
    if match:
        block, kind, k, rest = match.groups()
        return f"{block}.conv{k}.{0 if kind == 'conv' else 1}.{rest}"
    return key_2d  # downsample.0/1 keep their names


def inflate_kernel(weight_2d: torch.Tensor, t: int) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, t, kh, kw): the 2D kernel at every time step, divided by t."""
    return weight_2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


def inflate_from_2d(student: VideoResNet, state_dict_2d: dict[str, torch.Tensor],
                    strict: bool = True) -> InflationReport:
    """Copy a 2D ResNet state dict into a matching R3D/MC3 student, in place.

    strict: every student tensor except the classifier must come from the 2D weights, and every
    2D tensor except the classifier must be used; otherwise unmatched keys are only reported.
    A student whose stem takes other than 3 channels (e.g. optical flow) gets the 2D stem kernel
    averaged over its RGB channels and repeated per channel (the paper's Table 5).
    """
    if not isinstance(student, VideoResNet):
        raise InflationError(f"inflation needs a Res3D/MC3 VideoResNet student, got "
                             f"{type(student).__name__}; use DistInit for other architectures")
    if any(isinstance(m, Conv2Plus1D | R2Plus1dStem) for m in student.modules()):
        raise InflationError("inflation needs full 3D convolutions (r3d_18, mc3_18): an R(2+1)D "
                             "student's factorised convs have no 2D counterpart; initialise it "
                             "with DistInit instead, as the paper does")
    own = student.state_dict()
    report = InflationReport()
    new: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, value in state_dict_2d.items():
        target = student_key(key)
        if target is None:
            report.skipped.append(key)
            continue
        if target not in own:
            problems.append(f"2D {key} has no student counterpart {target}")
            report.skipped.append(key)
            continue
        want = own[target]
        if value.dim() == 4 and want.dim() == 5:
            if target == "stem.0.weight" and value.shape[1] == 3 and want.shape[1] != 3:
                value = value.mean(1, keepdim=True).repeat(1, want.shape[1], 1, 1)
                report.notes.append(f"stem kernel averaged over RGB and repeated for "
                                    f"{want.shape[1]} input channels")
            value = inflate_kernel(value, want.shape[2])
            kind = report.inflated
        else:
            kind = report.copied
        if value.shape != want.shape:
            problems.append(f"2D {key} {tuple(state_dict_2d[key].shape)} does not fit student "
                            f"{target} {tuple(want.shape)}")
            report.skipped.append(key)
            continue
        new[target] = value.to(want.dtype)
        kind.append(target)
    report.missing = [k for k in own if k not in new]
    for key in report.missing:
        # The classifier is new by design; BN's batch counter is bookkeeping.
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            problems.append(f"student {key} has no 2D counterpart")
    if strict and problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InflationError("cannot inflate: " + "; ".join(problems[:3]) + more +
                             "; the 2D model must have the student's widths, blocks and stem "
                             "kernel (e.g. resnet18 -> r3d_18, resnet_tiny -> students.TINY)")
    report.notes += problems
    with torch.no_grad():
        for key, value in new.items():
            own[key].copy_(value)  # state_dict() tensors share storage with the student
    return report


def inflate_from_file(student: VideoResNet, path: str | os.PathLike,
                      strict: bool = True) -> InflationReport:
    """`inflate_from_2d` from a checkpoint file (the formats `checkpoint.read_checkpoint` reads)."""
    state_dict, _ = read_checkpoint(path, "a 2D ResNet", what="2D weights to inflate")
    return inflate_from_2d(student, state_dict, strict=strict)
