"""What the sharded-store tests share: the short videos they store, the CLI's one error line,
the cache-targets arguments and a process that holds a store's lock."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import pattern_frames

from distinit.data.video.io import write_video

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
CACHE = ["data.resize=40", "data.crop=32", "distill.cache_crops=3"]


def make_videos(tmp_path_factory) -> list[Path]:
    """Five short videos (7-16 frames, a keyframe every 4), written once per test module."""
    root = tmp_path_factory.mktemp("videos")
    out = []
    for i, num_frames in enumerate([12, 9, 16, 7, 10]):
        out.append(root / f"v{i}.mp4")
        write_video(out[-1], pattern_frames(num_frames), fps=10, gop=4)
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.name != ".distinit.lock"}


def one_error(capsys, command: str) -> str:
    """The one error line of a CLI call (a progress bar may precede it on stderr)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"distinit {command}: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


def cache_args(world, teacher_file, folder, *extra):
    return [*CACHE, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            f"data.videos={world.corpus_dir}", f"distill.target_cache={folder}", *extra]


HOLD = """import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "command": ["distinit", "store-clips", "other.yaml"],
                         "since": time.time()}).encode())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / ".distinit.lock"),
                             str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc
