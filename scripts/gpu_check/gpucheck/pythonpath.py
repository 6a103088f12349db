"""What the parts' Python imports: whether a module imports with given paths first, and wheels
unpacked into a folder for PYTHONPATH (no installer, no registry)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from .text import last_line


def import_check(module: str, paths: list[str]) -> str:
    """'ok VERSION' when `module` imports in a fresh Python with `paths` first, else the error's
    last line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    code = (f"import os, {module} as m; print(getattr(m, '__version__', '?'), "
            "os.path.dirname(m.__file__))")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return "import timed out"
    if r.returncode == 0:
        version, _, where = r.stdout.strip().partition(" ")
        return f"ok {version} ({where})"
    return last_line(r.stderr)


def unpack_wheels(folder: Path, site: Path) -> tuple[Path | None, str]:
    """Unzip every wheel in `folder` into `site` (a wheel is a zip of its installed files; no
    registry, no dependencies)."""
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        return None, f"--wheels {folder}: no .whl files there"
    site.mkdir(parents=True, exist_ok=True)
    done = []
    for w in wheels:
        try:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
            done.append(w.name)
        except (OSError, zipfile.BadZipFile) as e:
            done.append(f"{w.name} (not unpacked: {e})")
    return site, f"unpacked into {site}: {', '.join(done)}"
