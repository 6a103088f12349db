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

    def _stream(self, start: int, stop: int) -> torch.Tensor:
        """Stream items at positions [start, stop)."""
        parts = []
        for p in range(start // self.size, (stop - 1) // self.size + 1):
            g = torch.Generator().manual_seed(self.seed * 100_003 + p)
            perm = torch.randperm(self.size, generator=g) + p * self.size
            lo, hi = max(start - p * self.size, 0), min(stop - p * self.size, self.size)
            parts.append(perm[lo:hi])
        return torch.cat(parts)

    def __iter__(self) -> Iterator[int]:
        epoch, first = divmod(self.start_step, self.steps_per_epoch)
        base = epoch * self.epoch_len
        items = self._stream(base + first * self.global_batch,
                             base + self.steps_per_epoch * self.global_batch)
        b = self.batch_size
        steps = items.view(-1, self.accum_steps, self.world, b)  # (steps, accum, world, b)
        return iter(steps[:, :, self.rank].flatten().tolist())

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step % self.steps_per_epoch) * \
            self.accum_steps * self.batch_size
