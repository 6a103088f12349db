"""Text helpers: the tail of a log, the last line of an error, a Markdown table cell."""

from __future__ import annotations

from pathlib import Path


def tail(path: Path, n: int = 8000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


def log_tail(path: Path, lines: int = 15) -> list[str]:
    text = [x for x in tail(path).splitlines() if x.strip()][-lines:]
    return ["", "Last lines of the part's output:", "", *[f"    {x}" for x in text]] if text else []


def last_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else "(no output)"


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
