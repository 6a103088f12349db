"""Sharded stores built once over a corpus: resumable, split across torchrun ranks, each shard
written atomically, refused when made for something else.

A store is a folder with `manifest.json` (what it was made from: its `fingerprint`, the video
list, which shard holds which video) and `shard-NNNNN.safetensors` files of named arrays, one
group of arrays per video (`v{j}/NAME`, j the video's position in the shard). The teacher-target
cache (`targets/cache.py`) and the decoded-clip store (`data/clip_store.py`) are both such
stores. Readers memory-map the shards, so a loader worker reads only the arrays it slices.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from distinit.data.decoders import VideoDecodeError
from distinit.engine import dist
from distinit.errors import UserError

MANIFEST = "manifest.json"


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha1 of a file's bytes (teacher weights: a changed file is a different teacher)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def corpus_digest(videos: Sequence[str | Path]) -> str:
    """One hash of the video list, each file's size and modification time."""
    h = hashlib.sha1()
    for v in videos:
        p = Path(v).resolve()
        try:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys[:4]) or "unknown"


def build(out_dir: str | Path, what: str, fingerprint: dict, videos: Sequence[str | Path],
          shard_size: int, make: Callable[[Path], dict[str, np.ndarray]],
          command: str) -> Path:
    """Write the store for `videos` under `out_dir`, shard by shard: `make(video)` returns the
    arrays of one video (a `VideoDecodeError` skips it: its shard holds no arrays for it, so
    `Store.has` is False).

    Shards already on disk are kept (a stopped build resumes); under torchrun rank r writes the
    shards i with i % world == r. A folder holding a store made from another fingerprint is
    refused: `command` is what the message tells the user to run.
    """
    out = Path(out_dir)
    rank, world = dist.rank_world()
    videos = [str(v) for v in videos]
    shards = [list(range(s, min(s + shard_size, len(videos))))
              for s in range(0, len(videos), shard_size)]
    manifest = {"what": what, "fingerprint": fingerprint, "videos": videos,
                "shard_size": shard_size, "num_shards": len(shards)}
    error = ""
    if rank == 0:
        error = _claim(out, manifest, what)
    error = dist.broadcast_object(error)
    if error:
        raise UserError(f"{error}; remove it or write to another folder ({command})")
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(rank, len(shards), world) if not (out / shard_name(i)).is_file()]
    for i in tqdm(todo, desc=f"{what} (rank {rank})" if world > 1 else what, unit="shard",
                  disable=not todo):
        arrays: dict[str, np.ndarray] = {}
        for j, video_idx in enumerate(shards[i]):
            try:
                made = make(Path(videos[video_idx]))
            except VideoDecodeError as e:
                print(f"warning: {what}: skipping video {videos[video_idx]}: {e.reason}",
                      flush=True)
                continue
            arrays.update({f"v{j}/{k}": np.ascontiguousarray(a) for k, a in made.items()})
        _atomic_save(out / shard_name(i), arrays)
    dist.barrier()
    return out


def complete(folder: str | Path) -> bool:
    """Whether `folder` holds a finished store: a manifest and every shard it lists."""
    file = Path(folder) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
        return all((Path(folder) / shard_name(i)).is_file()
                   for i in range(manifest["num_shards"]))
    except (OSError, ValueError, KeyError):
        return False


def _claim(out: Path, manifest: dict, what: str) -> str:
    """Write the manifest, or say why this folder is not ours ('' when it is)."""
    file = out / MANIFEST
    if file.is_file():
        try:
            old = json.loads(file.read_text())
        except (OSError, ValueError):
            return f"{file} is damaged"
        if old.get("what") != what:
            return f"{out} holds a {old.get('what', 'different store')}, not a {what}"
        if old.get("fingerprint") != manifest["fingerprint"] or old.get("videos") != manifest["videos"]:
            differ = _describe_difference(old.get("fingerprint", {}), manifest["fingerprint"])
            if old.get("videos") != manifest["videos"]:
                differ = "the video list" if differ == "unknown" else f"{differ}, the video list"
            return f"{out} holds a {what} made for something else (differs in: {differ})"
        if old.get("shard_size") != manifest["shard_size"]:
            return f"{out} was written with shard_size {old.get('shard_size')}"
        return ""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(file, json.dumps(manifest, indent=1))
    return ""


def _atomic_save(file: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(arrays, tmp)
        os.replace(tmp, file)  # a reader never sees half a shard
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, file)


