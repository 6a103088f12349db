"""Which videos a run saw: a fingerprint of a video list, and the record every run keeps of it in
its results.json under "corpus" (docs/RUNS.md).

The fingerprint is "sha256:" + the hex digest of the sorted lines
`f"{relative_posix_path}\\t{size_in_bytes}\\n"`, one per video: its path relative to `root` when
given and under it (else as given) and its size (a frame folder's: the sum of its files').
`distinit prepare` writes the same fingerprint of a prepared folder's videos into its
`manifest.json`. One stat per video: cheap beside reading them. Two runs whose fingerprints
differ read different videos (or different copies of them): their numbers are not comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

MANIFEST = "manifest.json"
CREATED_BY = "distinit prepare"  # what a manifest.json of `distinit prepare` says it is
SHORT = 12  # hex digits of a fingerprint in tables and messages


def _size(path: Path) -> int:
    """A file's size; a frame folder's: the sum of its files' sizes. Raises OSError."""
    if path.is_dir():
        with os.scandir(path) as entries:
            return sum(e.stat().st_size for e in entries if e.is_file())
    return path.stat().st_size


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def _digest(videos: Iterable[str | Path], root: str | Path | None) -> tuple[str, int, int]:
    """(fingerprint, videos in it, videos that could not be read and are left out)."""
    root = Path(root) if root else None
    lines, unreadable = [], 0
    for v in videos:
        path = Path(v)
        try:
            size = _size(path)
        except OSError:
            unreadable += 1
            continue
        lines.append(f"{_relative(path, root)}\t{size}\n")
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest(), len(lines), unreadable


def fingerprint(videos: Sequence[str | Path], root: str | Path | None = None) -> str:
    """The fingerprint of a video list (the module docstring); a video that cannot be read is
    left out."""
    return _digest(videos, root)[0]


def _read_manifest(path: Path) -> dict | None:
    """A manifest of `distinit prepare`, or None: another tool's manifest.json is not ours, and
    one that does not parse is ignored with a note."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"note: {path} is not readable JSON ({e}); it is not recorded as the corpus's "
              "manifest", flush=True)
        return None
    return data if isinstance(data, dict) and data.get("created_by") == CREATED_BY else None


def find_manifest(*folders: str | Path | None) -> Path | None:
    """The manifest.json `distinit prepare` wrote beside `labels.txt`, `videos/`, `splits/`:
    looked for in each given folder (a file stands for its folder) and in its parent."""
    seen = set()
    for folder in folders:
        if not folder:
            continue
        folder = Path(folder)
        if folder.is_file():
            folder = folder.parent
        for candidate in (folder / MANIFEST, folder.parent / MANIFEST):
            if candidate in seen or not candidate.is_file():
                continue
            seen.add(candidate)
            if _read_manifest(candidate) is not None:
                return candidate
    return None


def corpus_record(videos: Sequence[str | Path], root: str | Path | None,
                  missing: Sequence[str | Path] = (),
                  manifest_dirs: Sequence[str | Path | None] = ()) -> dict:
    """What results.json keeps of the videos a run read: their number, their fingerprint, how
    many the dataset lists that are not on disk (`missing`, and any that cannot be read), and the
    manifest of the prepared folder they come from, if any (found from `manifest_dirs`)."""
    digest, n, unreadable = _digest(videos, root)
    path = find_manifest(*manifest_dirs)
    manifest = None
    if path is not None:
        data = _read_manifest(path) or {}
        manifest = {"path": str(path), **{k: data.get(k) for k in
                                          ("fingerprint", "videos", "missing", "dataset")}}
    return {"videos": n, "fingerprint": digest, "missing": len(missing) + unreadable,
            "manifest": manifest}


# ---- what a run records, from its data config ------------------------------------------------

def labeled_corpus(dc, train=None, test=None) -> dict:
    """{"train": ..., "test": ...} of a labeled dataset's subsets (`LabeledSplit`s; either may be
    None), paths relative to data.video_root."""
    root = dc.video_root or None
    found = find_manifest(dc.video_root, dc.split_dir)
    dirs = (found.parent,) if found is not None else ()
    return {name: corpus_record(s.videos, root, getattr(s, "missing", ()), dirs)
            for name, s in (("train", train), ("test", test)) if s is not None}


def unlabeled_corpus(dc, videos: Sequence[str | Path]) -> dict:
    """The record of an unlabeled corpus (data.videos: a folder, or a list file whose paths are
    relative to its folder)."""
    root = Path(dc.videos) if dc.videos else None
    if root is not None and not root.is_dir():
        root = root.parent
    return corpus_record(videos, root, (), (dc.videos,) if dc.videos else ())


# ---- comparing runs -------------------------------------------------------------------------

def parts(corpus: dict | None) -> dict[str, dict]:
    """A results.json "corpus" as {part: record}: a single record (pretraining) is part "", a
    fine-tune's {"train": ..., "test": ...} (with "pretrain" where an experiment adds it) its
    parts."""
    if not isinstance(corpus, dict):
        return {}
    if "fingerprint" in corpus:
        return {"": corpus}
    return {k: v for k, v in corpus.items() if isinstance(v, dict) and "fingerprint" in v}


def short(record: dict) -> str:
    """`1a2b3c4d5e6f 120 (3)`: the fingerprint's first hex digits, `videos (missing)`."""
    fp = str(record.get("fingerprint", "")).removeprefix("sha256:")[:SHORT]
    return f"{fp} {record.get('videos', '?')} ({record.get('missing', 0)})"


def describe(corpus: dict | None) -> str:
    """One line of what a results.json's corpus was, e.g. `train 1a2b3c4d5e6f 40 (0), test ...`;
    "" when it has none (a run from before the record)."""
    return ", ".join(f"{name} {short(r)}".strip() for name, r in parts(corpus).items())


def comparability(named: dict[str, dict | None], what: str = "runs",
                  skip: Sequence[str] = ()) -> str | None:
    """One warning line when two runs (`name -> corpus`) read different videos in a part both
    recorded (train, test, ...; parts in `skip` aside), else None. Runs without a record (an older
    results.json) are not compared."""
    seen: dict[tuple[str, str], str] = {}  # (part, fingerprint) -> the first run with it
    first: dict[str, str] = {}  # part -> the first run that has it
    for name, corpus in named.items():
        for part, record in parts(corpus).items():
            if part in skip:
                continue
            fp = str(record.get("fingerprint"))
            seen.setdefault((part, fp), name)
            other = first.setdefault(part, name)
            if seen[(part, fp)] == name and other != name:
                label = f"{part} " if part else ""
                return (f"warning: {what} {other!r} and {name!r} read different {label}videos "
                        f"({short(parts(named[other])[part])} vs {short(record)}: fingerprint, "
                        "videos (missing)); their numbers are not comparable")
    return None
