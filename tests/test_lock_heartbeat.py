"""The folder lock on file systems where `flock` does not exclude other machines (NFS with
local locks, Lustre without `-o flock`): the holder's record is a lease kept fresh by a
heartbeat, so a second writer is refused while the holder lives and beats, and takes a folder
over once the heartbeat stops (docs/RUNS.md, "Many machines"). flock is made to always succeed
here, as it does on such a file system for a process on another machine, or to fail as it does
where the file system has no locks."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distinit.engine import lock, run_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")
BEAT = 0.2  # seconds between heartbeats here; stale after 3 of them
HOLD = ("import sys, time; from distinit.engine import run_dir\n"
        "with run_dir.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)")


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert not _beats() and not lock._held  # every heartbeat stopped, every lock let go


def _no_lock(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


@pytest.fixture(params=["local only", "none"])
def no_flock(request, monkeypatch):
    """A file system whose flock excludes no other machine (NFS `local_lock=flock`, Lustre
    `localflock`: it always succeeds for a process there), or that has no locks at all (NFSv3
    without a lock daemon, Lustre `noflock`: it fails)."""
    flock = (lambda fd, operation: None) if request.param == "local only" else _no_lock
    monkeypatch.setattr(lock.fcntl, "flock", flock)
    monkeypatch.setenv("DISTINIT_LOCK_HEARTBEAT", str(BEAT))


@pytest.fixture
def holder_process(tmp_path):
    """A process of this host holding `tmp_path/run` with a heartbeat every BEAT seconds."""
    env = {**os.environ, "PYTHONPATH": SRC, "DISTINIT_LOCK_HEARTBEAT": str(BEAT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _beats():
    return [t for t in threading.enumerate() if t.name == "distinit-lock-heartbeat"]


def _record(folder: Path, **fields) -> None:
    info = {"pid": 4242, "host": "node-b", "command": ["distinit", "distill", "x.yaml"],
            "since": time.time(), "beat": time.time(), "every": BEAT, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "record.tmp"  # whole, as the holder's in-place rewrite is
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / lock.LOCK_FILE)


def test_a_live_holder_is_refused_although_flock_lets_it_through_then_taken_when_it_stops(
        tmp_path, no_flock, holder_process, capsys):
    folder = tmp_path / "run"
    first = lock.holder(folder)["beat"]
    time.sleep(3 * BEAT)
    assert lock.holder(folder)["beat"] > first  # it beats
    with pytest.raises(lock.FolderInUse) as e:
        run_dir.hold(folder).__enter__()
    message = str(e.value)  # the line a second writer gets where flock works
    assert message.startswith(f"{folder} is in use: pid {holder_process.pid} on ")
    assert message.endswith("is writing its run; wait for it to finish or stop it, or choose "
                            "another out_dir=")
    assert not lock.held(folder)

    os.kill(holder_process.pid, signal.SIGSTOP)  # alive, but no longer beating
    try:
        time.sleep(4 * BEAT)
        with run_dir.hold(folder):
            assert lock.holder(folder)["pid"] == os.getpid()
    finally:
        os.kill(holder_process.pid, signal.SIGCONT)
    err = capsys.readouterr().err
    assert f"was held by pid {holder_process.pid} on " in err and "taking it over" in err
    assert not _beats()


def test_a_killed_holder_on_this_host_is_taken_at_once_as_with_flock(
        tmp_path, no_flock, holder_process, capsys):
    holder_process.kill()
    holder_process.wait(timeout=30)
    with run_dir.hold(tmp_path / "run"):  # its heartbeat is fresh, but its pid is gone
        pass
    assert capsys.readouterr().err == ""


def test_another_hosts_fresh_heartbeat_holds_the_folder_and_a_stale_one_is_taken_over(
        tmp_path, no_flock, capsys):
    folder = tmp_path / "run"
    _record(folder)
    with pytest.raises(lock.FolderInUse, match="in use: pid 4242 on node-b .*distinit distill"):
        run_dir.hold(folder).__enter__()
    _record(folder, beat=time.time() - 3 * BEAT - 0.01)  # three heartbeats missed
    with run_dir.hold(folder):
        pass
    assert "was held by pid 4242 on node-b" in capsys.readouterr().err
    _record(folder, released=time.time())  # let go cleanly: no note
    with run_dir.hold(folder):
        pass
    assert capsys.readouterr().err == ""


def test_a_requeued_slurm_job_takes_over_from_its_own_earlier_run(tmp_path, no_flock,
                                                                   monkeypatch, capsys):
    """Slurm ends every process of a job before it requeues it, so a fresh heartbeat of the
    same job's earlier run (on another node) is no live holder."""
    folder = tmp_path / "run"
    _record(folder, slurm_job="777", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with run_dir.hold(folder):
        assert lock.holder(folder)["slurm_restart"] == 1
    monkeypatch.setenv("SLURM_JOB_ID", "778")  # another job: refused
    _record(folder, slurm_job="777", slurm_restart=0)
    with pytest.raises(lock.FolderInUse):
        run_dir.hold(folder).__enter__()
    assert capsys.readouterr().err == ""


def test_a_waiting_writer_waits_for_the_record_to_be_released(tmp_path, no_flock, capsys):
    """A run that needs a store another machine builds waits for it, as it does on flock."""
    folder = tmp_path / "store"

    def other_host_builds_then_lets_go():
        for _ in range(5):
            _record(folder)
            time.sleep(BEAT)
        _record(folder, released=time.time())

    _record(folder)
    other = threading.Thread(target=other_host_builds_then_lets_go)
    other.start()
    t0 = time.monotonic()
    try:
        with lock.hold(folder, "clip store", "elsewhere", wait=True):
            assert time.monotonic() - t0 >= 4 * BEAT  # not before the other let go
    finally:
        other.join()
    err = capsys.readouterr().err
    assert "waiting for pid 4242 on node-b" in err and "taking it over" not in err


def test_the_heartbeat_runs_while_held_and_stops_on_release(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTINIT_LOCK_HEARTBEAT", str(BEAT))
    with run_dir.hold(tmp_path):
        with run_dir.hold(tmp_path):  # nested: one lock, one heartbeat
            assert len(_beats()) == 1
        first = lock.holder(tmp_path)["beat"]
        time.sleep(3 * BEAT)
        assert lock.holder(tmp_path)["beat"] > first and len(_beats()) == 1
        assert "released" not in lock.holder(tmp_path)
    assert not _beats() and not lock.held(tmp_path)
    info = lock.holder(tmp_path)
    assert info["pid"] == os.getpid() and info["released"] >= info["beat"]
    with run_dir.hold(tmp_path):  # the record of a lock let go never holds the folder
        pass
