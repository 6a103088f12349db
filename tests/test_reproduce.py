"""`distinit reproduce` end to end on the tiny world: variants x seeds, a table, its doc section."""

import json
import re
from pathlib import Path

import pytest
import torch

from distinit.cli import main
from distinit.engine.checkpoint import load_checkpoint
from distinit.experiments.catalog import EXPERIMENTS
from distinit.experiments.claims import Claim
from distinit.experiments.tables import write_section
from distinit.jobs.image_train import CHECKPOINT

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
    # Under the results: did each distillation learn its task, per seed, against chance?
    stages = summary["rows"][0]["stages"]
    assert [s["stage"] for s in stages] == ["distinit"]
    agree = {m["metric"]: m for m in stages[0]["metrics"]}["holdout_agree_t0"]
    teacher = load_checkpoint(tmp_path / "r" / "shared" / "teacher" / CHECKPOINT)
    assert len(agree["per_seed"]) == 2 and agree["chance"] == 100 / teacher["num_classes"]
    assert agree["mean"] == pytest.approx(summary["rows"][0]["agree"][0])  # the table's number
    assert text.index("| soft-target CE |") < text.index("### Does each stage do its job?")
    assert "| soft-target CE | distinit | holdout_agree_t0 |" in text
    assert "| | | loss_t0 |" in text
    # Running it again replaces its section instead of adding a second one (runs are reloaded).
    assert main(["reproduce", "loss", f"out_dir={tmp_path / 'r'}", *TINY, "--seeds", "0,1",
                 "--doc", str(doc)]) == 0
    assert doc.read_text().count("<!-- reproduce:loss -->") == 2


