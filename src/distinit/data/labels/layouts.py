"""Where each dataset's videos and split files are in what its users download.

- HMDB-51: `hmdb51_org.rar` (a RAR of 51 per-class RARs, each `<class>/<video>.avi`) and
  `test_train_splits.rar` (`testTrainMulti_7030_splits/<class>_test_split<N>.txt`).
- UCF-101: `UCF101.rar` (`UCF-101/<Class>/v_*.avi`) and
  `UCF101TrainTestSplits-RecognitionTask.zip` (`ucfTrainTestlist/classInd.txt`,
  `trainlist0N.txt`, `testlist0N.txt`).
- Kinetics: the annotation CSVs (`label,youtube_id,time_start,time_end,split`), loose or in a
  tar.gz, and a folder of clips a downloader named `{youtube_id}_{start:06d}_{end:06d}.mp4`.

An archive is also accepted already unpacked (the folder it holds), and in any kind
`data.archives` reads (a mirror's `.zip` or `.tar.gz` of the same tree): its kind is read from
its bytes. Each layout returns a `Listing`: the split files to copy, every video a split file
names (its path relative to the prepared `videos/` folder) and where that video is now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distinit.data.labels.archives import archive_kind, extract
from distinit.data.labels.split_formats import (
    DEFAULT_NAME_TEMPLATE,
    check_name_template,
    clip_name,
    read_kinetics_csv,
)
from distinit.data.labels.split_lines import read_lines
from distinit.errors import UserError

KINETICS_TEMPLATE = DEFAULT_NAME_TEMPLATE
ARCHIVE_SUFFIXES = (".rar", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass
class Listing:
    format: str  # the data.format that reads the prepared folder
    split_files: list[Path]  # copied as they are into OUT/splits
    # videos/<relative path> -> (split, subset) pairs that list it
    listed: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    found: dict[str, Path] = field(default_factory=dict)  # relative path -> the file now
    label: dict[str, str] = field(default_factory=dict)  # relative path -> its class name
    source: str = ""  # what the videos were read from, for messages
    name_template: str = ""  # kinetics_csv only


class Stage:
    """Unpacks archives into OUT/.prepare/extracted once: a marker file says an archive is
    done, so an interrupted run unpacks only what it had not finished."""

    def __init__(self, state: Path):
        self.root = state / "extracted"

    def unpack(self, archive: Path, name: str) -> Path:
        dest, marker = self.root / name, self.root / f".{name}.done"
        if not marker.exists():
            dest.mkdir(parents=True, exist_ok=True)
            extract(archive, dest)
            marker.touch()
        return dest


def _find(src: Path, stem: str, folders: tuple[str, ...]) -> Path | None:
    """`src/<stem><archive suffix>` or an unpacked folder of one of `folders`' names."""
    for suffix in ARCHIVE_SUFFIXES:
        if (src / f"{stem}{suffix}").is_file():
            return src / f"{stem}{suffix}"
    for name in folders:
        if (src / name).is_dir():
            return src / name
    return None


def _open(src: Path, stem: str, folders: tuple[str, ...], stage: Stage, what: str) -> Path:
    found = _find(src, stem, folders)
    if found is None:
        raise UserError(f"{src} holds neither {stem}.rar (or .zip/.tar.gz) nor an unpacked "
                        f"{' or '.join(folders)}/ folder: {what}; pass the folder the dataset "
                        "was downloaded to")
    return found if found.is_dir() else stage.unpack(found, stem)


