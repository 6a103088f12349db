"""docs/ARCHITECTURE.md's "What each addition takes" names files and names of the code: each
file it names exists, and each constant, function or class it names is defined in the package."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "distinit"


def _table() -> list[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## What each addition takes", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def _defined(name: str, sources: str) -> bool:
    return re.search(rf"^\s*(def|class) {name}\b|^\s*{name}\s*[:=]", sources, re.M) is not None


def test_every_file_and_name_the_additions_table_lists_exists():
    rows = _table()
    assert len(rows) > 10
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    files, names = set(), set()
    for row in rows:
        for token in re.findall(r"`([^`]+)`", row):
            if re.fullmatch(r"[\w/]+\.(py|yaml)", token) and "NAME" not in token:
                files.add(token)
            elif re.fullmatch(r"[A-Za-z_][\w.]*(\(\))?", token) and (
                    "." in token or "_" in token or token.isupper() or token.endswith("()")):
                names.add(token.removesuffix("()").split(".")[-1])
    missing = sorted(f for f in files if not ((PACKAGE / f).exists() or (ROOT / f).exists()))
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"
    assert len(names) > 15
    undefined = sorted(n for n in names if not _defined(n, sources))
    assert not undefined, f"ARCHITECTURE.md names what the code does not define: {undefined}"
