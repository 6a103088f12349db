"""scripts/gpu_check.sh --dry-run: every part of the GPU check runs on the CPU with tiny sizes,
the report is written, and the CUDA-only parts say they were skipped for want of CUDA.

The dry run reads and writes videos through the OpenCV stand-in for PyAV when cv2 imports:
that is the path a GPU machine without a PyAV wheel takes (PyAV's own path is what the rest
of the suite runs)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
SHIM = ROOT / "scripts" / "gpu_check" / "avshim"
HAS_CV2 = importlib.util.find_spec("cv2") is not None


def statuses(report: str) -> dict[str, str]:
    """part -> result, from the report's summary table."""
    return dict(re.findall(r"^\| (\w+) \| (PASS|FAIL|ERROR|SKIPPED|TIMEOUT) \|", report, re.M))


@pytest.mark.slow
def test_dry_run_writes_a_passing_report(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("OUT", None)
    cmd = ["bash", str(SCRIPT), "--dry-run", "--out", str(out)]
    if HAS_CV2:
        cmd += ["--video-io", "opencv"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    report = out.read_text()
    for section in ("## Summary", "## 1. Environment", "## 2. Correctness", "## 3. Speed"):
        assert section in report
    got = statuses(report)
    for part in ("env", "amp", "cli", "bench_b64", "decode"):  # they run on a CPU
        assert got[part] == "PASS", (part, report)
    # CUDA only: NCCL (its gloo stand-in passed), bf16 autocast, torchcodec's GPU decoder
    assert got["ddp"] == "SKIPPED"
    assert "[SKIPPED] ddp: NCCL needs CUDA (no CUDA device here); gloo stand-in on CPU: PASS" \
        in report
    assert "bf16 autocast: skipped, needs CUDA (no CUDA device here)" in report
    assert "torchcodec GPU decoder: skipped, needs CUDA (no CUDA device here)" in report
    for part in ("bench_b16", "bench_b64_compile", "bench_b32"):
        assert got[part] == "SKIPPED"
    assert "resumed at step 2: True, finished at step 6 of 6" in report
    assert "- finished:" in report
    if HAS_CV2:
        assert "OpenCV stand-in for PyAV" in report
    assert (tmp_path / "report_logs" / "cli_distill_resume.log").is_file()


def test_deadline_skips_the_rest_and_says_so(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--budget-s", "1", "--out", str(out),
                        "--no-logs"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    report = out.read_text()
    got = statuses(report)
    assert set(got.values()) == {"SKIPPED"}
    assert "[SKIPPED] env: global deadline: 0 s of --budget-s 1 left" in report
    assert "- finished:" in report


@pytest.mark.skipif(not HAS_CV2, reason="needs OpenCV")
def test_opencv_stand_in_reads_what_pyav_reads(tmp_path, make_video):
    """The stand-in decodes an H.264 file to the same frames as PyAV, through the project's
    own read_frames / probe, and writes videos that read back."""
    from distinit.data.video.io import probe, read_frames

    video = make_video(num_frames=24, gop=8)
    wanted = [0, 5, 9, 23, 9]
    code = ("import sys, numpy as np, av\n"
            "from distinit.data.video.io import probe, read_frames, write_video\n"
            "assert getattr(av, 'OPENCV_SHIM', False)\n"
            "f = read_frames(sys.argv[1], [0, 5, 9, 23, 9])\n"
            "np.save(sys.argv[2], f)\n"
            "print(probe(sys.argv[1]).num_frames)\n"
            "write_video(sys.argv[3], f, fps=25)\n"
            "print(read_frames(sys.argv[3], [4]).shape)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHIM), str(ROOT / "src")])}
    r = subprocess.run([sys.executable, "-c", code, str(video), str(tmp_path / "f.npy"),
                        str(tmp_path / "w.mp4")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    count, shape = r.stdout.split("\n")[:2]
    assert int(count) == probe(video).num_frames == 24
    assert shape == "(1, 48, 64, 3)"
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), read_frames(video, wanted))
