"""Two labeled-data formats other tools' users already have, read by `distinit.data.labels.splits`
(`data.format`); every problem is one `SplitError` line, as in the other formats.

kinetics_csv: the official Kinetics annotation CSVs (`label,youtube_id,time_start,time_end,split`,
older Kinetics-400 files add `is_cc`) in `data.split_dir`: train.csv, and validate.csv (or
val.csv) for the test subset, since Kinetics' test labels were never released. A clip's file is
`data.name_template` filled from its line. A Kinetics copy is never complete (videos leave
YouTube): a clip not on disk goes to `LabeledSplit.missing`, with one note, not an error.

list: the `path label` lists of PySlowFast, VideoMAE and MMAction2 (whose rawframe lists are
`path num_frames label`), space- or comma-separated, labels 0-based class indices.
"""

from __future__ import annotations

import csv
import io
import string
from pathlib import Path
from typing import NamedTuple

from distinit.config_rules import ConfigError
from distinit.config_schema import KINETICS_NAME_TEMPLATE
from distinit.data.labels.split_lines import (
    Classes,
    LabeledSplit,
    Row,
    SplitError,
    check_subset,
    finish,
    is_int,
    parse_int,
    read_class_ind,
    read_labels_txt,
    read_lines,
    read_names,
    where,
)
from distinit.engine import dist

DEFAULT_NAME_TEMPLATE = KINETICS_NAME_TEMPLATE
NAME_FIELDS = ("youtube_id", "time_start", "time_end", "label", "label_underscored")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
KINETICS_OPTIONAL = ("is_cc",)
# The files a subset reads, in order of preference; Kinetics' test subset is its validation set.
KINETICS_FILES = {"train": ("train.csv",), "test": ("validate.csv", "val.csv")}
# Groups of one name in two spellings: the first group with a file wins (test, else val).
LIST_FILES = {"train": (("train.csv", "train.txt"),),
              "test": (("test.csv", "test.txt"), ("val.csv", "val.txt"))}


# ---------------------------------------------------------------------------------------------
# kinetics_csv


