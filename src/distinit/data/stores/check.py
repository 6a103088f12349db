"""`distinit check-store DIR [DIR ...]`: check every shard of a store (`distinit.data.stores.shards`: a
teacher-target cache, a clip store, or a `data.cache_dir` holding several) against the checksum
its writer recorded; one line per store, exit 0 when every store is whole, 1 otherwise.

Also the checks `shards` runs. Next to each shard its writer puts its record
`shard-NNNNN.safetensors.sum`, {"store": `store_id`, "size": bytes, "sha256": hex}, written
atomically before the shard itself: each rank of a torchrun build records the shards it writes,
with no step gathering them, and a shard without a matching record is never trusted (kept as
sidecars rather than in manifest.json, which rank 0 alone writes, before any shard). A reader
hashes each shard once per process and file version (`verify_once`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distinit.arguments import Parser
from distinit.engine import lock
from distinit.errors import UserError

MANIFEST = "manifest.json"
SUM = ".sum"  # the suffix of a shard's checksum record
CHECKSUM = "sha256"  # benchmarks/verify_store.py: as fast as sha1 with SHA-NI, 2x blake2b
# what to run when a store's own manifest cannot say which command built it
AGAIN = "run the command that built it (distinit store-clips or cache-targets) again"
_verified: dict[str, tuple] = {}  # shard path -> its version when this process checked it
_warned: set[str] = set()  # stores without checksums this process warned about


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def store_id(manifest: dict) -> str:
    """The id a shard's record names: the store's kind, fingerprint, videos and shard size, so a
    shard made for one store (another shard size, say) is never read as another's."""
    key = {k: manifest.get(k) for k in ("what", "fingerprint", "videos", "shard_size")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(folder: Path, command: str = "") -> dict:
    """The manifest of the store in `folder`, checked as a schema before any shard is trusted:
    a field of the wrong type, or a `num_shards` other than the count its videos and shard size
    make, would make a reader or checker skip shards (a damaged one included) or fail in a
    traceback. A bad one is a `UserError` naming the file, the field and the command that
    rebuilds the store (`command`, else the one the manifest names); a missing file is the
    `FileNotFoundError` itself (callers say what that means for them)."""
    file = folder / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        raise
    except OSError as e:  # unreadable is not damaged: removing it would lose nothing wrong
        raise UserError(f"cannot read {file}: {e.strerror or e}; make it readable") from None
    except ValueError:  # UnicodeDecodeError included
        raise _damaged(file, "not JSON", command, None) from None
    problem = _schema_problem(manifest)
    if problem:
        raise _damaged(file, problem, command, manifest)
    return manifest


def _schema_problem(m: object) -> str:
    """What is wrong with a parsed manifest ('' when nothing)."""
    def integer(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not isinstance(m, dict):
        kind = {"str": "string", "int": "number", "float": "number", "bool": "boolean",
                "NoneType": "null"}.get(type(m).__name__, type(m).__name__)
        return f"a JSON {kind}, not an object"
    missing = [k for k in ("what", "fingerprint", "videos", "shard_size", "num_shards")
               if k not in m]
    if missing:
        return f"no {missing[0]}"
    if not isinstance(m["what"], str):
        return f"what is {m['what']!r}, not a name"
    if not isinstance(m["fingerprint"], dict):
        return f"fingerprint is {m['fingerprint']!r}, not an object"
    if not isinstance(m["videos"], list) or not all(isinstance(v, str) for v in m["videos"]):
        return "videos is not a list of paths"
    if not m["videos"]:
        return "videos is empty"
    if not integer(m["shard_size"]) or m["shard_size"] < 1:
        return f"shard_size is {m['shard_size']!r}, not a positive integer"
    n, made = m["num_shards"], -(-len(m["videos"]) // m["shard_size"])
    if not integer(n) or n != made:
        return (f"num_shards is {n!r}, but its {len(m['videos'])} videos in shards of "
                f"{m['shard_size']} make {made}")
    if "checksum" in m and m["checksum"] != CHECKSUM:
        return f"checksum is {m['checksum']!r}, not {CHECKSUM!r}"
    if not isinstance(m.get("command", ""), str):
        return f"command is {m['command']!r}, not a command"
    return ""


def _damaged(file: Path, problem: str, command: str, manifest: object) -> UserError:
    if not command and isinstance(manifest, dict) and isinstance(manifest.get("command"), str):
        command = manifest["command"]
    again = f"run `{command}` again" if command else AGAIN
    return UserError(f"{file} is damaged ({problem}): remove it and {again} to rebuild the "
                     "store (shards whose checksum records match are kept)")


def file_checksum(path: str | Path, algorithm: str = CHECKSUM, chunk: int = 1 << 23) -> str:
    """The hex digest of a file's bytes, read in chunks into one buffer."""
    h = hashlib.new(algorithm)
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # hashlib releases the GIL: shards hash in parallel threads
    return h.hexdigest()


def read_record(folder: Path, i: int) -> dict | None:
    try:
        record = json.loads((folder / (shard_name(i) + SUM)).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def shard_problem(folder: Path, i: int, sid: str, deep: bool = True) -> str:
    """What is wrong with shard i of the store `sid` in `folder` ('' when nothing): `deep`
    hashes it, else only its record and size are looked at."""
    file = folder / shard_name(i)
    try:
        size = file.stat().st_size
    except OSError:
        return "is missing"
    record = read_record(folder, i)
    if record is None:
        return "has no checksum record (its build did not finish)"
    if record.get("store") != sid:
        return "was made for another store (other settings, videos or shard size)"
    if size != record.get("size"):
        return f"is truncated or garbled ({size} bytes, {record.get('size')} when written)"
    if deep and file_checksum(file) != record.get(CHECKSUM):
        return "is damaged (its checksum differs from the one recorded when it was written)"
    return ""


def check_shards(folder: str | Path, sid: str, indices: Iterable[int],
                 deep: bool = True) -> dict[int, str]:
    """{shard: what is wrong} over `indices`; `deep` hashes them, in parallel threads."""
    folder, indices = Path(folder), list(indices)
    threads = min(8, len(os.sched_getaffinity(0)), len(indices)) if deep else 1
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        found = pool.map(lambda i: shard_problem(folder, i, sid, deep), indices)
        return {i: p for i, p in zip(indices, found, strict=True) if p}


def written(folder: Path, manifest: dict) -> int:
    """How many of the store's shards are on disk with their record (none is hashed)."""
    return manifest["num_shards"] - len(check_shards(folder, store_id(manifest),
                                                     range(manifest["num_shards"]), deep=False))


def complete(folder: str | Path) -> bool:
    """Whether `folder` holds a finished store: a manifest and every shard it lists, each with
    its checksum record (none is hashed)."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except (OSError, UserError):
        return False
    if "checksum" not in manifest:  # written before the records: the files only
        return all((folder / shard_name(i)).is_file() for i in range(manifest["num_shards"]))
    return written(folder, manifest) == manifest["num_shards"]


def _stat(path: Path) -> tuple:  # a file's version: rewriting or copying it changes it
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def remember(path: Path) -> None:
    """`path` was verified (or written) by this process, as it is now."""
    _verified[str(path.resolve())] = _stat(path)


def verify_once(folder: Path, manifest: dict, again: str) -> None:
    """Check every shard of the store in `folder`: hashed once per process and file version;
    a problem is one line saying what to run (`again`). A store written before the records
    existed gets one warning per process instead."""
    what, n = manifest["what"], manifest["num_shards"]
    if "checksum" not in manifest:
        if str(folder.resolve()) not in _warned:
            _warned.add(str(folder.resolve()))
            print(f"warning: the {what} at {folder} has no checksums (written by an older "
                  f"distinit), so its shards are read unverified; {again} to rebuild it with "
                  "them", file=sys.stderr, flush=True)
        return
    sid = store_id(manifest)
    bad = check_shards(folder, sid, range(n), deep=False)
    paths = {i: folder / shard_name(i) for i in range(n) if i not in bad}
    todo = [i for i, p in paths.items() if _verified.get(str(p.resolve())) != _stat(p)]
    bad.update(check_shards(folder, sid, todo))
    if bad:
        first = min(bad)
        more = f" (and {len(bad) - 1} more shards)" if len(bad) > 1 else ""
        raise UserError(f"the {what} at {folder}: {shard_name(first)} {bad[first]}{more}; "
                        f"{again} to rebuild only {'those shards' if more else 'that shard'}")
    for i in todo:
        remember(paths[i])


def busy(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (`engine.lock`): a builder at work."""
    try:
        # never through a symlink, nor waiting on a FIFO (`engine.lock` refuses both)
        fd = os.open(folder / lock.LOCK_FILE,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing it also lets go of the shared lock


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_store(folder: Path) -> tuple[bool, str]:
    """(whether the store in `folder` is whole, a line saying so or what is wrong)."""
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        found = len(list(folder.glob("shard-*.safetensors")))
        return False, (f"damaged: {folder} has {found} shards but no {MANIFEST}; {AGAIN} to "
                       "rebuild it (shards whose records match are kept)")
    except UserError as e:
        return False, f"damaged: {e}"
    what, n = manifest["what"], manifest["num_shards"]
    again = f"run `{manifest['command']}` again" if manifest.get("command") else AGAIN
    if busy(folder):
        return False, (f"busy: the {what} at {folder} is being written by "
                       f"{lock.describe(lock.holder(folder))}; check it once that finishes")
    if "checksum" not in manifest:
        return False, (f"unverified: the {what} at {folder} has no checksums (written by an older "
                       f"distinit); {again} to rebuild it with them")
    bad = check_shards(folder, store_id(manifest), range(n))
    if bad:
        named = "; ".join(f"{shard_name(i)} {bad[i]}" for i in sorted(bad)[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        return False, (f"damaged: the {what} at {folder}: {len(bad)} of {n} shards bad: {named}"
                       f"{more}; {again} to rebuild only "
                       f"{'that shard' if len(bad) == 1 else 'those shards'}")
    size = sum((folder / shard_name(i)).stat().st_size for i in range(n))
    return True, (f"ok: the {what} at {folder}: {n} shards, {len(manifest.get('videos', []))} "
                  f"videos, {_size(size)}, every checksum matches")


def stores_in(folder: Path) -> list[Path]:
    """The store `folder` is, or the stores in its subfolders (a data.cache_dir)."""
    def is_store(p: Path) -> bool:
        return (p / MANIFEST).is_file() or any(p.glob("shard-*.safetensors"))

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a store (distill.target_cache, or a "
                        "folder of data.cache_dir) or data.cache_dir itself")
    if is_store(folder):
        return [folder]
    found = sorted(p for p in folder.iterdir() if p.is_dir() and is_store(p))
    if not found:
        raise UserError(f"no store in {folder}: neither it nor a subfolder holds a {MANIFEST} "
                        "or shards; give distill.target_cache, data.cache_dir or a folder in it")
    return found


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit check-store",
        description="Check every shard of a store against its recorded checksum.")
    parser.add_argument("folders", nargs="+", type=Path,
                        help="a store, or a data.cache_dir holding several")
    ns = parser.parse_args(argv)
    stores = [s for f in ns.folders for s in stores_in(f)]
    whole = True
    for store in stores:
        ok, line = check_store(store)
        whole &= ok
        print(line, flush=True)
    return 0 if whole else 1
