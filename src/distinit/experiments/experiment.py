"""The experiment model every experiment is written in (`catalog.py`, `table1.py`): variants
(a pretraining method and its overrides, or scratch or inflated 2D weights; the stages before it;
its student), the context they may depend on, and the claims the rows test. `reproduce.py` runs
them; `distinit demo` is Table 1's experiment on one seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distinit.data.synth import World
from distinit.data.synth.flow import world_flow
from distinit.experiments.claims import Claim
from distinit.experiments.runner import Done

# --student: (the student's name, its fine-tune folder's row name: finetune_ROW, a run-folder key)
STUDENTS = {"res3d": ("Res3D", "res3d_distinit"), "r2plus1d": ("R(2+1)D", "r2plus1d_distinit")}
# The 2D networks a variant may inflate (`init="inflate"`, `source=`): image_stage's names.
SOURCES = ("inflation_source", "scene_net")


@dataclass
class Variant:
    label: str
    overrides: list[str] = field(default_factory=list)  # pretraining-stage overrides
    paper: float | None = None  # the paper's top-1 for this setting, where it has one
    # The pretraining method (its recipe: configs/demo/STAGE.yaml), or `supervised` (the
    # corpus's hidden labels, configs/demo/supervised.yaml)...
    method: str = "distinit"
    init: str = "scratch"  # ... or none (""): fine-tune from `scratch` or `inflate`d 2D weights
    source: str = "inflation_source"  # the 2D network `inflate` starts from (SOURCES)
    finetune: list[str] = field(default_factory=list)  # fine-tune-stage overrides
    # Stages run before the method, each handing its backbone on: (method, overrides). Each is
    # kept by its own config, so variants that start alike (auxSKD, then a pretext) share it.
    before: list[tuple[str, list[str]]] = field(default_factory=list)
    student: str = ""  # a key of STUDENTS; empty: the command's --student

    def needs(self) -> set[str]:
        """The shared 2D networks this variant's stages start from."""
        return {self.source} if not self.method and self.init == "inflate" else set()


@dataclass
class Context:
    """What variants may depend on: the world, the shared teachers, earlier results."""

    world: World
    out: Path
    teacher: Path
    scene_net: Path | None
    results: dict[str, list[dict]]  # label -> one result per seed, filled as variants finish
    notes: list[str] = field(default_factory=list)  # lines under the table's heading
    shared: dict[str, Done] = field(default_factory=dict)  # the 2D networks' finished runs
    stats: dict[str, float] = field(default_factory=dict)  # facts an experiment reports

    def flow(self, which: str, gap: int = 1) -> list[str]:
        """Settings that point a stage at the world's flow of `which` (corpus or actions),
        from frame t to t + `gap`, computed on first use."""
        videos = self.world.corpus_dir if which == "corpus" else self.world.actions_videos
        folder = world_flow(self.world, gap=gap)[which]
        return [f"data.flow_dir={folder}", f"data.flow_root={videos}"]


@dataclass
class Experiment:
    paper: str
    what: str
    variants: Callable[[Context], list[Variant]]
    claims: list[Claim]  # what its rows test (`claims.py`)
    # After every variant has run: more rows ({label: one result per seed}) from their runs.
    after: Callable[[Context], dict[str, list[dict]]] | None = None
    scenes: bool = False  # needs the scene network (PlaceNet's analog)
    # After the variants that ran (whichever `--only` picked): facts into ctx.stats and notes.
    facts: Callable[[Context], None] | None = None
    # Its own Markdown (Table 1's columns) from the context, seeds and demo settings, instead of
    # the generic table (`tables.markdown`).
    render: Callable[[Context, list[int], object], str] | None = None
