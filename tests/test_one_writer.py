"""One writer per run folder, checkpoints on full and read-only disks, chains killed before a
stage's first checkpoint, and `eval` on a pretraining checkpoint: each a case a user or a
scheduler causes, each one line and nothing lost (docs/RUNS.md)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_bad_inputs import SMALL
from toy import ToyClips, can_mount_tmpfs, toy_net

from distinit.cli import main
from distinit.config import load_config
from distinit.engine import lock
from distinit.engine.checkpoint import load_checkpoint, save_checkpoint
from distinit.engine.train import train
from distinit.errors import UserError
from distinit.methods.supervised import Supervised

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
TOY = ["precision=fp32", "channels_last=off", "data.num_workers=0", "optim.epochs=2",
       "optim.batch_size=8", "log_every=1", "ckpt_every=100"]


def _distill_args(world, teacher_file, out, *extra):
    return ["distill", *SMALL, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            f"data.videos={world.corpus_dir}", f"out_dir={out}", *extra]


def _start(argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "distinit.cli", *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


def _wait_for(check, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not check() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert check(), proc.communicate(timeout=60) if proc.poll() is not None else "timed out"


def _holder_pid(folder: Path) -> int | None:
    return lock.holder(folder).get("pid")


def test_a_second_process_into_a_running_folder_gets_one_line_and_changes_nothing(
        world, teacher_file, tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(_distill_args(world, teacher_file, out, "optim.epochs=200", "seed=0"))
    try:
        _wait_for(lambda: (out / "metrics.jsonl").is_file(), first)
        assert _holder_pid(out) == first.pid
        # The same job launched again (a requeue), with another seed.
        assert main(_distill_args(world, teacher_file, out, "optim.epochs=200", "seed=1")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use: pid {first.pid} on " in err[0], err
        assert "choose another out_dir=" in err[0]
        os.killpg(first.pid, signal.SIGTERM)  # the first stops cleanly at a step
        _, first_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 143, first_err
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(1) == 1  # one run's lines, not two interleaved


def test_a_killed_holder_never_strands_its_folder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from distinit.engine import run_dir\n"
         "with run_dir.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
         str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid} .*is writing its run"):
        _toy_run(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    _toy_run(tmp_path)  # the OS released the lock with the process
    assert (tmp_path / "last.pt").is_file() and not lock.held(tmp_path)


def test_reproduce_into_a_folder_another_reproduce_holds_is_refused(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from distinit.engine import run_dir\n"
         "with run_dir.hold(sys.argv[1], 'experiment'):\n    print('held', flush=True); "
         "time.sleep(600)", str(tmp_path / "r")], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["reproduce", "schedule", f"out_dir={tmp_path / 'r'}", "--doc", ""]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "experiment" in err[0]
        assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [lock.LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def _toy_run(out, *extra, resume=False):
    cfg = load_config(None, [*TOY, f"out_dir={out}", *extra])
    train(cfg, Supervised(toy_net()), ToyClips(), resume=resume)


def test_a_checkpoint_into_a_full_device_keeps_the_previous_one(tmp_path):
    """A real ENOSPC without a mount: the temporary file is a link to /dev/full."""
    _toy_run(tmp_path, "stop_after=2")
    before = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(UserError) as e:
        save_checkpoint({"x": torch.zeros(100_000)}, tmp_path / "last.pt")
    assert "cannot write checkpoint" in str(e.value) and "the previous checkpoint is intact" \
        in str(e.value)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not (tmp_path / "last.pt.tmp").exists() and not (tmp_path / "last.pt.tmp").is_symlink()


needs_mount = pytest.mark.skipif(not can_mount_tmpfs(), reason="this machine does not let a process "
                                 "mount a tmpfs in its own namespace (unshare --user --mount)")


def _in_tmpfs(tmp_path: Path, size_kb: int, script: str) -> tuple[int, str, Path]:
    """Run `script` (sh) with a fresh tmpfs of `size_kb` mounted at `tmp_path/mnt` (also $T), in
    a private mount namespace; afterwards its files are copied to the returned folder (the mount
    is gone)."""
    mnt, saved = tmp_path / "mnt", tmp_path / "saved"
    mnt.mkdir()
    saved.mkdir()
    wrapped = (f"mount -t tmpfs -o size={size_kb}k tmpfs {mnt} && T={mnt} && export T && "
               f"( {script} ) 2>{tmp_path}/err; echo $? >{tmp_path}/rc; cp -a {mnt}/. {saved}/")
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", wrapped],
                   env=ENV, check=True, timeout=600)
    return int((tmp_path / "rc").read_text()), (tmp_path / "err").read_text(), saved


@needs_mount
def test_a_run_on_a_disk_that_fills_stops_with_one_line_and_keeps_its_checkpoint(
        world, teacher_file, tmp_path):
    # How big one checkpoint of this run is, measured by a run on the ordinary disk.
    args = _distill_args(world, teacher_file, tmp_path / "mnt" / "run", "ckpt_every=2",
                         "optim.epochs=3", "stop_after=2")
    probe = tmp_path / "probe"
    assert main([*_distill_args(world, teacher_file, probe, "stop_after=2")]) == 0
    size_kb = (probe / "last.pt").stat().st_size // 1024
    # Room for one checkpoint and the logs, not for a second one beside it.
    run = shlex.join([sys.executable, "-m", "distinit.cli", *args])
    resume = run.replace("stop_after=2", "stop_after=0") + " --resume"
    code, err, saved = _in_tmpfs(tmp_path, int(size_kb * 1.6) + 200,
                                 f"{run} >/dev/null 2>&1 && {resume} >/dev/null")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "cannot write checkpoint" in lines[0] and "the previous checkpoint is intact" in lines[0]
    assert "most likely full" in lines[0] and "--resume" in lines[0]
    assert load_checkpoint(saved / "run" / "last.pt")["step"] == 2  # the previous one, whole
    assert [p.name for p in (saved / "run").iterdir() if p.name.endswith(".tmp")] == []


@needs_mount
def test_resuming_in_a_read_only_folder_is_one_line(world, teacher_file, tmp_path):
    args = _distill_args(world, teacher_file, tmp_path / "mnt" / "run", "stop_after=2")
    run = shlex.join([sys.executable, "-m", "distinit.cli", *args])
    code, err, saved = _in_tmpfs(tmp_path, 20_000, f"{run} >/dev/null 2>&1 && mount -o "
                                 f"remount,ro $T && {run} --resume >/dev/null")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Read-only file system" in lines[0] and "out_dir" in lines[0]
    assert load_checkpoint(saved / "run" / "last.pt")["step"] == 2


def _chain(tmp_path, world, name, second_config="configs/demo/finetune.yaml"):
    chain = {"out_dir": str(tmp_path / name),
             "all": [*SMALL, "ckpt_every=1000", "optim.epochs=3",
                     f"data.cache_dir={tmp_path / 'cache'}"],
             "stages": [
                 {"name": "vspp", "method": "vspp", "config": "configs/demo/vspp.yaml",
                  "overrides": [f"data.videos={world.corpus_dir}"]},
                 {"name": "finetune", "method": "finetune", "config": second_config,
                  "overrides": ["data.format=hmdb51", f"data.video_root={world.actions_videos}",
                                f"data.split_dir={world.actions_splits}"]}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(chain))
    return path


@pytest.mark.slow
def test_a_chain_killed_before_a_stages_first_checkpoint_runs_again(world, tmp_path):
    path = _chain(tmp_path, world, "c")
    metrics = tmp_path / "c" / "vspp" / "metrics.jsonl"
    proc = _start(["chain", str(path)])
    _wait_for(metrics.is_file, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 before the stage's first checkpoint
    proc.wait(timeout=60)
    assert not (tmp_path / "c" / "vspp" / "last.pt").exists()
    assert main(["chain", str(path)]) == 0
    state = load_checkpoint(tmp_path / "c" / "vspp" / "last.pt")
    assert state["step"] == state["total_steps"]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, state["step"] + 1)) and steps == sorted(steps)
    assert (tmp_path / "c" / "finetune" / "results.json").is_file()


def test_a_chain_with_a_missing_later_config_trains_nothing(world, tmp_path, capsys):
    path = _chain(tmp_path, world, "c", second_config=str(tmp_path / "nope.yaml"))
    assert main(["chain", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config file not found" in err[0] and "nope.yaml" in err[0]
    assert not (tmp_path / "c" / "vspp").exists()


def test_eval_of_a_pretraining_checkpoint_says_fine_tune_it_first(world, teacher_file,
                                                                  labeled, tmp_path, capsys):
    assert main(_distill_args(world, teacher_file, tmp_path / "d", "stop_after=1")) == 0
    capsys.readouterr()
    weights = tmp_path / "d" / "last.pt"
    assert main(["eval", *SMALL, *labeled, f"model.weights={weights}",
                 f"out_dir={tmp_path / 'e'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a pretraining checkpoint (written by distinit)" in err[0]
    assert "fine-tune it first" in err[0]
    assert not (tmp_path / "e" / "results.json").exists()


def test_results_onto_a_full_device_are_one_line_and_leave_no_half_file(labeled, tmp_path,
                                                                        capsys):
    assert main(["finetune", *SMALL, *labeled, f"out_dir={tmp_path / 'f'}"]) == 0
    out = tmp_path / "e"
    out.mkdir()
    (out / "results.json.tmp").symlink_to("/dev/full")  # a real ENOSPC on the write
    capsys.readouterr()
    assert main(["eval", *SMALL, *labeled, f"model.weights={tmp_path / 'f' / 'last.pt'}",
                 f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert not (out / "results.json").exists() and not (out / "results.json.tmp").is_symlink()
    assert main(["eval", *SMALL, *labeled, f"model.weights={tmp_path / 'f' / 'last.pt'}",
                 f"out_dir={out}"]) == 0  # run again once there is room: nothing to overwrite


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "folder", "fifo"])
def test_a_lock_path_that_is_not_a_regular_file_is_refused_and_nothing_written_through_it(
        labeled, tmp_path, capsys, kind):
    out, target = tmp_path / "run", tmp_path / "precious.txt"
    out.mkdir()
    path = out / lock.LOCK_FILE
    if kind == "symlink":  # a planted link: the run would truncate and overwrite its target
        target.write_bytes(b"precious\x00bytes\n")
        path.symlink_to(target)
    elif kind == "dangling symlink":  # ... or create it
        path.symlink_to(target)
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it would wait for a writer
    assert main(["finetune", *SMALL, *labeled, f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    what = {"symlink": f"a symbolic link (to {target})", "dangling symlink":
            f"a symbolic link (to {target})", "folder": "a folder",
            "fifo": "a named pipe (FIFO)"}[kind]
    assert err == [f"distinit finetune: error: {path} is {what}, not a lock file, so distinit "
                   "writes nothing through it: remove it and run the same command again"]
    if kind == "symlink":
        assert target.read_bytes() == b"precious\x00bytes\n"
    else:
        assert not target.exists()
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_FILE]  # nothing else written
    assert not lock.held(out)
