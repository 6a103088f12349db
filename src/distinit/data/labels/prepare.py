"""`distinit prepare {hmdb51,ucf101,kinetics} SRC OUT`: from the files as downloaded to a folder
the labeled formats read, with a manifest of what it holds.

OUT gets `videos/` (every video a split file lists, under the name the split file gives it),
`splits/` (the official split files, byte for byte), `labels.txt` (the class list, in label
order), `lists/<subset>_split<N>.txt` (the decodable videos of each subset, one path a line:
what `data.videos` reads, e.g. Kinetics' or UCF-101's training videos as an unlabeled corpus) and
`manifest.json`: per split, subset and class the counts, every missing or
undecodable video with its reason, durations, and the fingerprint of the video list
(`distinit.data.corpus.record.fingerprint`) that every run records in its results.json.

Videos unpacked from an archive are moved into place; videos found loose (an unpacked copy, a
Kinetics download) are linked (`--link`), or re-encoded under the same name with
`--short-side`/`--gop`. Each video is checked as `check-videos` checks it (probe, first and
last frame). Work lives in `OUT/.prepare` (unpacked archives, each video's check keyed by its
size and mtime), so an interrupted run continues where it stopped and a second run over a
finished OUT only checks, from that record, that nothing changed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from distinit.arguments import Parser
from distinit.data.corpus.record import fingerprint
from distinit.data.labels import layouts
from distinit.data.labels.splits import dataset_classes
from distinit.data.video.check import inspect_video
from distinit.data.video.io import VideoDecodeError
from distinit.data.video.reencode import check_containers, reencode_video
from distinit.errors import UserError, first_line

MANIFEST, LABELS, STATE, LISTS = "manifest.json", "labels.txt", ".prepare", "lists"
LINKS = ("symlink", "hardlink", "copy")


def inspect(path: Path, backend: str = "pyav") -> tuple[str | None, float | None]:
    """(why `path` fails to decode or None, its duration in seconds or None): `check-videos`'
    check, whose probe also gives the duration."""
    reason, info = inspect_video(path, backend)
    if reason is not None or info is None:
        return reason, None
    return None, round(info.num_frames / info.fps, 3) if info.fps else None


def _place(src: Path, dst: Path, link: str, state: Path) -> None:
    """Put `src` at `dst`: moved if we unpacked it, else linked or copied as asked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    tmp.unlink(missing_ok=True)
    if state in src.parents:
        os.replace(src, dst)
        return
    if link == "symlink":
        tmp.symlink_to(src.resolve())
    elif link == "hardlink":
        os.link(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _reencode(src: Path, dst: Path, state: Path, options: dict) -> str | None:
    """Run in a worker: re-encode, then drop the unpacked source; the failure's reason or None."""
    try:
        reencode_video(src, dst, **options)
    except VideoDecodeError as e:
        return e.reason
    except Exception as e:  # an encoder failure is this video's problem, not the run's
        return first_line(e)
    if state in src.parents:
        src.unlink()
    return None


def _pool_map(fn, jobs: dict[str, tuple], workers: int, desc: str) -> dict[str, object]:
    results: dict[str, object] = {}
    progress = tqdm(total=len(jobs), desc=desc, unit="video", disable=None)
    if workers <= 1:
        for key, args in jobs.items():
            results[key] = fn(*args)
            progress.update()
        progress.close()
        return results
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {key: pool.submit(fn, *args) for key, args in jobs.items()}
            for key, future in futures.items():
                results[key] = future.result()
                progress.update()
    except BrokenProcessPool:
        raise UserError(f"a worker process crashed while {desc} (a decoder bug on some video?); "
                        "run the same command again: finished work is kept") from None
    progress.close()
    return results


def _checks(videos: dict[str, Path], state: Path, workers: int, backend: str,
            recheck: bool) -> dict[str, tuple[str | None, float | None]]:
    """Each video's (reason, seconds), from the record of an earlier run where its size and
    mtime are unchanged; the record is saved before anything else can fail."""
    record_file = state / "checked.json"
    record = {} if recheck or not record_file.is_file() else json.loads(record_file.read_text())
    stamps = {rel: [(st := path.stat()).st_size, st.st_mtime_ns] for rel, path in videos.items()}
    todo = {rel: (videos[rel], backend) for rel in videos
            if rel not in record or record[rel][:2] != stamps[rel]}
    for rel, (reason, seconds) in _pool_map(inspect, todo, workers, "checking").items():
        record[rel] = [*stamps[rel], reason, seconds]
    record = {rel: record[rel] for rel in videos}
    _write_json(record_file, record)
    return {rel: (entry[2], entry[3]) for rel, entry in record.items()}


def _write_lists(out: Path, listing: layouts.Listing, problems: dict[str, str]) -> None:
    """OUT/lists/<subset>_split<N>.txt: each subset's decodable videos, relative to the list
    (`list_videos` reads them: data.videos=OUT/lists/train_split1.txt)."""
    lists: dict[str, list[str]] = {}
    for rel, uses in listing.listed.items():
        if rel not in problems:
            for number, subset in uses:
                lists.setdefault(f"{subset}_split{number}.txt", []).append(f"../videos/{rel}")
    (out / LISTS).mkdir(exist_ok=True)
    for name, rels in lists.items():
        tmp = out / LISTS / f".{name}.tmp"
        tmp.write_text("".join(f"{rel}\n" for rel in sorted(rels)))
        os.replace(tmp, out / LISTS / name)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _subset_summary(rels: list[str], listing: layouts.Listing, problems: dict[str, str],
                    seconds: dict[str, float]) -> dict:
    ok = [r for r in rels if r not in problems]
    return {"listed": len(rels), "videos": len(ok),
            "missing": sum(problems.get(r, "").startswith("missing") for r in rels),
            "undecodable": sum(r in problems and not problems[r].startswith("missing")
                               for r in rels),
            "seconds": round(sum(seconds.get(r) or 0 for r in ok), 1),
            "per_class": dict(sorted(Counter(listing.label[r] for r in ok).items()))}


def manifest(dataset: str, listing: layouts.Listing, out: Path, problems: dict[str, str],
             seconds: dict[str, float], classes: list[str], options: dict) -> dict:
    ok = sorted(r for r in listing.listed if r not in problems)
    by_subset: dict[tuple[int, str], list[str]] = {}
    for rel, uses in listing.listed.items():
        for use in uses:
            by_subset.setdefault(use, []).append(rel)
    splits: dict[str, dict] = {}
    for (number, subset), rels in sorted(by_subset.items()):
        splits.setdefault(str(number), {})[subset] = _subset_summary(rels, listing, problems,
                                                                     seconds)
    data = {"format": listing.format, "video_root": "videos", "split_dir": "splits"}
    if listing.name_template:
        data["name_template"] = listing.name_template
    return {
        "created_by": "distinit prepare", "schema": 1, "dataset": dataset,
        "source": listing.source, "options": options, "data": data,
        "classes": len(classes), "listed": len(listing.listed), "videos": len(ok),
        "missing": sum(reason.startswith("missing") for reason in problems.values()),
        "undecodable": sum(not reason.startswith("missing") for reason in problems.values()),
        "fingerprint": fingerprint([out / "videos" / r for r in ok], out / "videos"),
        "seconds": round(sum(seconds.get(r) or 0 for r in ok), 1),
        "splits": splits, "problems": dict(sorted(problems.items())),
        "durations": {r: seconds.get(r) for r in ok},
    }


def prepare(dataset: str, src: Path, out: Path, *, videos: Path | None = None,
            name_template: str = layouts.KINETICS_TEMPLATE, short_side: int | None = None,
            gop: int = 16, link: str = "symlink", workers: int = 1, backend: str = "pyav",
            recheck: bool = False) -> dict:
    """Prepare `dataset` from `src` into `out`; returns the manifest (also OUT/manifest.json)."""
    if not src.is_dir():
        raise UserError(f"{src} is not a folder; pass the folder the dataset was downloaded to")
    for inner, outer in ((out, src), (src, out)):
        if inner.resolve() == outer.resolve() or outer.resolve() in inner.resolve().parents:
            raise UserError(f"{out} and {src} overlap; write the prepared dataset outside the "
                            "downloaded files")
    state = out / STATE
    state.mkdir(parents=True, exist_ok=True)
    stage = layouts.Stage(state)
    listing = (layouts.kinetics(src, stage, videos, name_template) if dataset == "kinetics"
               else layouts.LAYOUTS[dataset](src, stage))
    (out / "splits").mkdir(exist_ok=True)
    for file in listing.split_files:
        shutil.copyfile(file, out / "splits" / file.name)
    classes = dataset_classes(listing.format, out / "splits").names

    root = out / "videos"
    present = {rel: root / rel for rel in listing.listed if (root / rel).exists()}
    todo = {rel: listing.found[rel] for rel in listing.listed
            if rel not in present and rel in listing.found}
    problems = {rel: f"missing: not in {listing.source}" for rel in listing.listed
                if rel not in present and rel not in listing.found}
    if short_side is not None and todo:
        check_containers({Path(rel).suffix.lower() for rel in todo}, "libx264")
        options = dict(gop=gop, codec="libx264", short_side=short_side)
        jobs = {rel: (path, root / rel, state, options) for rel, path in todo.items()}
        failed = _pool_map(_reencode, jobs, workers, "re-encoding")
        problems.update({rel: reason for rel, reason in failed.items() if reason})
    else:
        for rel, path in tqdm(todo.items(), desc="placing", unit="video", disable=None):
            _place(path, root / rel, link, state)
    placed = {rel: root / rel for rel in listing.listed if rel not in problems}
    checks = _checks(placed, state, workers, backend, recheck)
    problems.update({rel: reason for rel, (reason, _) in checks.items() if reason})
    seconds = {rel: secs for rel, (_, secs) in checks.items() if secs is not None}
    options = {"short_side": short_side, "gop": gop if short_side else None, "link": link}
    result = manifest(dataset, listing, out, problems, seconds, classes, options)
    missing = sorted(r for r, why in problems.items() if why.startswith("missing"))
    if missing and dataset != "kinetics":  # the official archives hold every listed video
        raise UserError(f"{len(missing)} videos the split files list are not in "
                        f"{listing.source} (first: {missing[0]}); the archive is incomplete or "
                        "not the official one: download it again, then run the same command")
    (out / LABELS).write_text("".join(f"{name}\n" for name in classes))
    _write_lists(out, listing, problems)
    _write_json(out / MANIFEST, result)
    return result


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit prepare", description=(
        "Unpack, check and (optionally) re-encode a dataset as downloaded into OUT: videos/ "
        "under the split files' names, splits/, labels.txt and manifest.json. Resumable; a "
        "second run only checks. Exits 1 if any video is undecodable."))
    parser.add_argument("dataset", choices=sorted(layouts.LAYOUTS))
    parser.add_argument("src", help="the folder holding the downloaded archives or files")
    parser.add_argument("out", help="the prepared dataset's folder")
    parser.add_argument("--videos", help="kinetics: the folder of clips (default SRC)")
    parser.add_argument("--name-template", default=layouts.KINETICS_TEMPLATE,
                        help="kinetics: a clip's file name from its CSV row")
    parser.add_argument("--short-side", type=int, choices=(128, 256),
                        help="re-encode every video to this short side (H.264, same names)")
    parser.add_argument("--gop", type=int, default=16, help="with --short-side: keyframe interval")
    parser.add_argument("--link", choices=LINKS, default="symlink",
                        help="how loose videos enter OUT/videos (unpacked ones are moved)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--recheck", action="store_true",
                        help="decode every video again, not only new or changed ones")
    args = parser.parse_args(argv)
    if args.gop < 1 or args.workers < 1:
        raise UserError("--gop and --workers must be >= 1")
    out = Path(args.out)
    result = prepare(args.dataset, Path(args.src), out,
                     videos=Path(args.videos) if args.videos else None,
                     name_template=args.name_template, short_side=args.short_side, gop=args.gop,
                     link=args.link, workers=args.workers, recheck=args.recheck)
    for rel, reason in result["problems"].items():
        print(f"{'MISSING' if reason.startswith('missing') else 'BAD'} {rel}: {reason}")
    print(f"{result['videos']} of {result['listed']} listed videos ready in {out / 'videos'} "
          f"({result['missing']} missing, {result['undecodable']} undecodable; "
          f"{result['seconds'] / 3600:.1f} h), {result['classes']} classes; "
          f"fingerprint {result['fingerprint'][:19]}")
    data = result["data"]
    extra = f" data.name_template='{data['name_template']}'" if "name_template" in data else ""
    print(f"read it with: data.format={data['format']} data.video_root={out / 'videos'} "
          f"data.split_dir={out / 'splits'}{extra}")
    return 1 if result["undecodable"] else 0
