"""A run directory is never silently overwritten, has one writer, and a run resumes only with its
own config.

Starting into an out_dir that holds a run needs a choice: `--resume` (continue it, with the same
config) or `--overwrite` (delete the run's files and start again); otherwise it is refused. A job
locks its out_dir (`one_writer`, `engine.lock`) before it writes anything, so a job launched twice
into one folder stops with one line naming the process that holds it.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distinit.engine import lock
from distinit.errors import UserError

# The files a run writes; --overwrite deletes these and nothing else in the folder.
RUN_FILES = ("last.pt", "metrics.jsonl", "config.yaml", "results.json", "tb")
# The ones that hold results: a folder with only a config.yaml (a run that failed before its
# first step) holds nothing to lose.
RESULT_FILES = ("last.pt", "metrics.jsonl", "results.json")

# Keys that change how a run is executed or logged, not what it computes; they may differ on
# --resume. Everything else (recipe, data, model, seed) must match the checkpoint.
SAFE_ON_RESUME = frozenset({
    "out_dir", "log_every", "ckpt_every", "eval_every", "stop_after", "threads", "device",
    "dist_timeout",
    "data.num_workers", "data.cache", "data.cache_dir", "data.backend", "data.decode_device",
})


UNWRITABLE = "cannot write to out_dir {folder}: {reason}; choose a writable out_dir="


def hold(out_dir: str | Path, what: str = "run"):
    """Lock `out_dir` for this process while a `with` block writes `what` into it (rank 0; the
    other ranks of a torchrun job share rank 0's lock)."""
    return lock.hold(out_dir, what, "choose another out_dir=", unwritable=UNWRITABLE)


def one_writer(job: Callable) -> Callable:
    """Decorate a job `job(cfg, ...)` so it holds `cfg.out_dir`'s lock while it runs."""

    @functools.wraps(job)
    def locked(cfg, *args, **kwargs):
        with hold(cfg.out_dir):
            return job(cfg, *args, **kwargs)

    return locked


def existing_run_files(out_dir: Path, names: tuple[str, ...] = RUN_FILES) -> list[str]:
    return [name for name in names if (out_dir / name).exists()]


def claim(out_dir: Path, resume: bool, overwrite: bool, what: str = "run") -> None:
    """Refuse to start a new run over an existing one unless told to; `overwrite` deletes the
    previous run's files. Call on every rank before any of them writes (reads only, unless
    overwriting on rank 0)."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run in "
                        f"{out_dir}, or delete it and start again, not both")
    if resume:
        return
    found = existing_run_files(out_dir, RESULT_FILES)
    if found and not overwrite:
        raise UserError(
            f"{out_dir} already holds a {what} ({', '.join(found)}); continue it with --resume, "
            "start it again with --overwrite, or choose another out_dir=")


def clear(out_dir: Path) -> None:
    """Delete a previous run's files (rank 0, with --overwrite)."""
    for name in existing_run_files(out_dir):
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def check_resumable(saved: dict, current: dict, ckpt_path: Path,
                    defaults: dict | None = None) -> None:
    """Refuse to resume when a key that shapes the run differs from the checkpoint's config.

    A key the saved config lacks (a setting added to distinit after the run was written) counts
    as its default from `defaults`: the run was made with what that default does.
    """
    old, new = _flatten(saved), _flatten(current)
    for k, v in _flatten(defaults or {}).items():
        old.setdefault(k, v)
    changed = sorted(k for k in old.keys() | new.keys()
                     if k not in SAFE_ON_RESUME and old.get(k) != new.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise UserError(
            f"cannot resume {ckpt_path}: the config differs from the run's in {diffs}{more}. "
            "Resume with the run's own settings (only "
            f"{', '.join(sorted(SAFE_ON_RESUME - {'out_dir'}))} may change), or start a new run "
            "with another out_dir= (model.init=checkpoint model.weights=... starts from its "
            "weights)")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from: those steps run again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) <= last_step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return float("inf")  # a line cut by a crash
