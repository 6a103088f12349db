"""`distinit reproduce` end to end on the tiny world: variants x seeds, a table, its doc section."""

import json

import pytest

from distinit.cli import main
from distinit.reproduce import EXPERIMENTS, write_section

TINY = ["size=tiny", "all=[model.width=8, data.num_test_clips=2, optim.epochs=1, "
        "optim.batch_size=4]", "teacher=[model.width=8]"]


def test_reproduce_runs_each_variant_over_seeds_and_writes_its_section(tmp_path, capsys):
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text("# Reproducing\n\nintro kept\n")
    assert main(["reproduce", "loss", f"out_dir={tmp_path / 'r'}", *TINY, "--seeds", "0,1",
                 "--doc", str(doc)]) == 0
    summary = json.loads((tmp_path / "r" / "loss" / "summary.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["soft-target CE", "MSE on logits (lr / 10)"]
    for r in summary["rows"]:
        assert len(r["per_seed_top1"]) == 2 and 0 <= r["top1"][0] <= 100
    assert summary["verdicts"][0].startswith("cross-entropy beats MSE: **")
    # The MSE variant really ran with MSE at a tenth of the recipe's lr.
    configs = [p.read_text() for p in (tmp_path / "r" / "runs").glob(
        "*/seed0/r3d_18_distill/config.yaml")]
    assert len(configs) == 2
    assert any("loss: mse" in c and "lr: 0.0003" in c for c in configs)
    text = doc.read_text()
    assert "intro kept" in text and "distinit reproduce loss" in text and "| soft-target CE |" in text
    # Running it again replaces its section instead of adding a second one (runs are reloaded).
    assert main(["reproduce", "loss", f"out_dir={tmp_path / 'r'}", *TINY, "--seeds", "0,1",
                 "--doc", str(doc)]) == 0
    assert doc.read_text().count("<!-- reproduce:loss -->") == 2


def test_entropy_thresholds_come_from_the_teachers_entropies(tmp_path):
    from distinit.reproduce import Context

    ctx = Context(world=None, out=tmp_path, teacher=tmp_path, scene_net=tmp_path,
                  results={"keep all": [{"entropies": [[0.1 * i for i in range(101)]]}]})
    variants = EXPERIMENTS["entropy"].variants(ctx)
    assert [v.label.split(" (")[0] for v in variants] == ["keep all", "drop 25%", "drop 50%",
                                                          "drop 75%"]
    assert variants[2].overrides == ["distill.max_entropy=5.000000"]  # the median


def test_write_section_appends_then_replaces(tmp_path):
    doc = tmp_path / "d.md"
    write_section(doc, "a", "A1\n")
    write_section(doc, "b", "B1\n")
    write_section(doc, "a", "A2\n")
    text = doc.read_text()
    assert "A2" in text and "A1" not in text and text.index("A2") < text.index("B1")


def test_unknown_experiment_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "magic"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'magic'" in err and "frames" in err and "Traceback" not in err
