"""Sharded stores built once over a corpus: resumable, split across torchrun ranks, each shard
written atomically with its checksum, checked before it is read, refused when made for
something else.

A store is a folder with `manifest.json` (what it was made from: its `fingerprint`, the video
list and the shard size, hence which shard holds which video: readers take it from there only)
and `shard-NNNNN.safetensors` files of named arrays, one group per video (`v{j}/NAME`, j the
video's position in the shard), each with its checksum record (`data.check_store`). The
teacher-target cache (`targets/cache.py`) and the clip store (`data/stores/clip_store.py`) are such
stores. Readers memory-map the shards, so a loader worker reads only the arrays it slices.

`Store` hashes every shard once per process and file version before a run reads it (on the
node's local rank 0, before loader workers start). `build` holds the folder's lock, removes the
temporary files a killed builder left, checks the shards it owns and rebuilds the bad ones (one
line each), stops between videos on SIGTERM or Ctrl-C saying what is kept, and turns a full
disk or read-only folder into one line. A store written before checksums existed is read
unverified, with one warning; its builder rebuilds it with them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save
from tqdm import tqdm

from distinit.data.stores.check import (
    CHECKSUM,
    MANIFEST,
    SUM,
    check_shards,
    file_checksum,
    read_manifest,
    remember,
    shard_name,
    store_id,
    verify_once,
    written,
)
from distinit.data.stores.check import complete as complete  # re-exported: shards.complete
from distinit.data.video.decoders import VideoDecodeError
from distinit.engine import dist, lock
from distinit.engine.interrupt import Interrupted, StopRequest, signal_name
from distinit.errors import UserError

# what a killed builder leaves: our temporary names, and safetensors' own (older builds used it)
_STALE = re.compile(r"\.(shard-\d+|manifest\.json)\..*\.tmp|\.tmp[A-Za-z0-9]{6}")


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (teacher weights: a changed file is a different teacher; sha1, as
    the caches already built record it)."""
    return file_checksum(path, "sha1")


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


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys[:4]) or "unknown"


