"""The evaluation protocol: `data.test_crops=3` scores each of the `data.num_test_clips` clips
through three spatial crops, and the result says which protocol it used."""

import json

from test_bad_inputs import SMALL

from distinit.cli import main


def test_three_crops_score_three_times_the_clips_and_say_so(labeled, tmp_path):
    assert main(["finetune", *SMALL, *labeled, f"out_dir={tmp_path / 'ft'}"]) == 0
    results = {}
    for crops in (1, 3):
        out = tmp_path / f"eval{crops}"
        assert main(["eval", *SMALL, *labeled, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                     f"data.test_crops={crops}", f"out_dir={out}"]) == 0
        results[crops] = json.loads((out / "results.json").read_text())
    one, three = results[1], results[3]
    assert three["videos"] == one["videos"] > 0
    assert three["clips"] == 3 * one["clips"] == 3 * 2 * one["videos"]  # num_test_clips=2
    assert one["test_protocol"] == "2 clips x centre crop"
    assert three["test_protocol"] == "2 clips x 3 crops"
    assert 0 <= three["top1"] <= 100