class Store:
    """Reads a store: `get(video, NAME, rows)` slices one array of one video lazily.

    `expect` (a fingerprint) refuses a store made from something else, naming what differs;
    shards are opened on first use in each process (safe in loader workers).
    """

    def __init__(self, folder: str | Path, what: str, expect: dict | None = None,
                 command: str = ""):
        self.folder = Path(folder)
        file = self.folder / MANIFEST
        hint = f"; build it with {command}" if command else ""
        if not file.is_file():
            raise UserError(f"no {what} at {self.folder} (no {MANIFEST}){hint}")
        try:
            self.manifest = json.loads(file.read_text())
        except (OSError, ValueError):
            raise UserError(f"{file} is damaged{hint}") from None
        if self.manifest.get("what") != what:
            raise UserError(f"{self.folder} holds a {self.manifest.get('what')}, not a {what}")
        if expect is not None and self.manifest["fingerprint"] != expect:
            differ = _describe_difference(self.manifest["fingerprint"], expect)
            raise UserError(f"the {what} at {self.folder} was made for other settings (differs "
                            f"in: {differ}); it is stale for this config: rebuild it{hint}")
        self.fingerprint = self.manifest["fingerprint"]  # what the store was made from
        size = self.manifest["shard_size"]
        self._where = {str(Path(v).resolve()): divmod(i, size)
                       for i, v in enumerate(self.manifest["videos"])}
        missing = [i for i in range(self.manifest["num_shards"])
                   if not (self.folder / shard_name(i)).is_file()]
        if missing:
            raise UserError(f"the {what} at {self.folder} is incomplete ({len(missing)} of "
                            f"{self.manifest['num_shards']} shards missing){hint}")
        self._open: dict[int, object] = {}
        self._videos: dict[int, set[int]] = {}
        self._located: dict[str, tuple[int, int] | None] = {}
        self._keys: dict[int, set[str]] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:  # open shard handles do not pickle (spawned workers)
        return {**self.__dict__, "_open": {}, "_videos": {}, "_keys": {}}

    def covers(self, videos: Iterable[str | Path]) -> list[str]:
        """The videos of `videos` the store was not made for."""
        return [str(v) for v in videos if str(Path(v).resolve()) not in self._where]

    def _shard(self, i: int):
        if os.getpid() != self._pid:  # a forked loader worker opens its own handles
            self._open, self._videos, self._keys, self._pid = {}, {}, {}, os.getpid()
        if i not in self._open:
            f = safe_open(str(self.folder / shard_name(i)), framework="numpy")
            self._open[i] = f
            self._keys[i] = set(f.keys())  # noqa: SIM118 (safe_open is not iterable)
            self._videos[i] = {int(k.split("/")[0][1:]) for k in self._keys[i]}
        return self._open[i]

    def has(self, video: str | Path) -> bool:
        """Whether the store holds `video` (False for one skipped at build time)."""
        where = self._locate(video)
        if where is None:
            return False
        shard, j = where
        self._shard(shard)
        return j in self._videos[shard]

    def has_array(self, video: str | Path, name: str) -> bool:
        shard, j = self._locate(video)
        self._shard(shard)
        return f"v{j}/{name}" in self._keys[shard]

    def get(self, video: str | Path, name: str, rows: slice | None = None) -> np.ndarray:
        """Array `name` of `video` (only `rows` of it read when given). KeyError when the video
        was skipped at build time; ValueError when the store was not made for it."""
        f, key = self._key(video, name)
        if rows is None:
            return f.get_tensor(key)
        return f.get_slice(key)[rows]

    def shape(self, video: str | Path, name: str) -> tuple[int, ...]:
        """The shape of array `name` of `video`, read from the shard's header (no data read);
        the errors of `get`."""
        f, key = self._key(video, name)
        return tuple(f.get_slice(key).get_shape())

    def _key(self, video: str | Path, name: str) -> tuple[object, str]:
        """(the open shard holding `video`, the key of its array `name`)."""
        where = self._locate(video)
        if where is None:
            raise ValueError(f"{video} is not in the {self.manifest['what']} at {self.folder}")
        shard, j = where
        return self._shard(shard), f"v{j}/{name}"

    def _locate(self, video: str | Path) -> tuple[int, int] | None:
        """(shard, position) of a video, its path resolved once per process and name."""
        key = str(video)
        if key not in self._located:
            self._located[key] = self._where.get(str(Path(video).resolve()))
        return self._located[key]
