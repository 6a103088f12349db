"""Fingerprint every run under a folder: a digest of each checkpoint's tensors and each
results.json / summary.json / table1.json (wall-time fields aside), keyed by path relative to the
folder. `python scripts/runs_fingerprint.py A [B [A_WAS]]` prints A's fingerprint, or compares A with B
(bitwise: the "no run changes" check of a refactor); A_WAS: where A was written, if it was moved
so that B could be written at the same path (run folder keys and crop seeds include paths).

What is compared is what a run *is*: the weights and results it ends with. Timing fields
(`seconds`, `*_s`, `times`), the folder's own path, and the digests that name a store's
folder (of its videos' paths and times) are left out; stores compare by their tensors."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import safetensors.torch
import torch

TIMING = ("seconds", "times", "elapsed", "wall", "samples_per_s", "clips_per_s")
JSONS = ("results.json", "summary.json", "table1.json", "chain.json")
# A store's folder is named by a digest of its videos' paths and times: not what it holds.
STORE_KEY = re.compile(r"/[0-9a-f]{12}/")


def _digest_tensors(obj, h) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(str((obj.dtype, tuple(obj.shape))).encode())
        h.update(obj.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                 if obj.numel() else b"")
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if k in ("config", "rng", "time", "optimizer", "scheduler"):
                continue  # config paths differ between folders; optimizer state follows weights
            h.update(str(k).encode())
            _digest_tensors(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _digest_tensors(x, h)


def _clean(tree, root: str):
    if isinstance(tree, dict):
        return {k: _clean(v, root) for k, v in tree.items()
                if not any(t in str(k) for t in TIMING) and not str(k).endswith("_s")}
    if isinstance(tree, list):
        return [_clean(v, root) for v in tree]
    if isinstance(tree, str):
        return tree.replace(root, "ROOT")
    return tree


def fingerprint(root: Path, made_at: str = "") -> dict[str, str]:
    """`made_at`: where the tree was written, if it has been moved since (paths in its JSON)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = STORE_KEY.sub("/#/", "/" + str(p.relative_to(root)))[1:]
        if p.suffix == ".pt" and p.is_file():
            h = hashlib.sha1()
            _digest_tensors(torch.load(p, map_location="cpu", weights_only=True), h)
            out[rel] = h.hexdigest()[:16]
        elif p.name in JSONS or p.suffix == ".safetensors":
            if p.suffix == ".safetensors":  # the tensors; the header names local paths
                h = hashlib.sha1()
                _digest_tensors(safetensors.torch.load_file(p), h)
                out[rel] = h.hexdigest()[:16]
            else:
                tree = _clean(json.loads(p.read_text()), made_at or str(root.resolve()))
                out[rel] = hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]
    return out


def _gained(old, new, prefix: str = "") -> list[str] | None:
    """The keys `new` adds to `old` when it keeps all of `old` unchanged, else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        if not set(old) <= set(new):
            return None
        out = [f"{prefix}{k}" for k in new if k not in old]
        for k in old:
            sub = _gained(old[k], new[k], f"{prefix}{k}.")
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for x, y in zip(old, new, strict=True):
            sub = _gained(x, y, prefix)
            if sub is None:
                return None
            out += sub
        return out
    return [] if json.dumps(old) == json.dumps(new) else None  # NaN == NaN as written


def main(argv: list[str]) -> int:
    a = fingerprint(Path(argv[0]), argv[2] if len(argv) > 2 else "")
    if len(argv) == 1:
        print(json.dumps(a, indent=1))
        return 0
    b = fingerprint(Path(argv[1]))
    same = [k for k in a if b.get(k) == a[k]]
    differ = [k for k in a if k in b and b[k] != a[k]]
    # JSON results that only gain keys (a new measurement) keep every number they had.
    added = {}
    for k in [k for k in differ if k.endswith(".json")]:
        old = _clean(json.loads((Path(argv[0]) / k).read_text()),
                     argv[2] if len(argv) > 2 else str(Path(argv[0]).resolve()))
        new = _clean(json.loads((Path(argv[1]) / k).read_text()), str(Path(argv[1]).resolve()))
        gained = _gained(old, new)
        if gained is not None:
            added[k] = gained
            differ.remove(k)
    if added:
        keys = sorted({g for v in added.values() for g in v})
        print(f"{len(added)} JSON files keep every value and only gain keys: {', '.join(keys)}")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    print(f"{len(same)} files bitwise identical, {len(differ)} differ, {len(only_a)} only in "
          f"{argv[0]}, {len(only_b)} only in {argv[1]}")
    for k in differ:
        print("  differs:", k)
    for k in only_a:
        print("  only in A:", k)
    for k in only_b:
        print("  only in B:", k)
    return 0 if not (differ or only_a or only_b) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
