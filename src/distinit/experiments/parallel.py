"""Stages side by side: the independent stages of an experiment run as processes of one thread
each, `jobs` at a time, every stage as soon as the stages it needs are done.

On a machine of N cores, N one-thread processes use every core where one process of N threads
leaves most of them idle (a small network's step does not split well across threads). Every
stage process runs with one thread whatever else runs, so a stage's numbers are the same run
alone or beside another, in `distinit demo` and in `distinit reproduce table1`.

A stage needs its `start` stage and any stages named in `after` (DistInit needs its teacher).
Each stage process writes its log to OUT/logs/NAME.log; the parent prints when each starts and
ends. SIGTERM or Ctrl-C to the parent is passed on once to the running stages, which write their
checkpoints and stop; the parent then stops with one line, and running the command again goes
on from there. The stage processes end with the parent, however it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from distinit.engine.children import die_with
from distinit.engine.interrupt import Interrupted, StopRequest, killed_by, signal_name
from distinit.errors import UserError
from distinit.experiments.runner import NO_TRAINING, Done, Stage, check_stages, run_stage

OnDone = Callable[[Stage, Done, float], None]


def run_graph(stages: list[Stage], out: Path, overwrite: bool = False,
              done: dict[str, Done] | None = None, after: dict[str, tuple[str, ...]] | None = None,
              jobs: int = 1, log: str = "stages", on_done: OnDone | None = None) -> dict[str, Done]:
    """Run `stages` (those in `done` are skipped), each once the stages it needs are done: in this
    process in list order with `jobs` <= 1, else as `jobs` one-thread processes at a time.
    `on_done(stage, done, seconds)` is called as each finishes. A stage stopped early
    (`stop_after`) holds the stages that need it."""
    done = {} if done is None else done
    after = after or {}
    todo = [s for s in stages if s.name not in done]
    check_stages(todo, set(done))
    needs = {s.name: {s.start, *after.get(s.name, ())} - {""} for s in todo}
    names = {s.name for s in stages} | set(done)
    for s in todo:
        unknown = needs[s.name] - names
        if unknown:
            raise UserError(f"stage {s.name} needs {sorted(unknown)[0]}, which is not a stage")
    waiting: list[Stage] = list(todo)
    running: dict[str, tuple[subprocess.Popen, Stage, float, Path]] = {}
    held: list[str] = []  # stopped early: what needs them waits

    def ready() -> list[Stage]:
        return [s for s in waiting if needs[s.name] <= {n for n, d in done.items() if d.finished}]

    with StopRequest(announce=False) as stop:
        while waiting or running:
            for s in ready():
                if s.kind in NO_TRAINING or jobs <= 1:  # at once, in this process
                    if s.kind not in NO_TRAINING:
                        resumed = s.out and (Path(s.out) / "last.pt").is_file() and not overwrite
                        print(f"[{log}] {s.name} ({s.kind})" + (", continuing its run" if resumed
                                                                 else ""), flush=True)
                    t = time.perf_counter()
                    waiting.remove(s)
                    _finish(s, run_stage(s, done.get(s.start), overwrite), time.perf_counter() - t,
                            done, held, log, on_done)
                    continue
                if len(running) >= jobs:
                    break
                waiting.remove(s)
                running[s.name] = _start(s, done.get(s.start), overwrite, out, log)
            if not running:
                if waiting and not ready():
                    break  # what they need stopped early
                continue
            if stop.signum:
                names = _stop_all(running, stop.signum)
                raise Interrupted(f"stopped by {signal_name(stop.signum)}: the running stages "
                                  f"({names}) wrote their checkpoints", stop.signum)
            for name, (proc, s, t, logfile) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                _finish(s, _collect(proc, s, logfile, out, running), time.perf_counter() - t,
                        done, held, log, on_done)
            time.sleep(0.2)
    for name in held:
        step, total = done[name].steps
        print(f"[{log}] stage {name} stopped at step {step} of {total}; the stages that need it "
              "wait for it: run the command again to continue", flush=True)
    return done


def _finish(s: Stage, d: Done, seconds: float, done: dict[str, Done], held: list[str],
            log: str, on_done: OnDone | None) -> None:
    done[s.name] = d
    if not d.finished:
        held.append(s.name)
    if s.kind not in NO_TRAINING:
        print(f"[{log}] {s.name}: done in {seconds:.0f} s", flush=True)
    if on_done is not None:
        on_done(s, d, seconds)


def _file_stem(name: str, out: Path) -> str:
    """A stage's files in OUT/.stages and OUT/logs: its name, which may be its run folder
    (`reproduce` names stages so), relative to OUT and flattened."""
    return name.removeprefix(f"{out}{os.sep}").replace(os.sep, "~")


def _start(s: Stage, start: Done | None, overwrite: bool, out: Path,
           log: str) -> tuple[subprocess.Popen, Stage, float, Path]:
    """Launch `s` in a process of its own (one thread), its log in OUT/logs/NAME.log."""
    jobs_dir, logs = out / ".stages", out / "logs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    spec = jobs_dir / f"{_file_stem(s.name, out)}.json"
    spec.write_text(json.dumps({
        "stage": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
        "start": asdict(start) if start is not None else None, "overwrite": overwrite,
        "parent": os.getpid()}, default=str))
    (jobs_dir / f"{_file_stem(s.name, out)}.done.json").unlink(missing_ok=True)
    logfile = logs / f"{_file_stem(s.name, out)}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with logfile.open("a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "distinit.experiments.parallel", str(spec)],
                                stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # signals come from us, once
    print(f"[{log}] {s.name}: started ({logfile})", flush=True)
    return proc, s, time.perf_counter(), logfile


def _collect(proc: subprocess.Popen, s: Stage, logfile: Path, out: Path, running: dict) -> Done:
    result = out / ".stages" / f"{_file_stem(s.name, out)}.done.json"
    if proc.returncode == 0 and result.is_file():
        return Done(**json.loads(result.read_text()))
    _stop_all(running, signal.SIGTERM)  # the others stop at a step, with their checkpoints
    if proc.returncode < 0:  # killed by a signal: its log ends mid-run, on a progress line
        raise UserError(f"stage {s.name} was killed by {killed_by(-proc.returncode)} (its log: "
                        f"{logfile}); its last checkpoint is kept")
    lines = [ln for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].removeprefix("error: ") if lines else f"exit code {proc.returncode}"
    error = Interrupted if proc.returncode in (130, 143) else UserError
    message = f"stage {s.name} stopped: {last} (its log: {logfile})"
    raise error(message, proc.returncode - 128) if error is Interrupted else error(message)


def _stop_all(running: dict, signum: int) -> str:
    """Pass `signum` to every running stage once and wait for their checkpoints; their names."""
    for proc, *_ in running.values():
        if proc.poll() is None:
            proc.send_signal(signum)
    for proc, *_ in running.values():
        proc.wait()
    names = ", ".join(running) or "none"
    running.clear()
    return names


def _child(spec_path: str) -> int:
    """A stage process: run the stage in `spec_path`, write what it gives its successors."""
    spec = json.loads(Path(spec_path).read_text())
    die_with(spec["parent"])
    import torch

    torch.set_num_threads(1)
    stage = Stage(**{**spec["stage"], "overrides": tuple(spec["stage"]["overrides"])})
    start = Done(**spec["start"]) if spec["start"] else None
    d = run_stage(replace(stage), start, spec["overwrite"])
    Path(spec_path).with_suffix(".done.json").write_text(json.dumps(asdict(d), default=str))
    return 0


if __name__ == "__main__":
    from distinit.errors import one_line

    try:
        sys.exit(_child(sys.argv[1]))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(getattr(e, "exit_code", 2))
