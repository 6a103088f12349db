"""A toy clip dataset and network for training-loop tests (imported by a torchrun script too)."""
import os
import sys

import torch
from torch import nn


class ToyClips(torch.utils.data.Dataset):
    """Random clips whose label is the sign of their mean, flipped in every other pass.

    Items are addressed as pass * len + index, as the training loop's sampler asks for them.
    """

    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 4, 8, 8, generator=g)
        self.y = (self.x.mean(dim=(1, 2, 3, 4)) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        pass_, i = divmod(item, len(self.x))
        flip = (i + pass_) % 2 == 1
        x = self.x[i].flip(-1) if flip else self.x[i]
        return {"video": x, "label": self.y[i], "rng_seed": item}


def toy_net():
    torch.manual_seed(0)
    # no batch norm: per-process batch statistics would make DDP differ from one process
    return nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 2))


def leave_child() -> None:
    """End a finished spawned test process now. As in distinit.cli.entry: gloo's C++ threads can
    abort a process during interpreter finalization ("terminate called without an active
    exception", seen in CI) after its results are on disk."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def can_mount_tmpfs() -> bool:
    """Whether this machine lets a process mount a tmpfs in a private mount namespace (the
    full-disk and read-only tests run on a real one)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0
