"""The Slurm scripts (scripts/slurm/): linted; the torchrun line they build trains a tiny run on
this machine; and the signal before the time limit stops the run with a checkpoint, after which
the job requeues itself and the same command continues the run. Slurm is stood in
for by stub `srun`, `scancel` and `scontrol` first on PATH, which record their arguments
(docs/RUNS.md, "Many machines")."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import SMALL

from distinit.cli import main
from distinit.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "scripts" / "slurm"
SCRIPTS = sorted(p for p in SLURM.iterdir() if p.suffix in (".sh", ".sbatch"))
JOB = "4242"

# Stand-ins for Slurm's commands. srun: "fake" records the line launch.sh builds (dry run) and
# runs until SIGTERM; "real" runs its one task here (one node), as slurmd would; "exit:N" is a
# step that ends by itself. scancel delivers the signal to the step, as slurmstepd does.
STUBS = {
    "srun": """#!/usr/bin/env bash
echo "srun $*" >> "$STUB_LOG"
while [ "${1#-}" != "$1" ]; do shift; done  # srun's own options
echo $$ > "$STUB_DIR/step.pid"
export SLURM_NODEID=0
case "$STUB_MODE" in
    real) exec "$@" ;;
    exit:*) exit "${STUB_MODE#exit:}" ;;
esac
echo "line $(DISTINIT_SLURM_DRYRUN=1 "$@")" >> "$STUB_LOG"
trap 'echo "step got TERM" >> "$STUB_LOG"; exit 143' TERM
while :; do sleep 0.05; done
""",
    "scancel": """#!/usr/bin/env bash
echo "scancel $*" >> "$STUB_LOG"
kill -s "${1#--signal=}" "$(cat "$STUB_DIR/step.pid")"
""",
    "scontrol": """#!/usr/bin/env bash
echo "scontrol $*" >> "$STUB_LOG"
if [ "$1 $2" = "show hostnames" ]; then printf '%s\\n' $STUB_HOSTS; fi
""",
}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_slurm_script_parses_and_passes_shellcheck(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup.sh full installs it)")
    lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def _launch(*argv, **env):
    """launch.sh's dry run: the command line, or its one-line error."""
    proc = subprocess.run([str(SLURM / "launch.sh"), *argv], capture_output=True, text=True,
                          env={**os.environ, "DISTINIT_SLURM_DRYRUN": "1", **env})
    return proc.returncode, shlex.split(proc.stdout), proc.stderr


