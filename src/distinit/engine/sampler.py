"""The order of training samples: a function of the seed and the global batch alone.

The data is read as an endless stream of passes, each pass a permutation fixed by (seed, pass).
An epoch is `epoch_size` consecutive positions of that stream (one pass when 0), so an epoch
may be larger or smaller than the data set, as in the paper's "45 epochs of 1M clips".

Every optimizer step takes the next `global_batch` positions and cuts them into
`world x accum_steps` micro-batches: micro-batch i of rank r is chunk `i * world + r`. So one
process with `accum_steps=2` sees exactly the micro-batches two processes see, a resumed run
continues with exactly the batches an uninterrupted one would have seen, and a run may even
resume on a different number of processes as long as the global batch is the same.

Items are addressed as `pass * size + index`: a dataset draws the randomness of an item
(clip start, crop, flip) from (seed, pass, index), so a video that appears twice in one epoch
gets two different clips.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def split_index(item: int, size: int) -> tuple[int, int]:
    """(pass, index) of a stream item `pass * size + index`."""
    return divmod(int(item), size)


class StreamSampler(Sampler[int]):
    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1,
                 accum_steps: int = 1, epoch_size: int = 0):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.accum_steps = rank, world, accum_steps
        self.epoch_len = epoch_size or size
        self.global_batch = batch_size * world * accum_steps
        self.steps_per_epoch = self.epoch_len // self.global_batch  # a partial step is dropped
        self.start_step = 0

    def set_step(self, step: int) -> None:
        """Iterate from optimizer step `step` to the end of its epoch."""
        self.start_step = step

    def _pass(self, p: int) -> torch.Tensor:
        """Pass `p` of the stream: a permutation fixed by (seed, pass), as stream items."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + p)
        return torch.randperm(self.size, generator=g) + p * self.size

    def __iter__(self) -> Iterator[int]:
        # Step by step, holding one pass at a time: an epoch of 1e12 clips costs no more memory
        # than one of 1e3 (the whole epoch's index list would not fit).
        epoch, first = divmod(self.start_step, self.steps_per_epoch)
        base = epoch * self.epoch_len
        b, chunk = self.batch_size, self.world * self.batch_size
        held, perm = -1, torch.empty(0, dtype=torch.long)
        for step in range(first, self.steps_per_epoch):
            start = base + step * self.global_batch
            parts = []
            for p in range(start // self.size, (start + self.global_batch - 1) // self.size + 1):
                if p != held:
                    held, perm = p, self._pass(p)
                lo = max(start - p * self.size, 0)
                hi = min(start + self.global_batch - p * self.size, self.size)
                parts.append(perm[lo:hi])
            items = torch.cat(parts).view(self.accum_steps, chunk)  # (accum, world * b)
            yield from items[:, self.rank * b:(self.rank + 1) * b].flatten().tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step % self.steps_per_epoch) * \
            self.accum_steps * self.batch_size
