"""Reading split files line by line: each problem is one `SplitError` of the form
`FILE:LINE: what is wrong in 'text'; what to do` (the loaders are in `distinit.data.splits`)."""

from __future__ import annotations

import codecs
import csv
import io
import os
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
