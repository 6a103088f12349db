"""A tiny distill -> finetune -> eval -> extract-features run through the CLI, in-process."""

import json

import numpy as np
import pytest
import torch

from distinit.cli import main

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=0",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


def test_distill_finetune_eval_extract(world, teacher_file, tmp_path, capsys, labeled):
    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    assert main(["distill", *SMALL, teachers, f"data.videos={world.corpus_dir}",
                 f"out_dir={tmp_path / 'distill'}"]) == 0
    distilled = tmp_path / "distill" / "last.pt"
    assert distilled.is_file() and (tmp_path / "distill" / "config.yaml").is_file()
    lines = [json.loads(line) for line in
             (tmp_path / "distill" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert {"loss", "loss_t0", "dropped_t0", "lr", "samples_per_s"} <= set(steps[-1])
    # After each epoch: agreement with the teacher on the held-out corpus videos.
    assert {"holdout_agree_t0", "holdout_loss_t0"} <= set(lines[-1])

    assert main(["finetune", *SMALL, *labeled, "model.init=checkpoint",
                 f"model.weights={distilled}", f"out_dir={tmp_path / 'ft'}"]) == 0
    result = json.loads((tmp_path / "ft" / "results.json").read_text())
    n_test = len(world.action_classes)  # tiny world: one test video per action
    assert result["videos"] == n_test and result["clips"] == 2 * n_test
    assert 0 <= result["top1"] <= result["top5"] <= 100

    capsys.readouterr()
    assert main(["eval", *SMALL, *labeled, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'eval'}"]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["top1"] == pytest.approx(result["top1"]) and again["clip_acc"] == pytest.approx(
        result["clip_acc"])

    out = tmp_path / "feats.npz"
    assert main(["extract-features", *SMALL, f"data.videos={world.actions_videos}",
                 f"model.weights={distilled}", "--out", str(out)]) == 0
    feats = np.load(out)
    assert feats["features"].shape == (len(world.action_classes) * 3, 64)  # 8 * 8 channels
    assert np.isfinite(feats["features"]).all()


def test_finetune_all_splits_reports_the_mean(world, tmp_path, labeled):
    assert main(["finetune", *SMALL, *labeled, "--splits", "1,2,3",
                 f"out_dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    tops = [summary["splits"][s]["top1"] for s in ("1", "2", "3")]
    assert summary["mean"]["top1"] == pytest.approx(sum(tops) / 3)


def test_user_errors_are_one_line_not_a_traceback(world, teacher_file, tmp_path, capsys, labeled):
    assert main(["distill", *SMALL, "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "valid keys" in err and "Traceback" not in err

    missing = tmp_path / "nope.pt"
    assert main(["distill", *SMALL, f"data.videos={world.corpus_dir}",
                 f'distill.teachers=[{{spec: "ckpt:{missing}", arch: resnet_tiny}}]',
                 f"out_dir={tmp_path / 'd'}"]) == 2
    assert str(missing) in capsys.readouterr().err

    # a checkpoint fine-tuned for 8 classes evaluated against a 3-class CSV dataset
    assert main(["finetune", *SMALL, *labeled, f"out_dir={tmp_path / 'ft'}"]) == 0
    videos = sorted(world.actions_videos.rglob("*.mp4"))[:6]
    csv = tmp_path / "three.csv"
    csv.write_text("".join(f"{v},{i % 3}\n" for i, v in enumerate(videos)))
    assert main(["eval", *SMALL, "data.format=csv", f"data.split_dir={csv}",
                 f"model.weights={tmp_path / 'ft' / 'last.pt'}", f"out_dir={tmp_path / 'e'}"]) == 2
    err = capsys.readouterr().err
    assert "8 classes" in err and "has 3" in err


def test_linear_probe_trains_only_the_head(world, tmp_path, labeled):
    from distinit.build import make_student
    from distinit.config import load_config

    cfg = load_config(None, SMALL)
    start = make_student(cfg.model, num_classes=len(world.action_classes)).state_dict()
    torch.save({"model": start}, tmp_path / "start.pt")
    assert main(["finetune", *SMALL, *labeled, "model.linear_probe=true",
                 "model.init=checkpoint", f"model.weights={tmp_path / 'start.pt'}",
                 "optim.lr=0.1", f"out_dir={tmp_path / 'probe'}"]) == 0
    end = torch.load(tmp_path / "probe" / "last.pt", weights_only=True)["model"]
    for k, v in start.items():
        if k.startswith("fc."):
            assert not torch.equal(v, end[k]), k  # the new head trained
        else:
            assert torch.equal(v, end[k]), k  # backbone and its BN statistics frozen


@pytest.mark.parametrize("argv", [["cache-targets", "x.yaml", "--batch", "1e8"],
                                  ["distill", "--no-such-flag"],
                                  ["check-videos"],
                                  ["flow", "a", "b", "--method", "magic"]])
def test_a_bad_argument_is_one_line_naming_help(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"distinit {argv[0]}: error: "), err
    assert f"distinit {argv[0]} --help" in err and "usage:" not in err


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache-targets", "--help"])
    assert exit_info.value.code == 0 and "--batch" in capsys.readouterr().out


@pytest.mark.parametrize(("command", "said"), [("distill", "continue with --resume"),
                                               ("check-videos", "files already written"),
                                               ("demo", "run the same command again")])
def test_ctrl_c_outside_training_says_what_the_command_can_continue_from(command, said, capsys,
                                                                          monkeypatch):
    import distinit.cli as cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert main([command]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err
    assert ("--resume" in err) == (command == "distill")


@pytest.mark.parametrize("command", ["distill", "finetune", "demo", "reproduce", "chain",
                                     "real-demo"])
def test_a_run_stopped_by_a_signal_says_what_this_command_accepts(command, capsys, monkeypatch):
    """The training loop's stop line is the same for every command that runs it (a demo with
    jobs=1 runs its stages in process); only `distinit.cli` knows which command that was, so it
    adds what to do next: `--resume`, or the same command again for those refusing `--resume`."""
    import types

    import distinit.cli as cli
    from distinit.engine.interrupt import Interrupted

    def stopped(argv):
        raise Interrupted("stopped by SIGTERM at step 3/10; checkpoint written to run/last.pt", 15)

    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: types.SimpleNamespace(main=stopped))
    assert main([command]) == 143
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"distinit {command}: error: stopped by SIGTERM at step 3/10; "
                                f"checkpoint written to run/last.pt; {cli.RESUMABLE[command]}"]
    assert ("--resume" in err) == (command in ("distill", "finetune"))
