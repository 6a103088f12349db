"""The demo end to end on the tiny world: every kind of row, a table in JSON and Markdown."""

import json

import torch

from distinit.cli import main
from distinit.config import load_config

FAST = ["size=tiny", "all=[model.width=8, data.num_test_clips=2, optim.epochs=1, "
        "optim.batch_size=4]", "teacher=[model.width=8]",
        "rows=[res3d_scratch,res3d_inflated,res3d_places_inflated,res3d_distinit,"
        "r2plus1d_supervised]"]


def test_demo_writes_the_table(tmp_path, capsys):
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST]) == 0
    table = json.loads((tmp_path / "run" / "table1.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["res3d_scratch", "res3d_inflated",
                                                  "res3d_places_inflated", "res3d_distinit",
                                                  "r2plus1d_supervised"]
    for r in table["rows"]:
        assert 0 <= r["clip_acc"] <= 100 and 0 <= r["top1"] <= r["top5"] <= 100
        assert 0 <= r["knn1"] <= 100 and 0 <= r["knn20"] <= 100 and 0 <= r["probe"] <= 100
    stats = table["stats"]
    assert 0 <= stats["teacher_stills"] <= 100 and 0 <= stats["teacher_frames"] <= 100
    assert 0 <= stats["res3d_distinit_agree"] <= 100 and stats["res3d_distinit_soft_loss"] > 0
    # beside it, agreement with the clip-level target and the one-frame agreement's ceiling
    assert 0 <= stats["res3d_distinit_agree_clip"] <= 100
    assert 0 <= stats["res3d_distinit_ceiling"] <= 100
    md = (tmp_path / "run" / "table1.md").read_text()
    assert "| Res3D | ImageNet-analog inflated (ResNet-18 analog) |" in md
    assert "DistInit beats scratch (Res3D): **" in md  # a verdict per claim
    assert "clip-level top class" in md and "ceiling" in md
    out = capsys.readouterr().out
    assert "| Model | Initialization | Per clip | Top 1 | Top 5 | kNN-1 | kNN-20 |" in out
    assert "held-out corpus clips" in out
    # The teacher and the inflation source are two different networks (the paper's setup).
    teacher = torch.load(tmp_path / "run" / "teacher" / "teacher.pt", weights_only=True)
    source = torch.load(tmp_path / "run" / "inflation_source" / "teacher.pt", weights_only=True)
    assert (teacher["arch"], source["arch"]) == ("resnet50", "resnet18")
    # The demo draws the paper's figures from its own runs.
    figures = tmp_path / "run" / "figures"
    for name in ("conv1_filters", "tsne", "entropy_hist", "per_class_gain", "curves"):
        assert (figures / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    assert "conv1_filters.png" in (figures / "figures.md").read_text()
    # The distillation logged the held-out agreement after its epoch.
    lines = (tmp_path / "run" / "r3d_18_distill" / "metrics.jsonl").read_text().splitlines()
    assert any("holdout_agree_t0" in line for line in lines)
    assert (tmp_path / "world-tiny-0" / "world.json").is_file()

    # Run again: every stage's finished run is reloaded, not trained again, and gives the same
    # table; a changed recipe trains a run of its own beside the old one, which is kept.
    ckpt = (tmp_path / "run" / "r3d_18_distill" / "last.pt").resolve()
    assert ckpt.parent.parent.parent.parent == tmp_path / "run" / "runs"  # runs/KEY/seed0/
    stamp = ckpt.stat().st_mtime_ns
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST]) == 0
    assert ckpt.stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "run" / "table1.json").read_text())
    assert again["rows"] == table["rows"]
    assert main(["demo", f"out_dir={tmp_path / 'run'}", *FAST, "distill=[optim.lr=0.01]"]) == 0
    changed = (tmp_path / "run" / "r3d_18_distill" / "last.pt").resolve()
    assert changed != ckpt and ckpt.stat().st_mtime_ns == stamp
    assert load_config(changed.parent / "config.yaml").optim.lr == 0.01


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


def test_the_demo_recipes_run_on_a_users_own_data(world, labeled, tmp_path, capsys):
    """A user with small-frame videos runs the demo's recipes with path overrides alone."""
    from distinit.experiments.world import RECIPES

    small = ["model.width=8", "optim.epochs=1", "optim.batch_size=4", "data.num_test_clips=2"]
    teacher = tmp_path / "teacher"
    assert main(["train-image", str(RECIPES / "inflation_source.yaml"), *small,
                 f"data.images={world.objects_train}", f"data.images_test={world.objects_test}",
                 f"out_dir={teacher}"]) == 0
    assert 0 <= json.loads((teacher / "results.json").read_text())["test_top1"] <= 100
    assert main(["distill", str(RECIPES / "distill.yaml"), *small, f"data.videos={world.corpus_dir}",
                 f"distill.teachers=[{{spec: 'ckpt:{teacher / 'teacher.pt'}'}}]",
                 f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'distill'}"]) == 0
    held = json.loads((tmp_path / "distill" / "results.json").read_text())
    assert held["holdout_videos"] == 1 and 0 <= held["holdout_agree_t0"] <= 100
    for init, weights in (("checkpoint", tmp_path / "distill" / "last.pt"),
                          ("inflate", teacher / "teacher.pt")):
        assert main(["finetune", str(RECIPES / "finetune.yaml"), *small, *labeled,
                     f"data.cache_dir={tmp_path / 'cache'}", f"model.init={init}",
                     f"model.weights={weights}", f"out_dir={tmp_path / init}"]) == 0
        assert (tmp_path / init / "results.json").is_file()


def test_train_image_needs_an_image_model(world, tmp_path, capsys):
    assert main(["train-image", "model.arch=r3d_18", f"data.images={world.objects_train}",
                 f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "image model" in err and "resnet18" in err and len(err.strip().splitlines()) == 1
