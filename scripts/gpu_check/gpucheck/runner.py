"""One part in a process of its own, stopped with its whole process group at its time limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .constants import ENTRY, ERROR, ROOT, RUNNING, TIMEOUT
from .plan import Part
from .result_file import read_result
from .text import last_line, log_tail, tail


def run_child(part: Part, ctx: dict, work: Path, limit: float) -> dict:
    """Run one part in a process of its own (its own session, so a timeout ends its whole
    process group: bench, loader workers); its result, or why there is none."""
    ctx_file = work / f"ctx_{part.key}.json"
    res_file = work / f"result_{part.key}.json"
    ctx_file.write_text(json.dumps({**ctx, "part": part.key, "args": part.args}))
    res_file.unlink(missing_ok=True)
    log = work / "logs" / f"{part.key}.log"
    cmd = [sys.executable, str(ENTRY), "--child", part.kind,
           "--ctx", str(ctx_file), "--result", str(res_file)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(ROOT))
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            end_group(proc)
            res = read_result(res_file)
            lines = res.get("lines", []) if res else []
            return {"status": TIMEOUT, "summary": f"ran past its {limit:.0f} s limit; stopped "
                    f"(last output: {last_line(tail(log))})", "lines": lines + log_tail(log)}
    res = read_result(res_file)
    if res is None or res.get("status") == RUNNING:
        return {"status": ERROR, "summary": f"the part's process exited with code {rc} before "
                f"its result: {last_line(tail(log))}",
                "lines": (res or {}).get("lines", []) + log_tail(log)}
    return res


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group this script started for one part."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
