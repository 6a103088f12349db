"""A part's result file: JSON written atomically by the part's process, read by the parent."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .constants import RUNNING


def read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def progress(ctx: dict, lines: list[str]) -> None:
    """What a part has found so far: the report keeps it if the part is stopped at its limit."""
    write_json(Path(ctx["result_file"]), {"status": RUNNING, "summary": "", "lines": lines})
