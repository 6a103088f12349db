"""Stages side by side (`experiments/parallel.py`): the same numbers as one after another, one
line when a stage fails, signals passed on once, and no stage outliving its parent."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distinit.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = ["size=tiny", "all=[model.width=8, data.num_test_clips=2, optim.epochs=1, "
        "optim.batch_size=4]", "teacher=[model.width=8]", "figures=false"]


def _stage_pids(root: Path) -> list[int]:
    """Live stage processes whose spec lies under `root`."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"distinit.experiments.parallel" in cmd and str(root).encode() in b" ".join(cmd) \
                and state != "Z":
            pids.append(int(p.name))
    return pids


@pytest.mark.slow
def test_stages_side_by_side_give_the_numbers_of_stages_in_turn(tmp_path, capsys):
    rows = "rows=[res3d_scratch,res3d_inflated]"
    assert main(["demo", f"out_dir={tmp_path / 'side'}", *FAST, rows, "jobs=2"]) == 0
    out = capsys.readouterr().out
    assert "teacher: started" in out and "inflation_source: started" in out
    assert (tmp_path / "side" / "logs" / "teacher.log").is_file()
    assert main(["demo", f"out_dir={tmp_path / 'turn'}", *FAST, rows, "jobs=1",
                 "threads=1"]) == 0
    side = json.loads((tmp_path / "side" / "table1.json").read_text())
    turn = json.loads((tmp_path / "turn" / "table1.json").read_text())
    assert side["rows"] == turn["rows"] and side["stats"] == turn["stats"]
    assert side["jobs"] == 2 and turn["jobs"] == 1


def test_a_failing_stage_is_one_line_naming_it_and_its_log(tmp_path, capsys):
    assert main(["demo", f"out_dir={tmp_path / 'd'}", *FAST, "rows=[res3d_scratch]", "jobs=2",
                 "finetune=[data.resize=0, data.crop=500]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "/seed0/finetune stopped: " in err[0] and "data.crop" in err[0]
    assert "logs/runs~" in err[0] and "~seed0~finetune.log" in err[0]


@pytest.mark.slow
def test_sigterm_is_passed_on_once_and_the_command_run_again_finishes(tmp_path):
    out = tmp_path / "d"
    argv = [sys.executable, "-m", "distinit.cli", "demo", f"out_dir={out}", *FAST,
            "rows=[res3d_scratch]", "jobs=2", "teacher=[model.width=8, optim.epochs=30]"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = out / "shared" / "teacher" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not metrics.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # to the parent only, as a scheduler may
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "teacher" in lines[0], err
    assert _stage_pids(tmp_path) == []
    assert (out / "shared" / "teacher" / "last.pt").is_file()  # the stage wrote its checkpoint
    assert main(["demo", f"out_dir={out}", *FAST, "rows=[res3d_scratch]", "jobs=2",
                 "teacher=[model.width=8, optim.epochs=30]"]) == 0


def test_kill_9_of_the_parent_takes_the_stages_along(tmp_path):
    out = tmp_path / "d"
    argv = [sys.executable, "-m", "distinit.cli", "demo", f"out_dir={out}", *FAST,
            "rows=[res3d_scratch]", "jobs=2", "teacher=[model.width=8, optim.epochs=30]"]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _stage_pids(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stage_pids(tmp_path)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _stage_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stage_pids(tmp_path) == []


def test_a_stage_killed_by_a_signal_says_which_and_what_it_usually_means(tmp_path):
    """The kernel's out-of-memory killer sends SIGKILL: the stage's log then ends on a progress
    line, which used to be reported as if it were the error."""
    import types

    import pytest

    from distinit.errors import UserError
    from distinit.experiments import parallel

    log = tmp_path / "distill.log"
    log.write_text("[distill] step 3/10 epoch 0 loss 2.3026 41.0 samples/s\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(UserError) as info:
        parallel._collect(proc, types.SimpleNamespace(name="distill"), log, tmp_path, {})
    said = str(info.value)
    assert said.startswith("stage distill was killed by SIGKILL (signal 9), most often the "
                           "kernel's out-of-memory killer") and str(log) in said
    assert "step 3/10" not in said and not isinstance(info.value, parallel.Interrupted)