def test_entropy_thresholds_come_from_the_teachers_entropies(tmp_path):
    from distinit.experiments.catalog import Context

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
    assert main(["reproduce", "magic"]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'magic'" in err and "frames" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_seeds_given_twice_or_not_whole_are_one_line(tmp_path, capsys):
    for seeds, said in [("0,0", "seeds lists 0 more than once: [0, 0]; each must appear once"),
                        ("0,x", "seeds[1]: expected int, got 'x'"),
                        ("-1", "seeds[0] must be >= 0, got -1")]:
        capsys.readouterr()
        assert main(["reproduce", "loss", f"out_dir={tmp_path / 'r'}", "--seeds", seeds]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"distinit reproduce: error: {said}"), lines
    assert not (tmp_path / "r").exists()
    assert main(["demo", f"out_dir={tmp_path / 'd'}", "seeds=[1,2,1]"]) == 2
    assert "seeds lists 1 more than once" in capsys.readouterr().err


def test_flow_experiment_trains_flow_students_and_fuses_two_streams(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the doc goes beside the runs, not under the working folder
    assert main(["reproduce", "flow", f"out_dir={tmp_path / 'r'}", *TINY,
                 "inflation_source=[model.width=8]", "--seeds", "0"]) == 0
    assert "<!-- reproduce:flow -->" in (tmp_path / "r" / "REPRODUCTION.md").read_text()
    assert not (tmp_path / "docs").exists()
    summary = json.loads((tmp_path / "r" / "flow" / "summary.json").read_text())
    labels = [r["variant"] for r in summary["rows"]]
    assert labels == ["flow, scratch", "flow, mean-inflated", "flow, DistInit", "RGB, DistInit",
                      "two-stream: RGB + flow DistInit (late fusion)"]
    # The world's flow was computed once, and the flow students read it (2 input channels).
    world = tmp_path / "world-tiny-0"
    assert (world / "flow" / "corpus" / ".complete").is_file()
    flow_runs = [p.parent for p in (tmp_path / "r" / "runs").glob("*/seed0/*/config.yaml")
                 if "input: flow" in p.read_text()]
    assert len(flow_runs) == 4  # three fine-tunes and one distillation
    inflated = [p for p in flow_runs if "init: inflate" in (p / "config.yaml").read_text()]
    assert len(inflated) == 1
    stem = torch.load(inflated[0] / "last.pt", weights_only=True)["model"]["stem.0.weight"]
    assert stem.shape[1] == 2
    assert 0 <= summary["rows"][-1]["top1"][0] <= 100


def test_modist_experiment_reports_attribution_inside_the_objects(tmp_path):
    assert main(["reproduce", "modist", f"out_dir={tmp_path / 'r'}", *TINY,
                 "modist=[modist.queue=8]", "--seeds", "0", "--doc", ""]) == 0
    summary = json.loads((tmp_path / "r" / "modist" / "summary.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == [
        "scratch", "RGB-only contrastive", "MoDist", "DistInit", "MoDist + DistInit loss"]
    for r in summary["rows"]:
        assert 0 <= r["in_mask"][0] <= 100 and 0 <= r["in_mask_ft"][0] <= 100
    configs = [p.read_text() for p in (tmp_path / "r" / "runs").glob("*/seed0/r3d_18_modist/"
                                                                        "config.yaml")]
    assert sorted("motion: false" in c for c in configs) == [False, False, True]
    assert any("distill_weight: 1.0" in c for c in configs)
    assert any(n.startswith("Grad-CAM at layer") for n in summary["notes"])


def test_auxskd_experiment_shares_its_auxiliary_stage_on_a_small_corpus(tmp_path):
    assert main(["reproduce", "auxskd", f"out_dir={tmp_path / 'r'}", *TINY,
                 "modist=[modist.queue=8]", "auxskd=[auxskd.queue=8]", "--seeds", "0",
                 "--doc", ""]) == 0
    summary = json.loads((tmp_path / "r" / "auxskd" / "summary.json").read_text())
    labels = [r["variant"] for r in summary["rows"]]
    assert labels[:2] == ["VSPP", "auxSKD + VSPP"] and labels[-1] == "scratch"
    runs = tmp_path / "r" / "runs"
    assert len(list(runs.glob("auxskd-*/seed0/r3d_18_auxskd/last.pt"))) == 1  # one, shared
    for task in ("vspp", "vcop", "pace", "rspnet"):  # each alone, and from the auxSKD stage
        inits = sorted(yaml_init(p) for p in runs.glob(f"*/seed0/r3d_18_{task}/config.yaml"))
        assert inits == ["checkpoint", "scratch"], task
    # The small corpus: a quarter of the world's videos, each stage as many clips per epoch as
    # the whole corpus has videos.
    listed = (tmp_path / "r" / "auxskd" / "corpus_25.txt").read_text().split()
    assert len(listed) == 12 // 4
    assert len(summary["verdicts"]) == 7
    # Every pretraining stage is judged on its own task (auxSKD's stage in each variant after it).
    stages = {r["variant"]: {s["stage"]: [m["metric"] for m in s["metrics"]] for s in r["stages"]}
              for r in summary["rows"]}
    assert stages["auxSKD + VSPP"]["vspp"] == ["acc_speed", "acc_segment"]
    assert stages["auxSKD + VSPP"]["auxskd"][:2] == ["agree_nn", "spread"]
    assert stages["VCOP"] == {"vcop": ["acc_order"]} and stages["pace prediction"] == {
        "pace": ["acc_pace"]}
    assert stages["RSPNet"] == {"rspnet": ["acc_rsp", "acc_avid", "acc_avid_other"]}
    assert stages["MoDist"]["modist"][:2] == ["loss_rgb", "acc_rgb"]
    assert len(stages["MoDist"]["modist"]) == 8 and stages["scratch"] == {}
    assert stages["DistInit"] == {"distinit": ["loss_t0"]}  # 3 videos: none held out
    speed = summary["rows"][1]["stages"][1]["metrics"][0]
    assert speed["chance"] == 0.25 and speed["learnt"] in (0, 1)
    assert "auxSKD improves RSPNet: **" in summary["verdicts"][3]
    # Some variants alone: they reload the runs above, into a section of their own.
    doc = tmp_path / "R.md"
    assert main(["reproduce", "auxskd", f"out_dir={tmp_path / 'r'}", *TINY,
                 "modist=[modist.queue=8]", "auxskd=[auxskd.queue=8]", "--seeds", "0",
                 "--only", "RSPNet", "--only", "auxSKD + RSPNet", "--doc", str(doc)]) == 0
    only = json.loads((tmp_path / "r" / "auxskd" / "summary.json").read_text())
    assert [r["variant"] for r in only["rows"]] == ["RSPNet", "auxSKD + RSPNet"]
    assert [r["per_seed_top1"] for r in only["rows"]] == [
        r["per_seed_top1"] for r in summary["rows"] if "RSPNet" in r["variant"]]
    assert "<!-- reproduce:auxskd/RSPNet|auxSKD + RSPNet -->" in doc.read_text()


def yaml_init(config_file):
    import yaml

    return yaml.safe_load(config_file.read_text())["model"]["init"]


def test_cache_experiment_distills_from_caches_it_builds_once(tmp_path):
    assert main(["reproduce", "cache", f"out_dir={tmp_path / 'r'}", *TINY, "--seeds", "0,1",
                 "--doc", ""]) == 0
    summary = json.loads((tmp_path / "r" / "cache" / "summary.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == [
        "live teachers", "cached, 8 boxes", "cached, 2 boxes", "cached, 8 boxes, top-5"]
    assert len(summary["verdicts"]) == 3
    for name, boxes in (("targets-8", 8), ("targets-2", 2), ("targets-8-top5", 8)):
        manifest = json.loads((tmp_path / "r" / "cache" / name / "manifest.json").read_text())
        assert manifest["fingerprint"]["crops"] == boxes  # built once, for both seeds
    configs = [yaml_cache(p) for p in (tmp_path / "r" / "runs").glob(
        "*/seed1/r3d_18_distill/config.yaml")]
    assert sorted(c.rsplit("/", 1)[-1] if c else "" for c in configs) == [
        "", "targets-2", "targets-8", "targets-8-top5"]


def yaml_cache(config_file):
    import yaml

    return yaml.safe_load(config_file.read_text())["distill"]["target_cache"]


def test_a_claim_of_no_difference_holds_within_its_spread():
    """Table 4's "the two corpora teach about equally": |margin| within its spread over seeds
    (or the claim's margin in points) holds; a clear gap, either way, does not."""
    from distinit.experiments.tables import claim_verdicts

    def rows(a, b):
        return [{"variant": "a", "per_seed_top1": a}, {"variant": "b", "per_seed_top1": b}]

    claim = [Claim("a and b teach about equally", "a", "b", "equal")]
    assert "**holds**" in claim_verdicts(claim, rows([20.0, 22.0, 21.0], [21.0, 20.0, 22.5]))[0]
    assert "**does not hold**" in claim_verdicts(claim, rows([25.0, 26.0, 25.5],
                                                             [20.0, 20.5, 21.0]))[0]
    assert "**does not hold**" in claim_verdicts(claim, rows([15.0, 16.0, 15.5],
                                                             [20.0, 20.5, 21.0]))[0]


@pytest.mark.parametrize("diffs, kind, verdict", [
    ([3.0, 2.0, 4.0], "better", "holds"),  # above its spread, ahead in 3 of 3
    ([0.6, 2.5, -1.3], "better", "within the noise"),  # +0.6 +- 1.9: the demo's old "holds"
    ([4.0, 5.0, -0.5], "better", "within the noise"),  # +2.8 +- 2.9: ahead in 2, not beyond
    ([-3.0, -2.0, -4.0], "better", "does not hold"),  # clearly the other way
    ([-1.0, 0.5, -2.5], "better", "within the noise"),
    ([0.4], "better", "holds"),  # one seed: the sign decides
    ([-0.5, 0.3, -1.0], "not_worse", "holds"),  # not clearly worse
    ([-3.0, -2.0, -4.0], "not_worse", "does not hold"),
    ([0.5, -0.4, 0.2], "equal", "holds"),
    ([3.0, 2.5, 3.5], "equal", "does not hold"),
])
def test_one_rule_judges_every_claim(diffs, kind, verdict):
    from distinit.experiments.claims import judge

    assert judge(Claim("c", "a", "b", kind), diffs) == verdict


def test_a_claim_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="one of"):
        Claim("c", "a", "b", "bigger")


@pytest.mark.slow
def test_table1_runs_all_seven_rows_and_writes_its_section_of_the_results(tmp_path, capsys):
    doc = tmp_path / "RESULTS.md"
    assert main(["reproduce", "table1", f"out_dir={tmp_path / 'r'}", *TINY, "figures=false",
                 "--seeds", "0", "--doc", str(doc)]) == 0
    summary = json.loads((tmp_path / "r" / "table1" / "summary.json").read_text())
    from distinit.experiments.table1 import ROWS

    assert [r["variant"] for r in summary["rows"]] == list(ROWS)
    # the 2D networks' facts and each pretraining's, beside the table
    assert {"teacher_stills", "teacher_frames", "inflation_source_test",
            "scene_net_test"} <= set(summary["stats"])
    text = doc.read_text()
    assert "<!-- reproduce:table1 -->" in text and "distinit reproduce table1" in text
    assert "min for the whole command" in text
    assert "| R(2+1)D | Supervised pretraining on the corpus |" in text
    assert "R(2+1)D supervised pretraining: " in text and "held-out corpus clips" in text
    # The 2D networks were trained once, in OUT/shared, for every row.
    assert sorted(p.name for p in (tmp_path / "r" / "shared").iterdir()) == [
        "inflation_source", "scene_net", "teacher"]


def test_table1_is_an_experiment_of_the_catalog_and_the_demo_picks_its_rows():
    from distinit.experiments.experiment import Context
    from distinit.experiments.table1 import DEFAULT_ROWS, ROWS

    ctx = Context(world=None, out=Path("."), teacher=Path("t.pt"), scene_net=None, results={})
    variants = {v.label: v for v in EXPERIMENTS["table1"].variants(ctx)}
    assert list(variants) == list(ROWS) and set(DEFAULT_ROWS) <= set(variants)
    assert {v.student for v in variants.values()} == {"res3d", "r2plus1d"}
    assert variants["res3d_places_inflated"].needs() == {"scene_net"}
    assert variants["res3d_inflated"].needs() == {"inflation_source"}
    assert variants["r2plus1d_supervised"].method == "supervised"
    assert all(not v.needs() for k, v in variants.items() if "inflated" not in k)


def test_the_reproduction_summary_quotes_only_numbers_its_sections_report():
    """docs/REPRODUCTION.md: every 'mean +- spread' in the summary table at the top appears in
    a section below it (a section's table, verdict or text), so the summary cannot drift from
    the measurements."""
    text = (Path(__file__).parent.parent / "docs" / "REPRODUCTION.md").read_text()
    _, _, body = text.partition("**Summary of the verdicts**")
    lines = body.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    table, below = "\n".join(lines[first:end]), "\n".join(lines[end:])
    quoted = re.findall(r"\d+\.\d+ \+- \d+\.\d+", table)
    assert len(quoted) >= 10  # the table quotes the measurements
    missing = [q for q in quoted if q not in below]
    assert not missing, f"the summary quotes {missing}, which no section below reports"
