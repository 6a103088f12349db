"""`distinit flow` as a user or a scheduler stops it, with real processes: kill -9 of the parent
takes its workers with it and a rerun removes the temporary files it left; SIGTERM and Ctrl-C
stop it at once with one line (exit 143 and 130); a second writer into the same OUT is one line
naming the first. Every time, the rerun's flow is the flow of a clean run, byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distinit.cli import main
from distinit.data.video.io import write_video

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
ARGS = ["--algorithm", "farneback"]  # slower than DIS: the run is still busy when it is stopped
VIDEOS = 6


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six videos of a texture moving right, long enough to stop the run half way."""
    src = tmp_path_factory.mktemp("flow_src")
    rng = np.random.default_rng(0)
    for i in range(VIDEOS):
        first = rng.integers(0, 255, (160, 240, 3), dtype=np.uint8)
        write_video(src / f"v{i}.mp4", np.stack([np.roll(first, 2 * t, 1) for t in range(48)]),
                    fps=25)
    return src


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory) -> Path:
    """The flow of an uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("flow_clean") / "out"
    assert main(["flow", str(videos), str(out), "--workers", "1", *ARGS]) == 0
    return out


def _start(videos: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distinit.cli", "flow", str(videos), str(out),
                             "--workers", str(workers), *ARGS], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _when_busy(proc: subprocess.Popen, out: Path, workers: int) -> list[int]:
    """Wait for the first finished video (and the workers); returns the children's pids."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        workers_up = workers == 1 or len([p for p in children if _is_worker(p)]) == workers
        if list(out.glob("*.npy")) and workers_up:
            return children
        time.sleep(0.02)
    raise AssertionError(proc.communicate(timeout=60) if proc.poll() is not None else "timeout")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _is_worker(pid: int) -> bool:
    try:
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running, not a zombie (a dead child nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


def _same_as_clean(out: Path, clean: Path) -> None:
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in clean.iterdir())  # no temporary file
    for name in names:
        if name != ".distinit.lock":  # who held it last: another process
            assert (out / name).read_bytes() == (clean / name).read_bytes(), name


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_kill_9_takes_the_workers_along_and_a_rerun_cleans_up(videos, clean, tmp_path, capsys):
    out = tmp_path / "out"
    proc = _start(videos, out, workers=2)
    children = _when_busy(proc, out, workers=2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert children and _gone_within(children, 5), [p for p in children if _alive(p)]
    # What a killed writer leaves: its temporary files (planted too, so there surely are some).
    (out / ".v5.npy.partial-4194304").write_bytes(b"half")
    (out / "sub").mkdir()
    (out / "sub" / ".x.npy.partial-1").write_bytes(b"half")
    capsys.readouterr()
    assert main(["flow", str(videos), str(out), "--workers", "2", *ARGS]) == 0
    assert "temporary files that a killed run left in" in capsys.readouterr().err
    (out / "sub").rmdir()  # empty now: the run removed what was in it
    _same_as_clean(out, clean)


@pytest.mark.parametrize("signum, workers", [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_sigterm_and_ctrl_c_stop_at_once_with_one_line(signum, workers, videos, clean, tmp_path,
                                                       capsys):
    out = tmp_path / "out"
    proc = _start(videos, out, workers)
    children = _when_busy(proc, out, workers)
    if signum == signal.SIGTERM:  # a second writer meanwhile: one line naming the first
        before = {p: p.read_bytes() for p in [out / "flow.json", *out.glob("*.npy")]}
        capsys.readouterr()
        assert main(["flow", str(videos), str(out), "--workers", "1", *ARGS]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"distinit flow: error: {out} is in use: pid {proc.pid} on ")
        assert "\n" not in err and err.endswith("or choose another OUT")
        assert all(p.read_bytes() == data for p, data in before.items())  # nothing lost
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"distinit flow: error: stopped by {name}: ") and last.endswith(
        f"of {VIDEOS} videos have their flow in {out}; run the same command again to do the "
        "rest (finished outputs are kept and skipped)"), err
    assert "Traceback" not in err
    assert _gone_within(children, 5)
    done = int(last.split(": ")[3].split()[0])
    assert 1 <= done < VIDEOS and len(list(out.glob("*.npy"))) == done
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".distinit.lock"]
    assert main(["flow", str(videos), str(out), "--workers", "1", *ARGS]) == 0
    _same_as_clean(out, clean)
