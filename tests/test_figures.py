"""`distinit figures` on a tiny hand-written demo run folder."""

import json
import math
import re

import pytest
import torch

from distinit import cli
from distinit.tools.figures import make_figures, temporal_variation

CLASSES = ["jump", "run", "wave"]
ROWS = ("res3d_scratch", "res3d_inflated", "res3d_distinit", "r2plus1d_distinit",
        "r2plus1d_supervised")


def _metrics(folder, keys):
    lines = [json.dumps({"step": s, **{k: 1.0 / s for k in keys}}) for s in range(1, 5)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _teacher(folder, width, classes):
    folder.mkdir(parents=True)
    torch.save({"model": {"conv1.weight": torch.randn(width, 3, 3, 3)}, "arch": "resnet18",
                "arch_kwargs": {"width": width}, "classes": classes}, folder / "teacher.pt")
    _metrics(folder, ["loss"])


def _student_run(folder, stem_shape, distill=False):
    folder.mkdir(parents=True)
    stem = torch.randn(*stem_shape)  # what a distillation run's checkpoint holds
    torch.save({"model": {"backbone.stem.0.weight": stem, "heads.0.weight": torch.randn(10, 8)},
                "backbone": {"stem.0.weight": stem}, "step": 4}, folder / "last.pt")
    _metrics(folder, ["loss", "agree_t0", "holdout_agree_t0"] if distill else ["loss"])
    if distill:
        g = torch.Generator().manual_seed(0)
        (folder / "results.json").write_text(json.dumps({
            "holdout_agree_t0": 0.5, "holdout_videos": 50,
            "entropies": [(torch.rand(50, generator=g) * math.log(10)).tolist()]}))
        (folder / "config.yaml").write_text("distill:\n  max_entropy: 1.5\n")


def _finetune(folder, per_class):
    folder.mkdir(parents=True)
    _metrics(folder, ["loss"])
    (folder / "results.json").write_text(json.dumps({
        "top1": sum(per_class) / 3, "per_class_top1": per_class, "classes": CLASSES}))
    labels = torch.arange(30) % 3
    torch.save({"test": torch.randn(30, 16) + labels[:, None], "test_labels": labels,
                "classes": CLASSES}, folder / "frozen_features.pt")


def _run(run, shift=0.0):
    """A demo run folder; `shift` raises every class of finetune_res3d_distinit."""
    _teacher(run / "teacher", 8, [f"c{i}" for i in range(10)])
    _teacher(run / "inflation_source", 8, [f"c{i}" for i in range(10)])
    _student_run(run / "r3d_18_distill", (8, 3, 3, 3, 3), distill=True)
    _student_run(run / "r2plus1d_18_distill", (5, 3, 1, 3, 3), distill=True)
    _student_run(run / "r2plus1d_18_supervised", (5, 3, 1, 3, 3))
    for i, row in enumerate(ROWS):
        up = shift if row == "res3d_distinit" else 0.0
        _finetune(run / f"finetune_{row}", [10.0 * i + up, 50.0 + up, 90.0 - 10 * i + up])
    return run


def test_every_figure_is_made(tmp_path):
    runs = [_run(tmp_path / "seed0"), _run(tmp_path / "seed1", shift=6.0)]
    out = tmp_path / "figs"
    made = make_figures(runs, out)
    assert set(made) == {"conv1_filters", "conv1_r2plus1d", "tsne", "entropy_hist",
                         "per_class_gain", "curves"}
    md = (out / "figures.md").read_text()
    for path in made.values():
        assert path.parent == out and path.read_bytes().startswith(b"\x89PNG")
        assert path.name in md
    # Inflation repeats one 2D kernel over time; a distilled (here random) one varies.
    distilled, inflated = re.search(r"DistInit (\d+\.\d+), ImageNet-analog inflated (\d+\.\d+)",
                                    md).groups()
    assert float(inflated) == 0 and float(distilled) > 0.1
    # Gains per seed: (+10, 0, -10) and (+16, +6, -4); their mean is (+13, +3, -7).
    assert "mean of 2 run(s)" in md and "best jump (+13.0), worst wave (-7.0)" in md


def test_temporal_variation():
    w2d = torch.randn(4, 3, 3, 3)
    assert temporal_variation(w2d.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3) == pytest.approx(0)
    assert temporal_variation(torch.randn(4, 3, 3, 3, 3)) > 0.5


def test_missing_inputs_are_skipped(tmp_path, capsys):
    run = tmp_path / "seed0"
    _teacher(run / "teacher", 8, CLASSES)
    assert cli.main(["figures", str(run), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert "skipped tsne" in out and "curves: " in out
    assert (tmp_path / "figs" / "curves.png").is_file()


def test_missing_run_dir_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert cli.main(["figures", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["figures", str(tmp_path / "empty")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
