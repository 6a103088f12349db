"""What checking a store costs (a script, not a test): writes a store of random bytes through the
real writer (`distinit.data.stores.shards.build`, each shard with its sha256 record) into a temporary
folder, then measures on the same files, one thread each:

- read: plain reads of every byte, from the page cache (warm) and from disk (cold: each file's
  pages dropped first with posix_fadvise DONTNEED), the baseline any check pays;
- md5, sha1, sha256, blake2b over the same bytes (warm): why the store records sha256;
- the check a run does (`check_store.check_shards`, its threads over shards), warm and cold.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/verify_store.py --gib 2.5

The folder is removed afterwards. Check `df -h` of --dir first: it needs --gib free.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from distinit.data.stores import check as check_store
from distinit.data.stores import shards
from distinit.tools.measure import cpu_model

MIB = 2**20


def drop_cache(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(files: list[Path], chunk: int = 1 << 23) -> None:
    buf = bytearray(chunk)
    for f in files:
        with open(f, "rb", buffering=0) as h:
            while h.readinto(buf):
                pass


def hash_all(files: list[Path], name: str, chunk: int = 1 << 23) -> None:
    buf = bytearray(chunk)
    view = memoryview(buf)
    for f in files:
        h = hashlib.new(name)
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])


def timed(fn, size: int, repeat: int = 2) -> float:
    """Best MB/s of `repeat` runs of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return size / MIB / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.5, help="size of the store")
    parser.add_argument("--shard-mib", type=int, default=256, help="size of one shard")
    parser.add_argument("--dir", default=None, help="where to write it (default: $TMPDIR)")
    ns = parser.parse_args()
    per_video = 64 * MIB
    videos = max(1, int(ns.gib * 2**30 // per_video))
    shard_size = max(1, ns.shard_mib * MIB // per_video)
    root = Path(tempfile.mkdtemp(prefix="verify_store-", dir=ns.dir))
    try:
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        folder = shards.build(root / "store", "benchmark store", {"random": 0},
                              [f"video{i}" for i in range(videos)], shard_size,
                              lambda v: {"x": rng.integers(0, 256, per_video, dtype=np.uint8)},
                              "benchmarks/verify_store.py")
        wrote = time.perf_counter() - t
        files = sorted(folder.glob("shard-*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        manifest = check_store.json.loads((folder / check_store.MANIFEST).read_text())
        sid, n = check_store.store_id(manifest), manifest["num_shards"]
        threads = min(8, len(os.sched_getaffinity(0)), n)
        print(f"cpu: {cpu_model()}; {len(os.sched_getaffinity(0))} cores usable")
        print(f"store: {n} shards, {size / 2**30:.2f} GiB in {folder.parent} (written at "
              f"{size / MIB / wrote:.0f} MB/s, random bytes drawn and sha256 included)")
        drop_cache(files)
        print(f"read, cold (disk), 1 thread:  {timed(lambda: (drop_cache(files), read_all(files)), size, 1):7.0f} MB/s")
        read_all(files)
        print(f"read, warm (page cache), 1 thread: {timed(lambda: read_all(files), size):7.0f} MB/s")
        for name in ("md5", "sha1", "sha256", "blake2b"):
            mbs = timed(lambda name=name: hash_all(files, name), size)
            print(f"{name:>7}, warm, 1 thread: {mbs:7.0f} MB/s per core")
        check = lambda: check_store.check_shards(folder, sid, range(n))  # noqa: E731
        assert check() == {}
        print(f"store check (sha256), warm, {threads} threads: {timed(check, size):7.0f} MB/s "
              f"({size / MIB / timed(check, size, 1):.1f} s for this store)")
        cold = timed(lambda: (drop_cache(files), check()), size, 1)
        print(f"store check (sha256), cold, {threads} threads: {cold:7.0f} MB/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
