"""Per-stage diagnostics: a hand-written metrics.jsonl against hand-computed means, chance levels
and verdicts; the table over seeds as `reproduce` renders it."""

import json
import math

import pytest
import torch

from distinit.config import load_config, save_config
from distinit.engine.checks import Check
from distinit.experiments import tables
from distinit.experiments.diagnostics import diagnose, has_checks, over_seeds, stage_value
from distinit.methods import METHODS, config_class


def _run(folder, method, lines, overrides=(), heads=()):
    """A stage's run folder: its config, its metrics.jsonl and (for teacher heads) a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    save_config(load_config(None, list(overrides), cls=config_class(method)),
                folder / "config.yaml")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if heads:
        torch.save({"model": {f"heads.{i}.weight": torch.zeros(c, 4) for i, c in enumerate(heads)},
                    "step": lines[-1]["step"]}, folder / "last.pt")
    return folder


def _rows(rows):
    return {r["metric"]: r for r in rows}


def test_every_method_has_its_checks():
    missing = [m for m in METHODS if not has_checks(m)]
    assert not missing, f"give {missing} a checks(cfg, run) in its module (engine/checks.py)"


def test_a_metric_is_its_mean_over_the_last_100_steps_of_lines_logging_it():
    lines = [{"step": s, "loss": float(s)} for s in range(25, 301, 25)]
    lines.append({"step": 300, "holdout": 7.0})  # an epoch-end line: no "loss"
    assert stage_value(lines, "loss") == (225 + 250 + 275 + 300) / 4  # steps 201..300
    assert stage_value(lines, "loss", window=0) == 300.0
    assert stage_value(lines, "holdout") == 7.0
    assert stage_value(lines, "missing") is None
    # a run shorter than the window: every line
    assert stage_value([{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}], "a") == 1.5


def test_learnt_means_a_tenth_of_the_way_from_chance_to_perfect():
    acc, loss = Check("acc", 0.25), Check("loss", math.log(1025), best=0.0)
    assert acc.learnt(0.33) and not acc.learnt(0.32)  # 0.25 + 0.1 * 0.75 = 0.325
    assert loss.learnt(6.2) and not loss.learnt(6.3)  # 0.9 * log(1025) = 6.239
    assert Check("spread", 0.0, share=0.5).learnt(0.5) is True
    assert Check("momentum").learnt(0.99) is None
    assert acc.learnt(math.nan) is None


def test_modist_terms_against_log_k_plus_1_and_one_in_k_plus_1(tmp_path):
    k = 1024
    lines = [{"step": s, "loss": 1.0, "loss_rgb": 8.0 - s / 50, "acc_rgb": s / 1000,
              "loss_flow": 7.0, "acc_flow": 0.0005, "loss_rgb_flow": 6.9, "acc_rgb_flow": 0.01,
              "loss_flow_rgb": 6.0, "acc_flow_rgb": 0.2} for s in (50, 100, 150, 200)]
    run = _run(tmp_path / "m", "modist", lines, [f"modist.queue={k}", "log_every=50"])
    rows = _rows(diagnose(run, "modist"))
    assert list(rows) == ["loss_rgb", "acc_rgb", "loss_flow", "acc_flow", "loss_rgb_flow",
                          "acc_rgb_flow", "loss_flow_rgb", "acc_flow_rgb"]
    chance_loss = math.log(1025)  # 6.932
    # steps 101..200: 150 and 200
    assert rows["loss_rgb"]["value"] == pytest.approx((5.0 + 4.0) / 2)
    assert rows["loss_rgb"]["chance"] == pytest.approx(chance_loss)
    assert rows["loss_rgb"]["learnt"] is True  # 4.5 <= 0.9 * 6.932 = 6.239
    assert rows["acc_rgb"]["value"] == pytest.approx(0.175)
    assert rows["acc_rgb"]["chance"] == pytest.approx(1 / 1025)
    assert rows["acc_rgb"]["learnt"] is True
    assert rows["acc_flow"]["learnt"] is False and rows["loss_flow"]["learnt"] is False
    assert rows["loss_rgb_flow"]["learnt"] is False  # below chance, but by less than 10%
    assert rows["loss_flow_rgb"]["learnt"] is True  # 6.0 <= 6.239
    assert rows["acc_flow_rgb"]["learnt"] is True
    # The RGB-only baseline logs one term: only its rows.
    rgb = [{"step": 10, "loss": 5.0, "loss_rgb": 5.0, "acc_rgb": 0.5}]
    only = diagnose(_run(tmp_path / "r", "modist", rgb, ["modist.motion=false"]), "modist")
    assert [r["metric"] for r in only] == ["loss_rgb", "acc_rgb"]


def test_distinit_agreement_is_the_last_measurement_against_one_in_classes(tmp_path):
    lines = [{"step": 10, "loss": 2.9, "loss_t0": 2.9, "agree_t0": 0.1},
             {"step": 10, "holdout_agree_t0": 20.0, "holdout_agree_clip_t0": 22.0,
              "holdout_ceiling_t0": 60.0},
             {"step": 20, "loss": 2.1, "loss_t0": 2.1, "agree_t0": 0.4},
             {"step": 20, "holdout_agree_t0": 40.0, "holdout_agree_clip_t0": 44.0,
              "holdout_ceiling_t0": 61.0}]
    rows = _rows(diagnose(_run(tmp_path / "d", "distinit", lines, heads=[20]), "distinit"))
    assert rows["holdout_agree_t0"] == {"metric": "holdout_agree_t0", "value": 40.0,
                                        "chance": 5.0, "learnt": True}
    assert rows["holdout_agree_clip_t0"]["value"] == 44.0
    assert rows["holdout_ceiling_t0"]["chance"] is None and rows["holdout_ceiling_t0"][
        "learnt"] is None
    assert rows["loss_t0"]["value"] == pytest.approx(2.5)  # both lines: steps within 100
    assert rows["loss_t0"]["chance"] == pytest.approx(math.log(20))  # a uniform student's CE
    assert rows["loss_t0"]["learnt"] is True  # 2.5 <= 0.9 * 2.996


def test_pretext_heads_rspnet_and_auxskd_against_their_chance(tmp_path):
    vspp = [{"step": 5, "loss": 2.0, "acc_speed": 0.30, "acc_segment": 0.5}]
    rows = _rows(diagnose(_run(tmp_path / "v", "vspp", vspp, ["pretext.max_speed=4",
                                                              "pretext.max_segment=2"]), "vspp"))
    assert (rows["acc_speed"]["chance"], rows["acc_speed"]["learnt"]) == (0.25, False)
    assert (rows["acc_segment"]["chance"], rows["acc_segment"]["learnt"]) == (0.5, False)
    vcop = [{"step": 5, "loss": 1.0, "acc_order": 0.5}]
    rows = _rows(diagnose(_run(tmp_path / "c", "vcop", vcop, ["pretext.n_clips=3"]), "vcop"))
    assert rows["acc_order"]["chance"] == pytest.approx(1 / 6) and rows["acc_order"]["learnt"]
    pace = [{"step": 5, "loss": 1.0, "acc_pace": 0.5}]
    rows = _rows(diagnose(_run(tmp_path / "p", "pace", pace, ["pretext.max_pace=4"]), "pace"))
    assert rows["acc_pace"]["chance"] == 0.25
    rsp = [{"step": 5, "loss": 1.0, "acc_rsp": 0.56, "acc_avid": 0.3, "acc_avid_other": 0.2}]
    rows = _rows(diagnose(_run(tmp_path / "s", "rspnet", rsp, ["rspnet.queue=99"]), "rspnet"))
    assert rows["acc_rsp"]["chance"] == 0.5 and rows["acc_rsp"]["learnt"] is True
    assert rows["acc_avid"]["chance"] == pytest.approx(0.01)
    aux = [{"step": 5, "loss": 1.0, "agree_nn": 0.3, "spread": 0.4, "init_left": 0.9},
           {"step": 6, "loss": 1.0, "agree_nn": 0.5, "spread": 0.6, "init_left": 0.8}]
    rows = _rows(diagnose(_run(tmp_path / "a", "auxskd", aux, ["auxskd.queue=64"]), "auxskd"))
    assert rows["agree_nn"]["value"] == pytest.approx(0.4)
    assert rows["agree_nn"]["chance"] == 1 / 64 and rows["agree_nn"]["learnt"] is True
    assert rows["spread"]["value"] == pytest.approx(0.5) and rows["spread"]["learnt"] is True
    assert rows["init_left"]["value"] == 0.8 and rows["init_left"]["learnt"] is None
    assert "momentum" not in rows  # not logged: no row


def test_the_stage_table_over_seeds_is_rendered_under_the_results(tmp_path):
    seeds = [[{"stage": "vspp", "checks": [
        {"metric": "acc_speed", "value": v, "chance": 0.25, "learnt": v >= 0.325},
        {"metric": "init_left", "value": 0.5, "chance": None, "learnt": None}]}]
        for v in (0.6, 0.3)]
    stages = over_seeds(seeds)
    assert stages == [{"stage": "vspp", "metrics": [
        {"metric": "acc_speed", "chance": 0.25, "per_seed": [0.6, 0.3],
         "mean": pytest.approx(0.45), "learnt": 1},
        {"metric": "init_left", "chance": None, "per_seed": [0.5, 0.5], "mean": 0.5,
         "learnt": None}]}]
    table = {"name": "x", "what": "w", "paper": "p", "student": "Res3D", "seeds": [0, 1],
             "seconds": 60.0, "verdicts": [], "rows": [
                 {"variant": "VSPP", "paper": None, "top1": [50.0, 1.0], "stages": stages},
                 {"variant": "scratch", "paper": None, "top1": [40.0, 1.0], "stages": []}]}
    text = tables.markdown(table, "distinit reproduce x")
    assert text.index("| VSPP |") < text.index("### Does each stage do its job?")
    assert "| VSPP | vspp | acc_speed | 0.45 | 0.6, 0.3 | 0.25 | 1 of 2 |" in text
    assert "| | | init_left | 0.5 | 0.5, 0.5 |  |  |" in text
    assert "| scratch | " not in text.split("### Does each stage")[1]