def _one_folder(root: Path, name: str) -> Path:
    """`root/name` if the archive held that folder, else `root` (a flat repack)."""
    return root / name if (root / name).is_dir() else root


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def hmdb51(src: Path, stage: Stage) -> Listing:
    splits = _one_folder(_open(src, "test_train_splits", ("testTrainMulti_7030_splits",), stage,
                               "the split files"), "testTrainMulti_7030_splits")
    files = sorted(splits.glob("*_test_split[0-9].txt"))
    if not files:
        raise UserError(f"{splits} holds no <class>_test_split<N>.txt files; "
                        "test_train_splits.rar is not the official one: download it again")
    outer = _open(src, "hmdb51_org", ("hmdb51_org",), stage, "the videos")
    outer = _one_folder(outer, "hmdb51_org")
    found: dict[str, Path] = {}
    for item in sorted(outer.iterdir()):
        if item.is_file() and archive_kind(item) is not None:  # one archive per class
            unpacked = stage.unpack(item, f"hmdb51_org-{item.name.split('.')[0]}")
            found.update({rel: p for rel, p in _files(unpacked).items() if "/" in rel})
        elif item.is_dir():  # a class folder unpacked already
            found.update({f"{item.name}/{rel}": p for rel, p in _files(item).items()})
    listing = Listing("hmdb51", files, found=found, source=str(outer))
    for file in files:
        name, _, number = file.name.removesuffix(".txt").rpartition("_test_split")
        for _, line in read_lines(file):
            video, _, use = line.partition(" ")
            if use.strip() in ("1", "2"):
                subset = "train" if use.strip() == "1" else "test"
                listing.listed.setdefault(f"{name}/{video}", set()).add((int(number), subset))
                listing.label[f"{name}/{video}"] = name
    return listing


def ucf101(src: Path, stage: Stage) -> Listing:
    splits = _one_folder(_open(src, "UCF101TrainTestSplits-RecognitionTask",
                               ("ucfTrainTestlist",), stage, "the split files"),
                         "ucfTrainTestlist")
    lists = sorted(splits.glob("t*list0[0-9].txt"))
    if not (splits / "classInd.txt").is_file() or not lists:
        raise UserError(f"{splits} lacks classInd.txt or trainlist0N.txt/testlist0N.txt; the "
                        "split archive is not the official one: download it again")
    videos = _one_folder(_open(src, "UCF101", ("UCF-101",), stage, "the videos"), "UCF-101")
    listing = Listing("ucf101", [splits / "classInd.txt", *lists], found=_files(videos),
                      source=str(videos))
    for file in lists:
        subset, number = ("train" if file.name.startswith("train") else "test"), int(file.stem[-2:])
        for _, line in read_lines(file):
            video = line.split()[0].replace("\\", "/")
            listing.listed.setdefault(video, set()).add((number, subset))
            listing.label[video] = video.split("/")[0]
    return listing


KINETICS_SUBSETS = {"train.csv": "train", "validate.csv": "test", "val.csv": "test"}


def kinetics(src: Path, stage: Stage, videos: Path | None, template: str) -> Listing:
    """`src`: the folder holding train.csv and validate.csv (or a tar.gz of them); `videos`:
    the clips, searched recursively and matched by file name (default `src`)."""
    annotations = src
    if not (src / "train.csv").is_file():
        archives = [p for p in sorted(src.iterdir()) if p.is_file()
                    and p.name.endswith(ARCHIVE_SUFFIXES) and archive_kind(p) is not None]
        for archive in archives:
            unpacked = stage.unpack(archive, archive.name.split(".")[0])
            hits = sorted(unpacked.rglob("train.csv"))
            if hits:
                annotations = hits[0].parent
                break
    files = [annotations / n for n in KINETICS_SUBSETS if (annotations / n).is_file()]
    if not any(f.name == "train.csv" for f in files):
        raise UserError(f"{src} holds no train.csv (nor an archive of the annotation CSVs); "
                        "pass the folder with Kinetics' train.csv and validate.csv")
    root = videos or src
    by_name = {p.name: p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".csv")}
    check_name_template(template)
    listing = Listing("kinetics_csv", files, source=str(root), name_template=template)
    for file in files:
        subset = KINETICS_SUBSETS[file.name]
        for clip in read_kinetics_csv(file):
            rel = clip_name(template, clip)
            listing.listed.setdefault(rel, set()).add((1, subset))
            listing.label[rel] = clip.label.strip()
            if Path(rel).name in by_name:
                listing.found[rel] = by_name[Path(rel).name]
    return listing


LAYOUTS: dict[str, Callable[..., Listing]] = {"hmdb51": hmdb51, "ucf101": ucf101,
                                              "kinetics": kinetics}
