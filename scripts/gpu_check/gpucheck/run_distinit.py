"""What a part uses to run `python -m distinit.cli` within its deadline, with a log of its own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .constants import ROOT
from .text import last_line


def time_left(ctx: dict) -> float:
    return ctx["deadline"] - time.time()


def run_cmd(ctx: dict, args: list[str], name: str, timeout: float | None = None) -> tuple[int, str]:
    """Run `python -m distinit.cli ARGS` with its output in logs/PART_NAME.log; (exit code,
    output). Raises TimeoutError past the part's deadline."""
    cmd = [ctx["python"], "-m", "distinit.cli", *args]
    limit = max(1.0, min(timeout or 1e9, time_left(ctx) - 1))
    log = Path(ctx["work"]) / "logs" / f"{ctx['part']}_{name}.log"
    print(f"$ {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=limit,
                                cwd=str(ROOT)).returncode
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{name} ran past {limit:.0f} s (see {log.name})") from None
    text = log.read_text(errors="replace")
    print(text.partition("\n")[2][-3000:], flush=True)
    return rc, text


def cli_failure(name: str, text: str) -> str:
    errors = [x for x in text.splitlines() if "error" in x.lower() or "Error" in x]
    return f"{name} failed: {last_line(errors[-1] if errors else text)}"
