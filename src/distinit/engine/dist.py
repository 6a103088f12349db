"""One code path for a single process and for `torchrun` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
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


DEFAULT_TIMEOUT = 600.0  # seconds; Config.dist_timeout


def setup(device: str = "auto", timeout: float = DEFAULT_TIMEOUT) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a world of one.

    `timeout` (dist_timeout, seconds): how long a collective waits for a rank that does not
    answer before it fails, so a job whose node died stops instead of hanging (the first call
    sets it; `liveness` then names the lost rank). Ranks are global: `local_rank()` is the rank
    among this node's processes, for node-local work.
    """
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not td.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        td.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                              timeout=timedelta(seconds=timeout))
    rank = td.get_rank() if td.is_initialized() else 0
    return DistContext(rank=rank, world=world if td.is_initialized() else 1, device=dev)


def launch_rank() -> int:
    """This process's rank, before it joins the process group too (torchrun's RANK)."""
    return td.get_rank() if td.is_initialized() else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """This process's rank among its node's processes (torchrun's LOCAL_RANK; 0 alone): the one
    with local rank 0 does a node's node-local work (a check of a local copy, staging)."""
    return int(os.environ.get("LOCAL_RANK", 0))


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


@torch.no_grad()
def gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` concatenated along dim 0 in rank order: (B, ...) -> (world*B, ...).

    No gradient flows back through the gather (MoCo gathers keys and the key branch only), so
    the result is detached at world size 1 too, to keep one behaviour for one process and many.
    Every rank must give the same shape; it is checked first, since a mismatch would otherwise
    hang or fail inside the backend with a message that does not say why.
    """
    if not td.is_initialized():
        return t.detach()
    world = td.get_world_size()
    shape = torch.tensor(t.shape, dtype=torch.long, device=t.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    td.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        # every rank sees the same shapes, so every rank raises: none is left waiting
        raise ValueError(f"gather_tensor needs the same shape on every rank, got "
                         f"{[tuple(s.tolist()) for s in shapes]} in rank order; give every rank "
                         "the same batch size (a DataLoader with drop_last=True)")
    out = [torch.empty_like(t) for _ in range(world)]
    td.all_gather(out, t.contiguous())
    return torch.cat(out)


@torch.no_grad()
def shuffle_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffling BN: deal the global batch out to the ranks in a random order.

    With BatchNorm computed per rank, a query and its key computed from the same local batch
    share batch statistics, which leaks which key is the positive; encoding the keys from a
    shuffled batch breaks that. x (B, ...) on each rank -> (B, ...) of the shuffled global
    batch, and the (world*B,) index that `unshuffle_batch` needs. Key branch only: no gradient.

    At world size 1 the shuffled batch is the same batch, so BatchNorm sees the same statistics
    and the remedy does nothing; the permutation is still drawn so that one process runs the
    same code path (and consumes the same random numbers) as many.
    """
    rank, world = rank_world()
    everything = gather_tensor(x)  # (world*B, ...)
    # every rank draws, so every rank's RNG advances alike; rank 0's draw is the one used
    perm = torch.randperm(len(everything), device=x.device)
    if td.is_initialized():
        td.broadcast(perm, src=0)
    mine = perm.view(world, -1)[rank]  # (B,)
    return everything[mine], torch.argsort(perm)


@torch.no_grad()
def unshuffle_batch(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Undo `shuffle_batch`: each rank gets back the rows of its own original batch, in order.

    x (B, ...) as computed from the shuffled batch, idx (world*B,) from `shuffle_batch`.
    """
    rank, world = rank_world()
    everything = gather_tensor(x)  # (world*B, ...)
    if len(idx) != len(everything):
        raise ValueError(f"unshuffle_batch got an index of {len(idx)} rows for a global batch "
                         f"of {len(everything)}; pass the index shuffle_batch returned")
    return everything[idx.view(world, -1)[rank]]