def check_name_template(template: str) -> None:
    """One ConfigError line unless `template` makes a clip's path from the fields a Kinetics
    line gives (`NAME_FIELDS`), {youtube_id} among them."""
    sample = {"youtube_id": "abc", "time_start": 14, "time_end": 24, "label": "air drumming",
              "label_underscored": "air_drumming"}
    try:
        names = {name.split(".")[0].split("[")[0]
                 for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        template.format(**sample)
        problem = "" if "youtube_id" in names else "it does not use {youtube_id}"
    except KeyError as e:
        problem = f"unknown field {{{e.args[0]}}}"
    except IndexError:
        problem = "a field without a name ({}); name it"
    except (ValueError, AttributeError, TypeError) as e:
        problem = str(e)
    if problem:
        fields = ", ".join(f"{{{name}}}" for name in NAME_FIELDS)
        raise ConfigError(f"data.name_template {template!r}: {problem}; use the fields {fields} "
                          f"(time_start and time_end are integers), e.g. {DEFAULT_NAME_TEMPLATE!r}")


def class_key(label: str) -> str:
    """What two spellings of one Kinetics class share: case, surrounding spaces, and spaces
    written as underscores (as in class folder names) set aside."""
    return label.strip().lower().replace(" ", "_")


class Clip(NamedTuple):
    label: str  # as written in the CSV
    youtube_id: str
    time_start: int
    time_end: int
    lineno: int
    line: str


def _seconds(text: str, path: Path, lineno: int, line: str, what: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value.is_integer() or value < 0:
        raise SplitError(f"{where(path, lineno, line)}: {what} {text.strip()!r} is not a whole "
                         f"number of seconds; fix or delete the line")
    return int(value)


def _one_spelling(path: Path, named: list[tuple[str, int, str]]) -> None:
    """Refuse two labels of one class (`class_key`) spelt differently: (label, line no, line)."""
    first: dict[str, tuple[str, int, str]] = {}
    for label, lineno, line in named:
        seen = first.setdefault(class_key(label), (label, lineno, line))
        if seen[0] != label:
            raise SplitError(
                f"{where(path, lineno, line)}: class {label!r} and class {seen[0]!r} (line "
                f"{seen[1]}) are one name (they differ in case, surrounding spaces or spaces "
                f"for underscores, and Kinetics' folder names write spaces as underscores); "
                f"spell the class one way")


def read_kinetics_csv(path: Path) -> list[Clip]:
    """The clips of a Kinetics annotation CSV, its header checked and each class spelt one way."""
    if not path.is_file():
        raise SplitError(f"split file not found: {path}; put the official Kinetics CSVs in "
                         f"data.split_dir")
    reader = csv.reader(io.StringIO(read_names(path), newline=""))
    rows = [(n, row) for n, row in enumerate(reader, 1) if any(c.strip() for c in row)]
    if not rows:
        raise SplitError(f"{path}: empty file; an official Kinetics CSV starts with the header "
                         f"{','.join(KINETICS_COLUMNS)}")
    header_no, header = rows[0]
    columns = [c.strip() for c in header]
    if (not set(KINETICS_COLUMNS) <= set(columns) or len(set(columns)) != len(columns)
            or set(columns) - set(KINETICS_COLUMNS) - set(KINETICS_OPTIONAL)):
        raise SplitError(
            f"{where(path, header_no, ','.join(header))}: a CSV with other columns: found "
            f"{', '.join(columns)}; expected {', '.join(KINETICS_COLUMNS)} (and optionally "
            f"{', '.join(KINETICS_OPTIONAL)}); use an official Kinetics annotation CSV, or "
            f"data.format=csv or list for other lists")
    at = {name: i for i, name in enumerate(columns)}
    clips: list[Clip] = []
    for lineno, row in rows[1:]:
        line = ",".join(row)
        if len(row) != len(columns):
            raise SplitError(f"{where(path, lineno, line)}: expected {len(columns)} fields "
                             f"({','.join(columns)}), got {len(row)}; fix or delete the line")
        label, youtube_id = row[at["label"]], row[at["youtube_id"]].strip()
        if not label.strip() or not youtube_id:
            raise SplitError(f"{where(path, lineno, line)}: empty "
                             f"{'youtube_id' if label.strip() else 'label'}; fix or delete the line")
        clips.append(Clip(label, youtube_id,
                          _seconds(row[at["time_start"]], path, lineno, line, "time_start"),
                          _seconds(row[at["time_end"]], path, lineno, line, "time_end"),
                          lineno, line))
    if not clips:
        raise SplitError(f"{path}: no clips listed; add the clips' lines below the header")
    _one_spelling(path, [(clip.label, clip.lineno, clip.line) for clip in clips])
    return clips


def clip_name(template: str, clip: Clip) -> str:
    """A clip's path (relative to the clips' folder) from `data.name_template` (checked)."""
    name = clip.label.strip()
    return template.format(youtube_id=clip.youtube_id, time_start=clip.time_start,
                           time_end=clip.time_end, label=name,
                           label_underscored=name.replace(" ", "_"))


def _kinetics_file(split_dir: Path, subset: str) -> Path:
    names = KINETICS_FILES[subset]
    for name in names:
        if (split_dir / name).is_file():
            return split_dir / name
    if subset == "train":
        raise SplitError(f"split file not found: {split_dir / names[0]}; put the official "
                         f"Kinetics train.csv in data.split_dir")
    raise SplitError(f"split file not found: {split_dir / names[0]} (nor {names[1]}): the test "
                     f"subset of Kinetics is its validation set (the test labels were never "
                     f"released); put the official validate.csv in data.split_dir")


def kinetics_classes(split_dir: str | Path) -> Classes:
    """`labels.txt` beside the CSVs (one class a line, in label order), else the classes of
    train.csv, sorted."""
    split_dir = Path(split_dir)
    labels_txt = split_dir / "labels.txt"
    if labels_txt.is_file():
        classes = read_labels_txt(labels_txt)
        _one_spelling(labels_txt, [(line, lineno, line) for lineno, line in read_lines(labels_txt)
                                   if not line.startswith("#")])
        return classes
    train = _kinetics_file(split_dir, "train")
    names = sorted({clip.label.strip() for clip in read_kinetics_csv(train)})
    return Classes(names, f"the training subset {train}")


def load_kinetics_csv(video_root: str | Path, split_dir: str | Path, split: int, subset: str,
                      classes: Classes | None = None,
                      name_template: str = DEFAULT_NAME_TEMPLATE) -> LabeledSplit:
    """A subset of Kinetics from its official CSVs (`split` is ignored): each clip at
    `video_root / name_template` filled from its line. Clips not on disk are `missing`, and a
    note says how many (rank 0); a subset none of whose clips is on disk is an error."""
    check_subset(subset)
    check_name_template(name_template)
    video_root, split_dir = Path(video_root), Path(split_dir)
    if classes is None:
        classes = kinetics_classes(split_dir)
    by_key = {class_key(name): label for label, name in enumerate(classes.names)}
    file = _kinetics_file(split_dir, subset)
    clips = read_kinetics_csv(file)
    present: list[tuple[Path, int]] = []
    missing: list[Path] = []
    for clip in clips:
        label = by_key.get(class_key(clip.label))
        if label is None:
            names = classes.names
            raise SplitError(
                f"{where(file, clip.lineno, clip.line)}: unknown class {clip.label.strip()!r}: not "
                f"one of the {len(names)} classes of {classes.source} ({', '.join(names[:20])}"
                f"{', ...' if len(names) > 20 else ''}); fix the label, or list every class in a "
                f"labels.txt beside the CSVs")
        video = video_root / clip_name(name_template, clip)
        if video.exists():
            present.append((video, label))
        else:
            missing.append(video)
    if not present:
        raise SplitError(f"{file}: none of the {len(clips)} clips it lists is in {video_root} "
                         f"(the first would be {missing[0]}); check data.video_root and "
                         f"data.name_template")
    if missing and dist.rank_world()[0] == 0:
        print(f"note: {len(missing)} of {len(clips)} clips listed in {file} are not in "
              f"{video_root}; the run reads the other {len(present)}", flush=True)
    return LabeledSplit(present, classes.names, missing)


# ---------------------------------------------------------------------------------------------
# list


def _list_file(split_dir: Path, subset: str, needed: bool = True) -> Path | None:
    if not split_dir.is_dir():
        raise SplitError(f"split folder not found: {split_dir}; data.format=list reads "
                         f"train.txt (or .csv) and test.txt (or val.txt) from the folder "
                         f"data.split_dir")
    for names in LIST_FILES[subset]:
        found = [split_dir / name for name in names if (split_dir / name).is_file()]
        if len(found) > 1:
            raise SplitError(f"{split_dir}: both {found[0].name} and {found[1].name} are there; "
                             f"keep the one to read")
        if found:
            return found[0]
    if not needed:
        return None
    wanted = " or ".join(name for names in LIST_FILES[subset] for name in names)
    raise SplitError(f"{split_dir}: no {wanted} for the {subset} subset; put the list there "
                     f"(lines 'path label')")


def read_list(path: Path, root: Path) -> list[Row]:
    """The lines of a `path label` list (or MMAction2's `path num_frames label`), space- or
    comma-separated (a comma on every line: commas); a path may hold spaces: the label is the
    last field. No header; labels are 0-based integers."""
    lines = read_lines(path)
    if not lines:
        raise SplitError(f"{path}: no videos listed; add lines 'path label'")
    sep = "," if all("," in line for _, line in lines) else None
    split = [[field.strip() for field in line.rsplit(sep, 2)] for _, line in lines]
    # MMAction2's rawframe lists: every line's middle field is the folder's frame count.
    rawframes = all(len(fields) == 3 and is_int(fields[1]) for fields in split)
    rows: list[Row] = []
    for (lineno, line), fields in zip(lines, split):
        if not rawframes:
            fields = [field.strip() for field in line.rsplit(sep, 1)]
        if len(fields) < 2 or not fields[0]:
            raise SplitError(f"{where(path, lineno, line)}: expected 'path label' (or MMAction2's "
                             f"'path num_frames label'); fix or delete the line")
        label = parse_int(fields[-1], path, lineno, line, "label")
        if label < 0:
            raise SplitError(f"{where(path, lineno, line)}: label {label} is negative (labels are "
                             f"0-based class indices); fix the label")
        rows.append(Row(root / fields[0], label, path, lineno, line))
    return rows


def list_classes(split_dir: str | Path) -> Classes:
    """`labels.txt` (one class a line) or UCF's `classInd.txt` beside the lists, else "0".."max"
    over the labels of both subsets."""
    split_dir = Path(split_dir)
    if (split_dir / "labels.txt").is_file():
        return read_labels_txt(split_dir / "labels.txt")
    if (split_dir / "classInd.txt").is_file():
        return read_class_ind(split_dir / "classInd.txt")
    files = [f for f in (_list_file(split_dir, "train", needed=False),
                         _list_file(split_dir, "test", needed=False)) if f is not None]
    if not files:
        _list_file(split_dir, "train")  # the error naming the files it reads
    top = max(row.label for file in files for row in read_list(file, split_dir))
    return Classes([str(i) for i in range(top + 1)],
                   f"the labels 0..{top} of {' and '.join(str(f) for f in files)}")


def load_list(video_root: str | Path | None, split_dir: str | Path, split: int, subset: str,
              classes: Classes | None = None) -> LabeledSplit:
    """A subset of a `path label` list dataset (`split` is ignored): train.txt or train.csv;
    test.txt or test.csv, else val.txt or val.csv. Paths are relative to `video_root` (None:
    the lists' folder) unless absolute; a path may name a frame folder."""
    check_subset(subset)
    split_dir = Path(split_dir)
    file = _list_file(split_dir, subset)
    root = Path(video_root) if video_root is not None else split_dir
    if classes is None:
        classes = list_classes(split_dir)
    rows = read_list(file, root)
    for row in rows:
        if row.label >= len(classes.names):
            raise SplitError(f"{where(file, row.lineno, row.line)}: label {row.label} is out of "
                             f"range 0..{len(classes.names) - 1} of the classes of "
                             f"{classes.source}; fix the label")
    return finish(rows, classes.names, str(file),
                  f"paths are relative to {root}; fix the path or data.video_root")
