"""A part's process (--child KIND): runs part_KIND and writes its result, or why it raised."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from .constants import ERROR, TIMEOUT
from .part_amp import part_amp
from .part_bench import part_bench
from .part_cli import part_cli
from .part_ddp import part_ddp
from .part_decode import part_decode
from .part_env import part_env
from .result_file import read_result, write_json
from .text import last_line

PART_FUNCTIONS = {"env": part_env, "amp": part_amp, "ddp": part_ddp, "cli": part_cli,
                  "bench": part_bench, "decode": part_decode}  # Part.kind -> part_<kind>


def child_main(kind: str, ctx_file: Path, result_file: Path) -> int:
    ctx = {**json.loads(ctx_file.read_text()), "result_file": str(result_file)}
    fn = PART_FUNCTIONS[kind]
    try:
        res = fn(ctx, **ctx.get("args", {}))
    except Exception as e:  # reported, never raised: the next part still runs
        tb = traceback.format_exc().strip().splitlines()
        found = (read_result(result_file) or {}).get("lines", [])  # its progress() so far
        res = {"status": TIMEOUT if isinstance(e, TimeoutError) else ERROR,
               "summary": f"{type(e).__name__}: {last_line(str(e))}",
               "lines": [*found, "", "Traceback (last lines):", "",
                         *[f"    {x}" for x in tb[-12:]]]}
    write_json(result_file, res)
    return 0
