"""One code path for a single process and for `torchrun` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td

from distinit.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but this torch sees no CUDA GPU (a CPU build, or no "
                        "driver); use device=cpu or device=auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; otherwise a world of one."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not td.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        td.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = td.get_rank() if td.is_initialized() else 0
    return DistContext(rank=rank, world=world if td.is_initialized() else 1, device=dev)


def rank_world() -> tuple[int, int]:
    return (td.get_rank(), td.get_world_size()) if td.is_initialized() else (0, 1)


def _reduce(t: torch.Tensor, op) -> torch.Tensor:
    """In-place all-reduce of a CPU or device tensor; NCCL needs it on the GPU."""
    if td.is_initialized():
        if td.get_backend() == "nccl" and not t.is_cuda:
            moved = t.cuda()
            td.all_reduce(moved, op=op)
            t.copy_(moved.cpu())
        else:
            td.all_reduce(t, op=op)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    return _reduce(t, td.ReduceOp.MAX)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _reduce(t, td.ReduceOp.SUM)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one without torchrun)."""
    if not td.is_initialized():
        return [obj]
    out: list[Any] = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not td.is_initialized():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(wait: bool = True) -> None:
    """Leave the process group; a gloo group alive at interpreter exit can abort the process.
    `wait`: first wait for every rank, so none tears its connections down while another still
    talks (after an error on one rank, the others may never arrive)."""
    if td.is_initialized():
        if wait:
            td.barrier()
        td.destroy_process_group()


def barrier() -> None:
    if td.is_initialized():
        td.barrier()
