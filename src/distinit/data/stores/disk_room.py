"""Whether a folder's file system has room for what a command is about to write: refused in one
line before a long build starts, rather than a full disk hours into it."""

from __future__ import annotations

import shutil
from pathlib import Path

from distinit.errors import UserError

MARGIN = 0.05  # an estimate, and other writers on the same disk: leave this share spare


def human_bytes(n: float) -> str:
    """Decimal units, as disks are sold and `df -H` prints: 4.7 TB, 71 GB, 512 kB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def nearest_existing(folder: str | Path) -> Path:
    """`folder`, or its closest parent that exists (a folder not made yet lands on that disk)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_room(folder: str | Path, needed: float, what: str, instead: str) -> None:
    """Refuse (one `UserError` line) when the file system of `folder` has less free space than
    `needed` bytes and a 5% margin. `instead`: what else the user can do (another folder)."""
    if needed <= 0:
        return
    where = nearest_existing(folder)
    free = shutil.disk_usage(where).free
    want = needed * (1 + MARGIN)
    if free < want:
        raise UserError(f"not enough room for the {what} at {folder}: it needs about "
                        f"{human_bytes(needed)} (+{MARGIN:.0%} margin: {human_bytes(want)}), and "
                        f"the file system of {where} has {human_bytes(free)} free; free "
                        f"{human_bytes(want - free)} there, or {instead}")