def test_launch_builds_torchrun_for_distributed_commands_and_one_process_for_the_rest():
    rc, line, _ = _launch("pretrain", "rspnet", "r.yaml", "out_dir=o", SLURM_NNODES="3",
                          SLURM_GPUS_ON_NODE="4", DISTINIT_RDZV_HOST="n1",
                          DISTINIT_RDZV_PORT="29999", SLURM_JOB_ID="77", DISTINIT_PYTHON="py")
    assert rc == 0 and line == [
        "py", "-m", "torch.distributed.run", "--nnodes=3", "--nproc-per-node=4",
        "--rdzv-backend=c10d", "--rdzv-endpoint=n1:29999", "--rdzv-id=77", "-m", "distinit.cli",
        "pretrain", "rspnet", "r.yaml", "out_dir=o", "--resume", "auto"]
    # continues by itself: no --resume; builds the store, so it never reads a staged copy
    _, line, _ = _launch("store-clips", "c.yaml", DISTINIT_STAGE_TO="/local/cache")
    assert "torch.distributed.run" in line and line[-3:] == ["distinit.cli", "store-clips",
                                                               "c.yaml"]
    _, line, _ = _launch("finetune", "f.yaml", "--resume")  # said already: not twice
    assert line.count("--resume") == 1 and "auto" not in line
    # flow: one process per node (its --workers use the node's cores), the videos split by rank
    _, line, _ = _launch("flow", "videos", "flows", DISTINIT_PYTHON="py", GPUS_PER_NODE="4")
    assert line[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc-per-node=1" in line
    assert line[-3:] == ["flow", "videos", "flows"] and "--resume" not in line
    _, line, _ = _launch("chain", "c.yaml", DISTINIT_PYTHON="py")
    assert line == ["py", "-m", "distinit.cli", "chain", "c.yaml"]
    assert _launch("chain", "c.yaml", SLURM_NODEID="1")[:2] == (0, [])  # first node only
    rc, line, err = _launch("distill", "data.cache_dir=/nowhere", DISTINIT_STAGE_TO="/local")
    assert rc == 2 and not line and err.strip().splitlines() == [
        "launch.sh: error: data.cache_dir /nowhere does not exist; build its clip store first "
        "(distinit store-clips with the same config), then submit again"]
    rc, line, err = _launch("distill", "d.yaml", "--overwrite")
    assert rc == 2 and not line and len(err.strip().splitlines()) == 1
    assert "--overwrite in a job that is requeued would delete the run again" in err


def _stubs(tmp_path, mode, hosts="node01 node02"):
    stub_dir = tmp_path / "stubs"
    stub_dir.mkdir()
    for name, text in STUBS.items():
        (stub_dir / name).write_text(text)
        (stub_dir / name).chmod(0o755)
    log = tmp_path / "slurm.log"
    log.touch()
    return log, {"PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log),
                 "STUB_DIR": str(stub_dir), "STUB_MODE": mode, "STUB_HOSTS": hosts}


def _sbatch(argv, env, tmp_path):
    """The batch script as slurmd starts it on the first node of the job; its output goes to
    files (as Slurm's does), so a chatty run never blocks on a full pipe."""
    tmp_path.mkdir(exist_ok=True)
    env = {**os.environ, "SLURM_JOB_ID": JOB, "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_SUBMIT_DIR": str(REPO), **env}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(["bash", str(SLURM / "distinit.sbatch"), *argv], env=env,
                                stdout=out, stderr=err, start_new_session=True)
    proc.err_file = tmp_path / "err.txt"
    return proc


def _wait_for(check, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not check() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert check(), proc.err_file.read_text()[-3000:]


def _finish(proc, seconds=300) -> str:
    """Wait for the batch script; its stderr."""
    try:
        proc.wait(timeout=seconds)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.err_file.read_text()


def test_the_sbatch_header_asks_for_a_signal_before_the_time_limit_and_a_requeue():
    header = [line.split()[1] for line in (SLURM / "distinit.sbatch").read_text().splitlines()
              if line.startswith("#SBATCH")]
    assert "--requeue" in header and "--ntasks-per-node=1" in header
    signal_opt = next(h for h in header if h.startswith("--signal="))
    # USR1, not TERM: scancel sends TERM, and a cancelled job must not requeue itself
    assert signal_opt.startswith("--signal=B:USR1@") and int(signal_opt.split("@")[1]) >= 60


def test_the_warning_before_the_time_limit_stops_the_step_then_the_job_requeues(tmp_path):
    log, env = _stubs(tmp_path, "fake")
    proc = _sbatch(["distill", "configs/x.yaml", "out_dir=runs/x"],
                   {**env, "SLURM_GPUS_ON_NODE": "8", "DISTINIT_PYTHON": "python3"}, tmp_path)
    _wait_for(lambda: "line " in log.read_text(), proc)
    proc.send_signal(signal.SIGUSR1)  # --signal=B:USR1@120: to the batch shell only
    err = _finish(proc, 60)
    lines = log.read_text().splitlines()
    assert lines[0] == "scontrol show hostnames node[01-02]"
    assert lines[1].startswith("srun --nodes=2 --ntasks-per-node=1 ")
    assert lines[1].endswith("/scripts/slurm/launch.sh distill configs/x.yaml out_dir=runs/x")
    assert shlex.split(lines[2])[1:] == [
        "python3", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=8",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=node01:{20000 + int(JOB)}", f"--rdzv-id={JOB}",
        "-m", "distinit.cli", "distill", "configs/x.yaml", "out_dir=runs/x", "--resume", "auto"]
    assert lines[3:] == [f"scancel --signal=TERM {JOB}", "step got TERM",
                         f"scontrol requeue {JOB}"]
    assert proc.returncode == 143, err  # the step's status
    assert "the time limit is near" in err and f"requeueing job {JOB}" in err


def test_sigterm_from_scancel_stops_the_step_and_the_job_stays_cancelled(tmp_path):
    log, env = _stubs(tmp_path, "fake")
    proc = _sbatch(["distill", "configs/x.yaml"], env, tmp_path)
    _wait_for(lambda: "line " in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc, 60)
    assert log.read_text().splitlines()[3:] == [f"scancel --signal=TERM {JOB}", "step got TERM"]
    assert proc.returncode == 143 and "the job is not requeued" in err, err


@pytest.mark.parametrize("status", [0, 3])
def test_a_run_that_ends_by_itself_is_not_requeued(tmp_path, status):
    log, env = _stubs(tmp_path, f"exit:{status}")
    proc = _sbatch(["finetune", "configs/f.yaml"], env, tmp_path)
    err = _finish(proc, 60)
    assert proc.returncode == status, err
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["scontrol", "srun"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_torchrun_line_trains_stops_before_the_limit_and_the_requeued_job_continues(
        world, teacher_file, tmp_path):
    """One node, two gloo processes on CPU, through distinit.sbatch and launch.sh as Slurm would
    run them (srun runs its one task here), with the clip store staged to "local disk"."""
    shared, local, out = tmp_path / "shared", tmp_path / "local", tmp_path / "run"
    data = [*SMALL, "precision=fp32", "channels_last=off", "data.cache=store",
            f"data.cache_dir={shared}", f"data.videos={world.corpus_dir}"]
    assert main(["store-clips", *data]) == 0  # built once, on the shared file system
    argv = ["distill", *data, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            "optim.epochs=60", f"out_dir={out}"]
    log, env = _stubs(tmp_path, "real", hosts="127.0.0.1")
    env.update(SLURM_NNODES="1", GPUS_PER_NODE="2", DISTINIT_RDZV_PORT=str(_free_port()),
               DISTINIT_STAGE_TO=str(local), DISTINIT_PYTHON=sys.executable,
               OMP_NUM_THREADS="1")

    first = _sbatch(argv, env, tmp_path / "first")
    _wait_for(lambda: (out / "metrics.jsonl").is_file(), first, seconds=300)
    first.send_signal(signal.SIGUSR1)  # the time limit is near
    err = _finish(first)
    assert "stopped by SIGTERM at step" in err, err[-3000:]
    assert f"copying {shared} to {local}" in err
    assert log.read_text().splitlines()[-1] == f"scontrol requeue {JOB}"
    stopped_at = load_checkpoint(out / "last.pt")["step"]
    assert 1 <= stopped_at < 60

    again = _sbatch(argv, {**env, "SLURM_RESTART_COUNT": "1"}, tmp_path / "again")  # requeued
    err = _finish(again)
    assert again.returncode == 0, err[-3000:]
    assert log.read_text().count("requeue") == 1 and "copying" not in err  # staged once
    assert load_checkpoint(out / "last.pt")["step"] == 60
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, 61)) and steps == sorted(steps)
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["cache_dir"] == str(local)
