"""Labeled video lists: the official UCF-101 and HMDB-51 split files, a plain CSV, and (in
`split_formats`) the Kinetics annotation CSVs and `path label` lists.

Every loader checks each line and each video path, and reports the first problem as one
`SplitError` of the form `FILE:LINE: what is wrong in 'text'; what to do`.

A dataset has one class list, fixed before any subset is read (`dataset_classes`), and both
subsets are read against it: a label is an index into that list whichever classes a subset
happens to hold, so a class missing from the test subset cannot shift the labels after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from distinit.data.labels.split_formats import (
    DEFAULT_NAME_TEMPLATE,
    check_name_template,
    kinetics_classes,
    list_classes,
    load_kinetics_csv,
    load_list,
)
from distinit.data.labels.split_lines import (  # LabeledSplit, Classes: importable from here too
    Classes,
    LabeledSplit,
    Row,
    SplitError,
    check_split_number,
    check_subset,
    finish,
    is_int,
    line_fields,
    parse_csv,
    parse_int,
    read_class_ind,
    read_labels_txt,
    read_lines,
    where,
)


def absent_note(split: LabeledSplit, subset: str) -> str:
    """The line a run prints when classes of the dataset have no video in `subset`."""
    names = split.absent
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    then = ("their per-class accuracy is reported as null" if subset == "test" else
            "the model sees no example of them")
    return (f"note: {len(names)} of {len(split.classes)} classes have no {subset} videos "
            f"({shown}); {then}")


def _hmdb_suffix(split: int) -> str:
    return f"_test_split{split}.txt"


def _hmdb_classes(split_dir: Path, split: int) -> Classes:
    # One file per class and split, named for the class: its lines name both subsets' videos.
    suffix = _hmdb_suffix(split)
    if not split_dir.is_dir():
        raise SplitError(f"split folder not found: {split_dir}; pass the folder holding *{suffix}")
    files = [p.name for p in split_dir.iterdir() if p.name.endswith(suffix)]
    if not files:
        raise SplitError(f"{split_dir}: no files named <class>{suffix}; check the folder and split number")
    # The class names sorted, not the file names: "climb_stairs_test..." sorts before
    # "climb_test...", which put climb_stairs before climb (and kick_ball, sword_exercise before
    # kick, sword) against the alphabetical order other tools' HMDB-51 heads use.
    return Classes(sorted(name[: -len(suffix)] for name in files), f"{split_dir}/*{suffix}")


def _csv_classes(csv_or_dir: Path) -> Classes:
    # A list beside the split files wins; without one the training subset's classes are the list.
    folder = csv_or_dir if csv_or_dir.is_dir() else csv_or_dir.parent
    if (folder / "labels.txt").is_file():
        return read_labels_txt(folder / "labels.txt")
    if (folder / "classInd.txt").is_file():
        return read_class_ind(folder / "classInd.txt")
    train = folder / "train.csv" if csv_or_dir.is_dir() else csv_or_dir
    if not train.is_file():
        raise SplitError(
            f"{train} not found: a CSV dataset's classes are those of its training subset "
            f"(train.csv), or the names listed one a line in {folder / 'labels.txt'}; add one"
        )
    return Classes(_csv_class_names(parse_csv(train, None)), f"the training subset {train}")


def dataset_classes(format: str, split_dir_or_csv: str | Path, split: int = 1) -> Classes:
    """The one class list of a labeled dataset, fixed before any subset is read.

    ucf101: classInd.txt. hmdb51: the names of the `<class>_test_split<N>.txt` files, sorted.
    csv: `labels.txt` (one class a line) or `classInd.txt` beside the split files, else the
    classes of the training subset (`train.csv`, or the one CSV file given). kinetics_csv:
    `labels.txt` beside the CSVs, else train.csv's labels, sorted. list: `labels.txt` or
    `classInd.txt` beside the lists, else "0".."max" over both subsets' labels.
    """
    path = Path(split_dir_or_csv)
    if format == "ucf101":
        return read_class_ind(path / "classInd.txt")
    if format == "hmdb51":
        check_split_number(split)
        return _hmdb_classes(path, split)
    if format == "csv":
        return _csv_classes(path)
    if format == "kinetics_csv":
        return kinetics_classes(path)
    if format == "list":
        return list_classes(path)
    raise SplitError(f"unknown split format {format!r}; use one of {', '.join(FORMATS)}")


def load_ucf101(video_root: str | Path, split_dir: str | Path, split: int, subset: str,
                classes: Classes | None = None) -> LabeledSplit:
    """UCF-101 official splits: classInd.txt, trainlist0N.txt (`Class/v.avi id`), testlist0N.txt.

    Labels are classInd indices minus one; test labels come from each video's folder name.
    """
    check_subset(subset)
    check_split_number(split)
    video_root, split_dir = Path(video_root), Path(split_dir)
    if classes is None:
        classes = dataset_classes("ucf101", split_dir, split)
    names = classes.names
    # UCF folder names differ in case from classInd for one class in some copies.
    by_name = {name.lower(): label for label, name in enumerate(names)}

    list_file = split_dir / f"{subset}list{split:02d}.txt"
    rows: list[Row] = []
    for lineno, line in read_lines(list_file):
        fields = (line_fields(list_file, lineno, line, 2, "'<Class>/<video> <index>'")
                  if subset == "train" else
                  line_fields(list_file, lineno, line, 1, "'<Class>/<video>'"))
        relpath = fields[0]
        if subset == "train":
            index = parse_int(fields[1], list_file, lineno, line, "class index")
            if not 1 <= index <= len(names):
                raise SplitError(
                    f"{where(list_file, lineno, line)}: class index {index} is out of range "
                    f"1..{len(names)} of {classes.source}; fix the index"
                )
            label = index - 1
        else:
            folder = relpath.replace("\\", "/").split("/")[0]
            if "/" not in relpath.replace("\\", "/") or folder.lower() not in by_name:
                raise SplitError(
                    f"{where(list_file, lineno, line)}: unknown class {folder!r} (the folder of "
                    f"the video); it must be a class name from {classes.source}"
                )
            label = by_name[folder.lower()]
        rows.append(Row(video_root / relpath, label, list_file, lineno, line))
    return finish(rows, names, str(list_file),
                   f"check that video_root ({video_root}) holds <Class>/<video>")


def load_hmdb51(video_root: str | Path, split_dir: str | Path, split: int, subset: str,
                classes: Classes | None = None) -> LabeledSplit:
    """HMDB-51 official splits: `<class>_test_split<N>.txt`, lines `<video> <id>`.

    id 1 = train, 2 = test, 0 = unused. Videos live at video_root/<class>/<video>; labels
    index the class names sorted alphabetically.
    """
    check_subset(subset)
    check_split_number(split)
    video_root, split_dir = Path(video_root), Path(split_dir)
    if classes is None:
        classes = dataset_classes("hmdb51", split_dir, split)
    wanted = 1 if subset == "train" else 2
    rows: list[Row] = []
    for label, name in enumerate(classes.names):
        split_file = split_dir / f"{name}{_hmdb_suffix(split)}"
        lines = read_lines(split_file)
        if not lines:
            # Every official file lists all videos of its class; an empty one is a download
            # or extraction cut short, and would score its class 0% without a word.
            raise SplitError(f"{split_file}: empty split file (an official one lists every video "
                             f"of its class); extract the split archive again")
        for lineno, line in lines:
            fields = line_fields(split_file, lineno, line, 2, "'<video> <0|1|2>'")
            use = parse_int(fields[1], split_file, lineno, line, "subset id")
            if use not in (0, 1, 2):
                raise SplitError(
                    f"{where(split_file, lineno, line)}: subset id {use} must be 0 (unused), "
                    f"1 (train) or 2 (test); fix the id"
                )
            if use == wanted:
                rows.append(Row(video_root / name / fields[0], label, split_file, lineno, line))
    return finish(rows, classes.names, classes.source,
                   f"check that video_root ({video_root}) holds <class>/<video>")


def _csv_class_names(parsed: list[tuple[Path, str, int, str]]) -> list[str]:
    # All-integer labels are indices: classes "0".."max". Otherwise the sorted distinct names.
    labels = [label for _, label, _, _ in parsed]
    if all(is_int(label) for label in labels):
        return [str(i) for i in range(max(max(int(label) for label in labels), 0) + 1)]
    return sorted(set(labels))


def load_csv(csv_path: str | Path, video_root: str | Path | None = None,
             classes: Classes | Sequence[str] | None = None) -> LabeledSplit:
    """A `path,label` CSV; an optional header row starts with `path` (or `video`, `file`).

    Relative paths are under `video_root`, else under the CSV's folder. A label is a class
    name or a 0-based index into `classes`. Without `classes`, the file's own: all-integer
    labels name classes "0".."max", otherwise the sorted distinct names are the classes.
    """
    csv_path = Path(csv_path)
    parsed = parse_csv(csv_path, video_root)
    if classes is None:
        classes = Classes(_csv_class_names(parsed), str(csv_path))
    elif not isinstance(classes, Classes):
        classes = Classes(list(classes), "the given classes")
    names = classes.names
    by_name = {name: i for i, name in enumerate(names)}
    rows: list[Row] = []
    for path, label_text, lineno, line in parsed:
        if label_text in by_name:
            label = by_name[label_text]
        elif is_int(label_text):
            label = int(label_text)
            if not 0 <= label < len(names):
                raise SplitError(
                    f"{where(csv_path, lineno, line)}: label {label} is out of range "
                    f"0..{len(names) - 1} of the classes of {classes.source}; fix the label"
                )
        else:
            raise SplitError(
                f"{where(csv_path, lineno, line)}: unknown class {label_text!r}: not one of the "
                f"{len(names)} classes of {classes.source} ({', '.join(names[:20])}"
                f"{', ...' if len(names) > 20 else ''}); fix the label, or list every class in "
                f"a labels.txt beside the split files"
            )
        rows.append(Row(path, label, csv_path, lineno, line))
    root = Path(video_root) if video_root is not None else csv_path.parent
    return finish(rows, names, str(csv_path), f"paths are relative to {root}; fix the path or video_root")


def _load_csv_split(video_root: str | Path | None, csv_or_dir: str | Path, split: int,
                    subset: str, classes: Classes | None = None) -> LabeledSplit:
    # A folder holds one CSV per subset (train.csv, test.csv); a file is used as given.
    check_subset(subset)
    path = Path(csv_or_dir)
    if classes is None:
        classes = dataset_classes("csv", path, split)
    return load_csv(path / f"{subset}.csv" if path.is_dir() else path, video_root, classes)


FORMATS: dict[str, Callable[..., LabeledSplit]] = {
    "ucf101": load_ucf101,
    "hmdb51": load_hmdb51,
    "csv": _load_csv_split,
    "kinetics_csv": load_kinetics_csv,
    "list": load_list,
}


def load_labeled(format: str, video_root: str | Path | None, split_dir_or_csv: str | Path,
                 split: int = 1, subset: str = "train",
                 name_template: str = DEFAULT_NAME_TEMPLATE) -> LabeledSplit:
    """Load a labeled split by format name (`FORMATS`), its labels indexing the dataset's one
    class list (`dataset_classes`), whichever subset is read.

    For "csv", `split_dir_or_csv` is a CSV file, or a folder holding `<subset>.csv`; for
    "kinetics_csv" and "list", a folder of lists (`split_formats`); `split` only matters to
    ucf101 and hmdb51. `name_template`: a Kinetics clip's path under `video_root`
    (data.name_template). "csv" and "list" read paths relative to the lists without a
    `video_root`.
    """
    if format not in FORMATS:
        raise SplitError(f"unknown split format {format!r}; use one of {', '.join(FORMATS)}")
    if format not in ("csv", "list") and video_root is None:
        raise SplitError(f"the {format} format needs a video root folder")
    check_subset(subset)
    extra = {}
    if format == "kinetics_csv":
        check_name_template(name_template)  # before any file is read
        extra["name_template"] = name_template
    classes = dataset_classes(format, split_dir_or_csv, split)
    return FORMATS[format](video_root, split_dir_or_csv, split, subset, classes, **extra)
