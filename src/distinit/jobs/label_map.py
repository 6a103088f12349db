"""A fine-tuned checkpoint's label map (its "classes": the class names in label order, which
`finetune` stores in every checkpoint and `export` in the safetensors header) checked against
the split a run reads.

Two datasets can hold the same number of classes in another order (HMDB-51 in the old split-file
order against the alphabetical one): a head of the right size then scores a mislabeled test set
without a word, so `eval` compares the names, not only their number."""

from __future__ import annotations

from collections.abc import Sequence

from distinit.errors import UserError

EVAL_FIX = ("evaluate it on the dataset it was fine-tuned on, or give the split a label map in "
            "the checkpoint's order (data.format=csv with a labels.txt beside the CSV files, one "
            "class a line)")
RESUME_FIX = ("resume with the label map the run started with, or fine-tune into a new out_dir "
              "(--overwrite starts this one again)")


def check_classes(ckpt_classes: Sequence[str] | None, split_classes: Sequence[str],
                  weights: str, split: str = "the test split", fix: str = EVAL_FIX) -> None:
    """Refuse, in one line, a checkpoint whose classes are not `split`'s, name for name and in
    order. A checkpoint without classes (from before they were stored, or not fine-tuned by
    distinit) is checked by its head's size alone, elsewhere."""
    if not ckpt_classes:
        return
    ours, theirs = list(ckpt_classes), list(split_classes)
    if ours == theirs:
        return
    if len(ours) != len(theirs):
        raise UserError(f"{weights} was fine-tuned on {len(ours)} classes but {split} has "
                        f"{len(theirs)}; {fix}")
    i = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
    what = "the same classes in another order" if sorted(ours) == sorted(theirs) else \
        "other class names"
    raise UserError(f"{weights} labels class {i} {ours[i]!r} but {split}'s class {i} is "
                    f"{theirs[i]!r} ({what}); {fix}")


def head_note(ckpt: dict, weights: str, classes: Sequence[str]) -> None:
    """Print one note when `finetune` starts from a fine-tuned classifier: only its backbone is
    loaded (`build.init_student`), a new head is trained for `classes`, and the checkpoint's
    label map is not used."""
    old = ckpt.get("classes")
    if not old and ckpt.get("job") != "finetune":
        return  # a pretraining or foreign checkpoint: no label map to drop
    what = f"{len(old)} classes ({_names(old)})" if old else "a labeled split"
    print(f"note: {weights} is a classifier fine-tuned on {what}; this fine-tune keeps its "
          f"backbone and trains a new head for the {len(classes)} classes of this split, so its "
          "old head and label map are not used", flush=True)


def _names(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