def _layout(what: str, fingerprint: dict, videos: list[str], shard_size: int,
            command: str) -> dict:
    return {"what": what, "fingerprint": fingerprint, "videos": videos, "shard_size": shard_size,
            "num_shards": -(-len(videos) // shard_size), "checksum": CHECKSUM,
            "command": command}


def _fix(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make the folder writable"
    return "fix that"


def build(out_dir: str | Path, what: str, fingerprint: dict, videos: Sequence[str | Path],
          shard_size: int, make: Callable[[Path], dict[str, np.ndarray]], command: str,
          wait: bool = False, elsewhere: str = "write to another folder") -> Path:
    """Write the store for `videos` under `out_dir`, shard by shard: `make(video)` returns the
    arrays of one video (a `VideoDecodeError` skips it: `Store.has` is then False for it).

    Shards on disk that pass their check are kept (a stopped build resumes), bad ones rebuilt;
    under torchrun rank r writes the shards i with i % world == r. A store there made with
    another shard size is finished with its own; one made from another fingerprint is refused
    (`command`: what to run). The folder is locked: held by another process, `wait` waits,
    else `lock.FolderInUse` names the holder and says `elsewhere` (what to do instead)."""
    out = Path(out_dir)
    if not videos:  # a store of nothing would have no shard to check (`read_manifest` refuses it)
        raise UserError(f"no videos to write a {what} of at {out}")
    rank, world = dist.rank_world()
    manifest = _layout(what, fingerprint, [str(v) for v in videos], shard_size, command)
    failure, locked, upgrade = None, False, False
    if rank == 0:
        try:
            locked = lock.acquire(out, what, elsewhere, wait, unwritable=(
                f"cannot write the {what} at {{folder}}: {{reason}}; make it writable or "
                "choose another folder, then run the same command again"))
            manifest, upgrade = _claim(out, manifest, command)
        except UserError as e:
            failure = e
        except OSError as e:  # e.g. a stale file it may not remove
            failure = UserError(f"cannot write the {what} at {out}: {e.strerror or e}; "
                                f"{_fix(e)} and run the same command again")
    error, manifest, upgrade = dist.broadcast_object((str(failure or ""), manifest, upgrade))
    if error:
        if locked:
            lock.release(out)
        raise failure or UserError(error)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(out, manifest, make, rank, world, quiet=upgrade)
        dist.barrier()
    finally:
        if locked:
            lock.release(out)
    return out


def _write(out: Path, manifest: dict, make: Callable[[Path], dict[str, np.ndarray]],
           rank: int, world: int, quiet: bool) -> None:
    """Check this rank's shards on disk and write those missing or bad."""
    what, videos, size, sid = (manifest["what"], manifest["videos"], manifest["shard_size"],
                               store_id(manifest))
    mine = range(rank, manifest["num_shards"], world)
    present = [i for i in mine if (out / shard_name(i)).is_file()]
    bad: dict[int, str] = {}
    with StopRequest(announce=False) as stop:
        for k in range(0, len(present), 8):  # a signal waits for 8 shards' hashing at most
            if stop.signum:
                raise _stopped(out, manifest, stop.signum)
            bad.update(check_shards(out, sid, present[k:k + 8]))
        for i, problem in bad.items():
            if not (quiet and problem.startswith("has no checksum")):
                print(f"{what} at {out}: {shard_name(i)} {problem}: rebuilding it", flush=True)
        todo = sorted(set(mine) - set(present) | set(bad))
        for i in set(present) - set(bad):
            remember(out / shard_name(i))
        for i in tqdm(todo, desc=f"{what} (rank {rank})" if world > 1 else what, unit="shard",
                      disable=not todo):
            arrays: dict[str, np.ndarray] = {}
            for j, video in enumerate(videos[i * size:(i + 1) * size]):
                if stop.signum:  # the shard in progress is dropped: it is not whole
                    raise _stopped(out, manifest, stop.signum)
                try:
                    made = make(Path(video))
                except VideoDecodeError as e:
                    print(f"warning: {what}: skipping video {video}: {e.reason}", flush=True)
                    continue
                arrays.update({f"v{j}/{k}": np.ascontiguousarray(a) for k, a in made.items()})
            try:
                _write_shard(out / shard_name(i), arrays, sid)
            except OSError as e:
                raise UserError(
                    f"cannot write {shard_name(i)} of the {what} at {out}: "
                    f"{e.strerror or e}; the {written(out, manifest)} of "
                    f"{manifest['num_shards']} shards already written are kept: {_fix(e)} and "
                    "run the same command again to finish it") from None
            if stop.signum:
                raise _stopped(out, manifest, stop.signum)


def _stopped(out: Path, manifest: dict, signum: int) -> Interrupted:
    return Interrupted(f"stopped by {signal_name(signum)}: {written(out, manifest)} of "
                       f"{manifest['num_shards']} shards of the {manifest['what']} at {out} are "
                       "written and kept; run the same command again to finish it", signum)


def _write_shard(file: Path, arrays: dict[str, np.ndarray], sid: str) -> None:
    """The shard's bytes (as `safetensors.numpy.save_file` writes them), its record first."""
    data = save(arrays)
    arrays.clear()  # the arrays' memory goes back before the bytes are written
    record = {"store": sid, "size": len(data), CHECKSUM: hashlib.new(CHECKSUM, data).hexdigest()}
    _atomic_write(file.with_name(file.name + SUM), json.dumps(record).encode())
    try:
        _atomic_write(file, data)
    except BaseException:  # no record of a shard that is not there
        file.with_name(file.name + SUM).unlink(missing_ok=True)
        raise
    remember(file)


def _atomic_write(file: Path, data: bytes) -> None:
    """Write `file` whole or not at all: a temporary file, flushed to disk, renamed over it;
    on any error (a full disk: OSError ENOSPC) the temporary file is removed, the old one kept."""
    fd, tmp = _create_temporary(file)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only say so here or at close
        os.replace(tmp, file)  # a reader never sees half a file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(file: Path) -> tuple[int, str]:
    """A new file beside `file` (a name `_STALE` knows), opened for writing. Not mkstemp: its
    0600 would block the others of a shared cache_dir; 0666 lets the umask (and a default ACL)
    decide, as for any file `open()` creates. O_EXCL: never an existing file or a symlink."""
    for _ in range(100):
        tmp = str(file.parent / f".{file.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(file))


def _claim(out: Path, manifest: dict, command: str) -> tuple[dict, bool]:
    """The manifest of the store in `out` (written now when there is none, or an old one without
    checksums: then True); refuses a folder holding another store. Holds the folder's lock, so it
    also removes the temporary files a killed builder left."""
    what, file = manifest["what"], out / MANIFEST
    refuse = f"; remove it or write to another folder ({command})"
    upgrade = False
    if file.is_file():
        old = read_manifest(out, command)
        if old["what"] != what:
            raise UserError(f"{out} holds a {old['what']}, not a {what}{refuse}")
        if old["fingerprint"] != manifest["fingerprint"] or old["videos"] != manifest["videos"]:
            differ = _describe_difference(old["fingerprint"], manifest["fingerprint"])
            if old["videos"] != manifest["videos"]:
                differ = "the video list" if differ == "unknown" else f"{differ}, the video list"
            raise UserError(f"{out} holds a {what} made for something else (differs in: "
                            f"{differ}){refuse}")
        size = old["shard_size"]
        if size != manifest["shard_size"]:
            print(f"{what} at {out}: finishing it with its own shard size {size} (the config's "
                  f"{manifest['shard_size']} applies to a new store)", flush=True)
            manifest = _layout(what, manifest["fingerprint"], manifest["videos"], size, command)
        if "checksum" in old:
            _remove_stale(out)
            return manifest, False
        upgrade = True
        print(f"{what} at {out} was written without checksums (by an older distinit): rebuilding "
              f"its {manifest['num_shards']} shards with them", flush=True)
    elif out.is_dir() and (found := len(list(out.glob("shard-*.safetensors")))):
        print(f"{what} at {out} has {found} shards but no {MANIFEST}: writing it; a shard is kept "
              "only if its checksum record shows it was made for these settings", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    try:
        _atomic_write(file, json.dumps(manifest, indent=1).encode())
    except OSError as e:
        raise UserError(f"cannot write {file}: {e.strerror or e}; nothing was changed: {_fix(e)} "
                        "and run the same command again") from None
    return manifest, upgrade


def _remove_stale(out: Path) -> None:
    for f in out.glob(".*"):
        if _STALE.fullmatch(f.name):
            f.unlink(missing_ok=True)


class Store:
    """Reads a store: `get(video, NAME, rows)` slices one array of one video lazily.

    `expect` (a fingerprint) refuses a store made from something else, naming what differs.
    With `verify` every shard is checked against its record now (hashed once per process and
    file version, on the node's local rank 0; the others trust it), so a damaged one is one line
    before the run, never different numbers. Shards are opened on first use in each process (safe
    in loader workers, which inherit the check).
    """

    def __init__(self, folder: str | Path, what: str, expect: dict | None = None,
                 command: str = "", verify: bool = True):
        self.folder = Path(folder)
        file = self.folder / MANIFEST
        self._again = f"run `{command}` again" if command else "build it again"
        hint = f"; build it with {command}" if command else ""
        if not file.is_file():
            found = len(list(self.folder.glob("shard-*.safetensors")))
            if found:
                raise UserError(f"the {what} at {self.folder} has {found} shards but no "
                                f"{MANIFEST} (removed, or never copied), so which shard holds "
                                f"which video is unknown; {self._again} to rebuild it (shards "
                                "whose checksum records match are kept)")
            raise UserError(f"no {what} at {self.folder} (no {MANIFEST}){hint}")
        self.manifest = read_manifest(self.folder, command)  # before any shard is trusted
        if self.manifest["what"] != what:
            raise UserError(f"{self.folder} holds a {self.manifest['what']}, not a {what}")
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
        if verify and dist.local_rank() == 0:  # once per node: its page cache, its disk
            verify_once(self.folder, self.manifest, self._again)
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
            try:
                f = safe_open(str(self.folder / shard_name(i)), framework="numpy")
            except (SafetensorError, OSError) as e:  # only an unverified store gets here
                raise UserError(f"the {self.manifest['what']} at {self.folder}: {shard_name(i)} "
                                f"cannot be read ({e}); {self._again} to rebuild it") from None
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
