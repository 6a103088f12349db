"""`distinit demo`: the paper's Table 1 (distillation vs inflation vs scratch) on the synthetic world.

The demo is Table 1's experiment (`experiments/table1.py`, in the catalog like every other) on
one seed, run by the same engine as `distinit reproduce` (`reproduce.run_variants`): by default
the three rows a newcomer needs (Res3D from scratch, ImageNet-analog inflated and DistInit);
`rows=[...]` picks others, `seeds=[...]` runs several (OUT_DIR/seedN and the mean and std), and
`distinit reproduce table1` runs all seven over seeds. Independent stages run side by side as
one-thread processes (`jobs`, default one per core; `experiments/parallel.py`), so a stage's
numbers do not depend on what runs beside it.

Every stage runs a recipe from `configs/demo/` (YAML, the same files a user runs with
`distinit train-image | distill | finetune FILE.yaml`); the engine fills in the world's paths,
the seed and the run folders. The 2D networks are trained once in OUT_DIR/shared; each row's
runs are kept in OUT_DIR/runs under a name made from their resolved configs, so a changed
recipe trains a new run beside the old one instead of overwriting it. The demo's folder (or
each seed's) shows them by name: `teacher`, `inflation_source`, `r3d_18_distill`,
`finetune_ROW`, ... are links into those folders, where `distinit figures` and a reader look.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from distinit.arguments import Parser
from distinit.engine import run_dir
from distinit.errors import UserError
from distinit.experiments.reproduce import run_variants, variant_stages
from distinit.experiments.runner import Done, Stage
from distinit.experiments.table1 import (
    CLAIMS,
    DEFAULT_ROWS,
    PAPER,
    ROWS,
    TABLE1,
    render,
    seed_tables,
)
from distinit.experiments.tables import table1_summary
from distinit.experiments.world import DemoConfig, parse_demo


def run_demo(demo: DemoConfig, overwrite: bool = False) -> dict:
    """The demo's table (one seed, or the summary of `demo.seeds`). Stages run in this process
    with `jobs=1` (`threads` torch threads, restored afterwards), else each in a one-thread
    process of its own."""
    import torch

    if demo.jobs == 0:
        demo = replace(demo, jobs=len(os.sched_getaffinity(0)))
    if demo.jobs > 1 and demo.threads == 0:
        demo = replace(demo, threads=1)  # every stage one thread, whether alone or side by side
    previous = torch.get_num_threads()
    if demo.jobs <= 1 and demo.threads > 0:
        torch.set_num_threads(demo.threads)
    try:
        return _run_demo(demo, overwrite)
    finally:
        torch.set_num_threads(previous)  # the caller's process keeps its own


def _run_demo(demo: DemoConfig, overwrite: bool) -> dict:
    rows = demo.rows or list(DEFAULT_ROWS)
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise UserError(f"unknown demo row {unknown[0]}; valid rows: {', '.join(ROWS)}")
    rows = [r for r in ROWS if r in rows]  # the paper's order
    seeds = demo.seeds or [demo.seed]
    out = Path(demo.out_dir)
    wall = time.perf_counter()
    times: dict[str, float] = {}

    def timed(stage: Stage, done: Done, seconds: float) -> None:
        times[stage.name] = seconds

    _, ctx = run_variants("table1", replace(demo, seeds=[]), seeds, overwrite, only=rows,
                          on_done=timed)
    print(ctx.world.summary(), flush=True)
    per_seed = seed_tables(ctx, seeds, demo)
    for i, (seed, table) in enumerate(zip(seeds, per_seed, strict=True)):
        folder = out if len(seeds) == 1 else out / f"seed{seed}"
        names = _name_runs(ctx, demo, rows, seed, folder)
        table["seconds"] = {names[k]: round(v, 1) for k, v in times.items() if k in names}
        table["jobs"] = demo.jobs
        if len(seeds) == 1:
            table["wall_s"] = round(time.perf_counter() - wall, 1)
        text = render(ctx, [seed], demo, [table], {k: [v[i]] for k, v in ctx.results.items()})
        (folder / "table1.json").write_text(json.dumps(table, indent=2))
        (folder / "table1.md").write_text(text)
    if len(seeds) == 1:
        summary = per_seed[0]
    else:
        summary = {**table1_summary(replace(demo, seeds=seeds), per_seed, ROWS, PAPER, CLAIMS),
                   "wall_s": round(time.perf_counter() - wall, 1)}
        text = render(ctx, seeds, demo, per_seed)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    if demo.figures:
        figures([out] if len(seeds) == 1 else [out / f"seed{s}" for s in seeds])
    return summary


def _name_runs(ctx, demo: DemoConfig, rows: list[str], seed: int, folder: Path) -> dict[str, str]:
    """Links in `folder` to the seed's runs under the names a reader and `distinit figures` look
    for (`teacher`, `r3d_18_distill`, `finetune_ROW`, ...); {stage name: the name shown}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {name: name for name in ctx.shared}
    links = {name: Path(done.weights).parent for name, done in ctx.shared.items()}
    variants = {v.label: v for v in TABLE1.variants(ctx)}
    for row in rows:
        *pre, ft = variant_stages(ctx, demo, variants[row], seed, "res3d")
        for stage in pre:
            names[stage.name] = f"pretrain {row}"
            if stage.out:
                links[Path(stage.out).name] = Path(stage.out)
        names[ft.name] = f"finetune {row}"
        links[f"finetune_{row}"] = Path(ft.out)
    for name, target in links.items():
        link = folder / name
        if link.exists() and not link.is_symlink():  # a run of an older demo: kept as it is
            print(f"{link} is a run of its own, kept; this run's is {target}", flush=True)
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, folder), target_is_directory=True)
    return names


def figures(run_dirs: list[Path]) -> None:
    """The paper's figures from these runs, in the first one's figures/ folder."""
    from distinit.optional import MissingDependency
    from distinit.tools.figures import make_figures

    try:
        made = make_figures(run_dirs, run_dirs[0].parent / "figures" if len(run_dirs) > 1
                            else run_dirs[0] / "figures")
    except MissingDependency as e:  # the table stands without its figures
        print(f"figures skipped: {e}", flush=True)
        return
    if made:
        print(f"figures: {', '.join(str(p) for p in made.values())}", flush=True)


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit demo", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="[key=value ...], e.g. seed=1 'distill=[...]'")
    parser.add_argument("--overwrite", action="store_true",
                        help="train every stage again instead of continuing the runs in out_dir")
    ns = parser.parse_intermixed_args(argv)
    demo = parse_demo(ns.args)
    with run_dir.hold(demo.out_dir, "demo"):
        run_demo(demo, ns.overwrite)
    return 0
