"""The one experiment runner. An experiment is a list of stages; each stage is one job on a
recipe with its overrides, in a run folder of its own, started from an earlier stage's backbone:

    Stage("auxskd", "auxskd", "configs/demo/auxskd.yaml", ("data.videos=V",), out="runs/a")
    Stage("ft", "finetune", "configs/demo/finetune.yaml", (...), start="auxskd", out="runs/b")

`run_stage` runs one; `parallel.run_graph`, the one scheduler, runs a list of them in order
(`jobs=1`) or side by side, each as soon as the stages it needs are done. A stage whose folder
holds a checkpoint continues it exactly (a finished one is only reloaded), so running an
experiment again after a crash or a scheduler's signal picks up where it stopped; a stage
stopped early (`stop_after`) holds the stages that need it. Front ends (`chain`, `demo`,
`reproduce`, `real-demo`) only say which stages, recipes and folders.

Kinds: a registered pretraining method (`distinit.methods.METHODS`), `finetune` (optionally
scoring the initial weights frozen first: `probe=True`), `train-image` (a 2D network on stills:
a teacher or a source to inflate), and two that train nothing: `scratch` and `inflate` (the
2D network of its `start` stage, inflated by the next stage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distinit.config import Config, load_config
from distinit.engine import run_dir
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
from distinit.methods import METHODS, config_class

JOBS = ("finetune", "train-image")
NO_TRAINING = ("scratch", "inflate")
FROZEN_FEATURES = "frozen_features.pt"  # a probed fine-tune's initial features (t-SNE figure)


def kinds() -> list[str]:
    return [*METHODS, *JOBS, *NO_TRAINING]


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    recipe: str | Path | None = None  # YAML recipe; None: the defaults
    overrides: tuple[str, ...] = ()  # key=value, after the recipe
    start: str = ""  # an earlier stage whose backbone this one starts from; "": the recipe's
    out: str | Path = ""  # run folder
    probe: bool = False  # finetune: kNN and linear probe of the initial weights first

    def __post_init__(self):
        if self.kind not in kinds():
            raise UserError(f"stage {self.name}: unknown kind {self.kind!r}; valid: "
                            f"{', '.join(kinds())}")
        if self.kind not in NO_TRAINING and not self.out:
            raise UserError(f"stage {self.name} needs a run folder")


@dataclass
class Done:
    """A stage's outcome: how a later stage starts from it, and what it measured."""

    init: str  # model.init of a later stage: checkpoint, inflate or scratch
    weights: str  # model.weights of a later stage
    result: dict = field(default_factory=dict)
    steps: tuple[int, int] = (0, 0)  # (step reached, total steps) of a training stage

    @property
    def finished(self) -> bool:
        """False when the stage stopped early (stop_after, a signal): later stages wait."""
        return self.steps[0] >= self.steps[1]

    def handed(self) -> list[str]:
        return [f"model.init={self.init}", f"model.weights={self.weights}"]


def stage_config(stage: Stage, start: Done | None = None) -> Config:
    """The stage's run config: its recipe, its overrides, then the backbone it starts from and
    its run folder."""
    cls = config_class(stage.kind) if stage.kind in METHODS else Config
    handed = start.handed() if start is not None else []
    return load_config(stage.recipe, [*stage.overrides, *handed, f"out_dir={stage.out}"], cls=cls)


def check_stages(stages: list[Stage], earlier: set[str] = frozenset()) -> None:
    """Every recipe and override of every stage, checked before the first one trains (`earlier`:
    stages already run, which these may start from)."""
    seen: dict[str, Stage] = dict.fromkeys(earlier)
    for s in stages:
        if s.name in seen:
            raise UserError(f"two stages are called {s.name}")
        if s.start and s.start not in seen:
            raise UserError(f"stage {s.name} starts from {s.start!r}, which is not an earlier "
                            "stage")
        if s.kind not in NO_TRAINING:
            stage_config(s, Done("checkpoint", "unchecked") if s.start else None)
        seen[s.name] = s


def run_stage(stage: Stage, start: Done | None = None, overwrite: bool = False) -> Done:
    """Run (continue, or reload) one stage."""
    if stage.kind == "scratch":
        return Done("scratch", "")
    if stage.kind == "inflate":
        if start is None:
            raise UserError(f"stage {stage.name} inflates the 2D network of its start stage; "
                            "name one")
        return Done("inflate", start.weights)
    from distinit.jobs import run
    from distinit.jobs.image_train import CHECKPOINT, train_image_model

    cfg = stage_config(stage, start)
    out = Path(cfg.out_dir)
    restart = {"resume": not overwrite and (out / "last.pt").is_file(), "overwrite": overwrite}
    if not overwrite and not restart["resume"] and run_dir.existing_run_files(out):
        # Stopped (killed) before its first checkpoint: nothing to continue, and what it logged
        # belongs to steps that run again. Start the stage afresh rather than refuse the folder.
        print(f"[{stage.name}] {out} holds no checkpoint (the stage stopped before its first "
              "one); starting the stage again", flush=True)
        restart["overwrite"] = True
    if stage.kind == "train-image":
        return Done("inflate", str(out / CHECKPOINT), train_image_model(cfg, **restart))
    if stage.kind == "finetune":
        frozen = run.frozen_eval(cfg) if stage.probe else {}
        result = run.finetune(cfg, **restart)
        if stage.probe:  # the initial weights' features of the test videos, for the t-SNE figure
            classes = json.loads((out / "results.json").read_text()).get("classes", [])
            torch.save({**frozen.pop("features"), "classes": classes}, out / FROZEN_FEATURES)
        result = {**result, **frozen}
    else:
        result = run.pretrain(cfg, stage.kind, **restart)
    state = load_checkpoint(out / "last.pt")
    steps = (state["step"], state.get("total_steps", state["step"]))
    return Done("checkpoint", str(out / "last.pt"), result, steps)
