"""Reading split files line by line: each problem is one `SplitError` of the form
`FILE:LINE: what is wrong in 'text'; what to do` (the loaders are in `distinit.data.labels.splits`)."""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from distinit.errors import UserError

SUBSETS = ("train", "test")
# First fields that mark the first CSV row as a header rather than a sample.
CSV_HEADER_NAMES = {"path", "video", "file", "filename", "video_path"}


class SplitError(UserError):
    """A split file (or the videos it names) is missing or malformed."""


class Row(NamedTuple):
    video: Path
    label: int
    file: Path  # the split file and line the sample came from, for error messages
    lineno: int
    line: str


def where(path: Path, lineno: int, text: str) -> str:
    return f"{path}:{lineno}: in {text.strip()!r}"


def line_fields(path: Path, lineno: int, line: str, count: int, layout: str) -> list[str]:
    """The whitespace-separated fields of a split-file line, or an error naming file and line."""
    fields = line.split()
    if len(fields) != count:
        raise SplitError(f"{where(path, lineno, line)}: expected {count} field{'s' * (count > 1)} {layout}, "
                         f"got {len(fields)}; fix or delete the line")
    return fields


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers (official UCF files use CRLF endings)."""
    if not path.is_file():
        raise SplitError(f"split file not found: {path}; check the split folder and split number")
    text = read_names(path)
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_names(path: Path) -> str:
    """The text of a split file, decoded as the OS decodes file names: a video name that is
    not valid UTF-8 keeps its bytes, so the video is found (with errors="replace" it was not)."""
    return os.fsdecode(path.read_bytes().removeprefix(codecs.BOM_UTF8))  # Excel writes a BOM


def parse_int(text: str, path: Path, lineno: int, line: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SplitError(
            f"{where(path, lineno, line)}: {what} {text!r} is not an integer; fix or delete the line"
        ) from None


def check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise SplitError(f"unknown subset {subset!r}; use one of {', '.join(SUBSETS)}")


def check_split_number(split: int) -> None:
    if not isinstance(split, int) or split < 1:
        raise SplitError(f"split must be a positive integer (1, 2 or 3 for the official splits), got {split!r}")


def parse_csv(csv_path: Path, video_root: str | Path | None) -> list[tuple[Path, str, int, str]]:
    """(video, label text, line number, line) of each sample line of a `path,label` CSV."""
    if not csv_path.is_file():
        raise SplitError(f"CSV split file not found: {csv_path}; check the path")
    root = Path(video_root) if video_root is not None else csv_path.parent
    rows_read = csv.reader(io.StringIO(read_names(csv_path), newline=""))
    raw = [(n, row) for n, row in enumerate(rows_read, 1)
           if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if raw and raw[0][1][0].strip().lower() in CSV_HEADER_NAMES:
        raw = raw[1:]
    parsed: list[tuple[Path, str, int, str]] = []
    for lineno, row in raw:
        line = ",".join(row)
        if len(row) != 2:
            raise SplitError(
                f"{where(csv_path, lineno, line)}: expected 2 fields 'path,label', got {len(row)}; "
                f"fix or delete the line (quote paths that contain commas)"
            )
        parsed.append((root / row[0].strip(), row[1].strip(), lineno, line))
    if not parsed:
        raise SplitError(f"{csv_path}: no videos listed; add lines 'path,label'")
    return parsed


def is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


@dataclass
class LabeledSplit:
    """Videos with integer labels; `classes[label]` is the name of a label."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    # Videos the split lists that are not on disk, where a format allows them (a Kinetics copy
    # is never complete); every other format refuses a missing video.
    missing: list[Path] = field(default_factory=list)

    @property
    def videos(self) -> list[Path]:
        return [path for path, _ in self.samples]

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def absent(self) -> list[str]:
        """Classes with no video in this subset (fine, but their accuracy is undefined)."""
        have = set(self.labels)
        return [name for label, name in enumerate(self.classes) if label not in have]


class Classes(NamedTuple):
    """A dataset's class list; `source` says where it came from, for messages."""

    names: list[str]
    source: str


def finish(rows: list[Row], classes: list[str], source: str, root_hint: str) -> LabeledSplit:
    """Check that the split is not empty and that every video (a file, or a frame folder)
    exists (one stat each)."""
    if not rows:
        raise SplitError(f"{source}: no videos listed for this subset; check the split files and the subset")
    missing = [row for row in rows if not row.video.exists()]
    if missing:
        first = missing[0]
        more = f" ({len(missing) - 1} more videos are missing)" if len(missing) > 1 else ""
        raise SplitError(
            f"{where(first.file, first.lineno, first.line)}: video not found: {first.video}{more}; "
            f"{root_hint}"
        )
    return LabeledSplit([(row.video, row.label) for row in rows], classes)


def read_class_ind(class_file: Path) -> Classes:
    """UCF's classInd.txt: lines `<index> <ClassName>`, indices 1..N."""
    index_to_name: dict[int, str] = {}
    for lineno, line in read_lines(class_file):
        fields = line_fields(class_file, lineno, line, 2, "'<index> <ClassName>'")
        index = parse_int(fields[0], class_file, lineno, line, "class index")
        if index in index_to_name or fields[1] in index_to_name.values():
            raise SplitError(f"{where(class_file, lineno, line)}: duplicate class; delete the line")
        index_to_name[index] = fields[1]
    if not index_to_name:
        raise SplitError(f"{class_file}: no classes listed; it needs lines '<index> <ClassName>'")
    if sorted(index_to_name) != list(range(1, len(index_to_name) + 1)):
        raise SplitError(
            f"{class_file}: class indices must be 1..{len(index_to_name)} without gaps, "
            f"got {sorted(index_to_name)[:10]}...; renumber the classes"
        )
    return Classes([index_to_name[i] for i in range(1, len(index_to_name) + 1)], str(class_file))


def read_labels_txt(path: Path) -> Classes:
    """A labels.txt: one class name a line, in label order (blank lines and # comments skipped)."""
    names: list[str] = []
    for lineno, line in read_lines(path):
        if line.startswith("#"):
            continue
        if line in names:
            raise SplitError(f"{where(path, lineno, line)}: duplicate class; delete the line")
        names.append(line)
    if not names:
        raise SplitError(f"{path}: no classes listed; put one class name a line, in label order")
    return Classes(names, str(path))
