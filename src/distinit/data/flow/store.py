"""The on-disk format of `distinit flow`: where each video's flow goes, and how it is stored.

One plain `.npy` per video, `(T, H, W, 2)`: entry t is the flow from frame t to frame t+1
(channel 0 = x, 1 = y, in pixels of the frames flow was computed on) and the last entry repeats
entry T-2, so RGB frame indices index flow directly; a one-frame video gets zeros. uint8 stores
round((clip(v, -bound, bound) + bound) * 255 / (2 * bound)), the quantisation of TSN and
MMAction2 (bound 20 px); float16 stores pixels. `OUT/flow.json` records the settings and the
method that made the flow (for RAFT also its weights file, their sha256 and its iterations),
written once, so a reader needs nothing else and a second run cannot mix settings in one folder.
Every file is written as `.NAME.partial-PID` and renamed into place; one that a killed run left
behind is removed by the next run into the folder (`remove_partial`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distinit.errors import UserError

FORMAT, VERSION = "distinit-flow", 1
META_FILE = "flow.json"
DTYPES = ("uint8", "float16")
# The settings a run must share with the folder it writes into.
SETTINGS = ("algorithm", "dtype", "bound", "short_side")
# A method's own settings, present only for that method (RAFT's): compared when either has them.
METHOD_SETTINGS = ("weights_sha256", "iters", "gap")
# What `_write_atomically` writes before the rename: `.NAME.partial-PID`.
PARTIAL = re.compile(r"\..+\.partial-(\d+)")


def flow_file(video: str | Path, src_root: str | Path, out_root: str | Path) -> Path:
    """Where the flow of `video` is stored: its path relative to `src_root`, suffix `.npy`.

    `src_root` is what `distinit flow` was given as SRC: a folder, or a list file or single
    video, whose own folder is then the root. A video outside the root keeps only its name.
    A frame folder is a directory without a real suffix: `.npy` is appended to its name.
    """
    video = Path(os.path.abspath(video))
    root = Path(os.path.abspath(src_root))
    if not root.is_dir():
        root = root.parent
    relative = video.relative_to(root) if video.is_relative_to(root) and video != root else None
    relative = relative or Path(video.name)
    if video.is_dir():
        return Path(out_root) / relative.parent / f"{relative.name}.npy"
    return Path(out_root) / relative.with_suffix(".npy")


def flow_meta(algorithm: str, dtype: str, bound: float, short_side: int, gap: int = 1,
              **method: Any) -> dict:
    """The contents of `flow.json`; `bound` is null for float16, which stores pixels unclipped.
    `gap` (flow t from frame t to t + gap) is written only when not 1, so folders written
    before it existed read as gap 1. `method`: the algorithm's own settings (RAFT: weights,
    weights_sha256, iters)."""
    return {"format": FORMAT, "version": VERSION, "algorithm": algorithm, "dtype": dtype,
            "bound": float(bound) if dtype == "uint8" else None, "short_side": int(short_side),
            **({"gap": int(gap)} if gap != 1 else {}), **method}


def read_flow_meta(out_root: str | Path) -> dict:
    """The settings in `out_root/flow.json`, checked; a UserError if missing or invalid."""
    path = Path(out_root) / META_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: {out_root} is not a folder written by `distinit flow`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); delete the folder and run "
                        "`distinit flow` again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a distinit flow description (no \"format\": \"{FORMAT}\")")
    if meta.get("version") != VERSION:
        raise UserError(f"{path} has format version {meta.get('version')!r}; this distinit "
                        f"reads version {VERSION}")
    missing = [key for key in SETTINGS if key not in meta]
    bound = meta.get("bound")
    if missing or meta["dtype"] not in DTYPES or (meta["dtype"] == "uint8" and not (
            isinstance(bound, (int, float)) and bound > 0)):
        raise UserError(f"{path} is invalid: it needs {', '.join(SETTINGS)} with dtype one of "
                        f"{DTYPES} and a bound > 0 for uint8 (got {meta})")
    return meta


def claim_out_dir(out_root: str | Path, meta: dict) -> None:
    """Write `flow.json` into a new `out_root`, or check that the one there has `meta`'s settings."""
    out_root = Path(out_root)
    if (out_root / META_FILE).exists():
        existing = read_flow_meta(out_root)
        differ = [key for key in SETTINGS if existing[key] != meta[key]]
        differ += [key for key in METHOD_SETTINGS if existing.get(key) != meta.get(key)]
        if differ:
            theirs = ", ".join(f"{key}={existing.get(key)}" for key in differ)
            ours = ", ".join(f"{key}={meta.get(key)}" for key in differ)
            raise UserError(f"{out_root} already holds flow with {theirs} (this run: {ours}); "
                            "choose another OUT or the same settings")
        return
    out_root.mkdir(parents=True, exist_ok=True)
    _write_atomically(out_root / META_FILE, lambda f: f.write(
        (json.dumps(meta, indent=2) + "\n").encode()))


def quantize(flow: np.ndarray, meta: dict) -> np.ndarray:
    """Flow in pixels (any shape, float) -> the stored dtype of `meta`."""
    if meta["dtype"] == "float16":
        return flow.astype(np.float16)
    bound = meta["bound"]
    scaled = (np.clip(flow, -bound, bound) + bound) * (255 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize(arr: np.ndarray, meta: dict) -> np.ndarray:
    """Stored flow (uint8 or float16, e.g. a slice of a memory-mapped file) -> float32 pixels.

    uint8 0..255 maps back linearly onto [-bound, bound], within half a step (bound / 255).
    """
    if arr.dtype == np.uint8:
        bound = meta["bound"]
        return arr.astype(np.float32) * np.float32(2 * bound / 255) - np.float32(bound)
    return arr.astype(np.float32)


def is_complete(path: Path) -> bool:
    """Whether `path` is a readable flow file (so a resumed run skips it)."""
    try:
        arr = np.load(path, mmap_mode="r")  # reads the header only
    except (OSError, ValueError, EOFError):
        return False
    return arr.ndim == 4 and arr.shape[-1] == 2


def save_flow(path: Path, arr: np.ndarray) -> None:
    """`np.save` to `path` through a hidden temporary file, so a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda f: np.save(f, arr))


@contextmanager
def own_out_dir(out_root: str | Path) -> Iterator[None]:
    """Hold the lock of `out_root` (`engine.lock`; a second writer is one line naming this one)
    and remove the temporary files a killed run left there. The lock file (`.distinit.lock`)
    stays, as in every locked folder: removing it would let two writers lock two files."""
    from distinit.engine import lock

    out = Path(out_root)
    unwritable = "cannot write to {folder}: {reason}; make it writable or choose another OUT"
    locked = lock.acquire(out, "optical flow", "choose another OUT", unwritable=unwritable)
    try:
        stale = remove_partial(out) if locked else 0  # not ranks > 0: rank 0 may be writing
        if stale:
            shown = os.fsencode(out).decode("utf-8", "backslashreplace")
            print(f"removed {stale} temporary files that a killed run left in {shown}",
                  file=sys.stderr)
        yield
    finally:
        if locked:
            lock.release(out)


def remove_partial(out_root: str | Path) -> int:
    """Delete the temporary files (`.NAME.partial-PID`) under `out_root` that a killed run left
    behind (kill -9, a crash, a lost node): call it holding the folder's lock, when no other
    writer can be at work there. Returns how many were removed."""
    removed = 0
    for folder, _, files in os.walk(out_root):
        for name in files:
            if PARTIAL.fullmatch(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:  # gone already, or a read-only folder: writing will say so
                    pass
    return removed


def _write_atomically(path: Path, write) -> None:
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
