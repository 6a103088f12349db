"""One code path for a single process and for `torchrun` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td


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
    return torch.device(name)


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


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if td.is_initialized():
        td.all_reduce(t, op=td.ReduceOp.MAX)
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if td.is_initialized():
        td.all_reduce(t)
    return t


def barrier() -> None:
    if td.is_initialized():
        td.barrier()
