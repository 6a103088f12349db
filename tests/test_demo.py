"""The demo end to end on the tiny world: every kind of row, a table in JSON and Markdown."""

import json

from distinit.cli import main

FAST = ["size=tiny", "teacher.epochs=1", "distill.epochs=1", "supervised.epochs=1",
        "finetune.epochs=1", "teacher.batch_size=8", "distill.batch_size=4",
        "supervised.batch_size=4", "finetune.batch_size=4", "width=8", "num_test_clips=2",
        "rows=[res3d_scratch,res3d_inflated,res3d_distinit,r2plus1d_supervised]"]


def test_demo_writes_the_table(tmp_path, capsys):
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST]) == 0
    table = json.loads((tmp_path / "run" / "table1.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["res3d_scratch", "res3d_inflated",
                                                  "res3d_distinit", "r2plus1d_supervised"]
    for r in table["rows"]:
        assert 0 <= r["clip_acc"] <= 100 and 0 <= r["top1"] <= r["top5"] <= 100
    md = (tmp_path / "run" / "table1.md").read_text()
    assert "| Res3D | Inflated from the image teacher |" in md
    assert "| Model | Initialization | Per clip | Top 1 | Top 5 |" in capsys.readouterr().out
    assert (tmp_path / "world-tiny-0" / "world.json").is_file()

    # Run again: every stage's finished run is reloaded, not trained again, and gives the same
    # table; a changed recipe is refused until --overwrite.
    ckpt = tmp_path / "run" / "r3d_18_distill" / "last.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST]) == 0
    assert ckpt.stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "run" / "table1.json").read_text())
    assert again["rows"] == table["rows"]
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST, "distill.lr=0.01"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_demo_rejects_unknown_rows(tmp_path, capsys):
    assert main(["demo", f"out_dir={tmp_path}", "size=tiny", "rows=[res3d_magic]"]) == 2
    assert "res3d_magic" in capsys.readouterr().err


def test_demo_over_seeds_reports_mean_and_std(tmp_path):
    base = [a for a in FAST if not a.startswith("rows=")]
    assert main(["demo", f"out_dir={tmp_path}", *base, "rows=[res3d_scratch]", "seeds=[0,1]"]) == 0
    per_seed = [json.loads((tmp_path / f"seed{s}" / "table1.json").read_text())["rows"][0]["top1"]
                for s in (0, 1)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    mean, std = summary["rows"][0]["top1"]
    assert abs(mean - sum(per_seed) / 2) < 0.01
    assert abs(std - abs(per_seed[0] - per_seed[1]) / 2 ** 0.5) < 0.01
    assert "+-" in (tmp_path / "summary.md").read_text()
