"""MoCo's queue of negative keys: a ring buffer that every rank keeps identical."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distinit.engine import dist


class KeyQueue(nn.Module):
    """The last `size` keys of the global batches, oldest overwritten first.

    `keys` (size, dim) and `ptr` (the next slot to write) are buffers, so they move with
    `.to()` and are saved in checkpoints. It starts from random unit vectors (drawn from the
    global torch RNG, so ranks seeded alike start alike) that stand in for negatives until
    real keys have filled it.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"KeyQueue needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def forward(self) -> torch.Tensor:
        """The queued keys (size, dim), as a copy.

        The loss is computed before `enqueue` but its backward runs after, and the loss's matmul
        saved the queue for that backward: an in-place write into the buffer itself would make
        autograd refuse ("modified by an inplace operation"). MoCo clones for the same reason.
        """
        return self.keys.clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write this step's keys (B, dim), gathered from every rank in rank order, at `ptr`.

        The write wraps around the end, so the batch need not divide the size; the result is
        the same as writing the global batch's keys one at a time. Keys are stored as they come
        (the caller normalises them), in the queue's dtype.
        """
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"KeyQueue of dim {self.keys.shape[1]} got keys of shape "
                             f"{tuple(keys.shape)}; expected (B, {self.keys.shape[1]})")
        keys = dist.gather_tensor(keys).to(self.keys.dtype)  # (world*B, dim)
        n, size, ptr = len(keys), self.size, int(self.ptr)
        # of a batch longer than the queue only the last `size` keys survive; they land where
        # writing the whole batch one key at a time would have left them
        kept = keys[-size:]  # (min(n, size), dim)
        start = (ptr + n - len(kept)) % size
        head = min(len(kept), size - start)  # up to the end of the buffer; the rest wraps to 0
        self.keys[start:start + head] = kept[:head]
        self.keys[:len(kept) - head] = kept[head:]
        self.ptr.fill_((ptr + n) % size)
