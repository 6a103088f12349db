"""`distinit chain CHAIN.yaml [key=value ...]`: stages run one after another, each handing its
backbone to the next (e.g. auxskd -> vspp -> finetune), all named in one file:

    out_dir: runs/auxskd_vspp
    all: [seed=0, data.cache_dir=runs/cache]      # overrides for every stage
    stages:
      - {name: auxskd, method: auxskd, config: configs/demo/auxskd.yaml,
         overrides: [data.videos=MY_VIDEOS]}
      - {name: vspp, method: vspp, config: configs/demo/vspp.yaml,
         overrides: [data.videos=MY_VIDEOS]}
      - {name: finetune, method: finetune, config: configs/demo/finetune.yaml,
         overrides: [data.video_root=..., data.split_dir=...]}

A stage's `method` is any kind the experiment engine runs (`distinit.experiments.runner`): a
registered pretraining method (`distinit pretrain` names), `finetune` or `train-image`. It runs
in OUT_DIR/NAME and, unless it says `init: own`, starts from the previous stage's exported
backbone (`init: STAGE` starts from an earlier one). A stage with a checkpoint resumes from it,
exactly; a finished one is only reloaded, so running the command again after a crash or a
scheduler's signal picks up where it stopped. Command-line `key=value` overrides go to every
stage, after the file's. Every stage's config is checked before the first one trains.
"""

from __future__ import annotations

import json
from pathlib import Path

from distinit.arguments import Parser
from distinit.config import read_yaml
from distinit.engine import run_dir
from distinit.errors import UserError
from distinit.experiments.parallel import run_graph
from distinit.experiments.runner import JOBS, Stage
from distinit.methods import METHODS

STAGE_KEYS = {"name", "method", "config", "overrides", "init"}
TOP_KEYS = {"out_dir", "all", "stages"}


def read_chain(path: str | Path) -> dict:
    """The chain file, checked: a one-line error for anything it cannot run."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"chain file not found: {path}")
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict) or set(tree) - TOP_KEYS:
        raise UserError(f"{path}: a chain has the keys {', '.join(sorted(TOP_KEYS))}; got "
                        f"{', '.join(sorted(set(tree) - TOP_KEYS)) if isinstance(tree, dict) else type(tree).__name__}")
    stages = tree.get("stages") or []
    if not stages:
        raise UserError(f"{path}: no stages; list them under `stages:`")
    names = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or not {"name", "method"} <= set(stage):
            raise UserError(f"{path}: stage {i + 1} needs at least `name` and `method`")
        unknown = set(stage) - STAGE_KEYS
        if unknown:
            raise UserError(f"{path}: stage {stage['name']} has unknown keys "
                            f"{', '.join(sorted(unknown))}; valid: {', '.join(sorted(STAGE_KEYS))}")
        if stage["method"] not in (*JOBS, *METHODS):
            raise UserError(f"{path}: stage {stage['name']}: unknown method {stage['method']!r}; "
                            f"valid: {', '.join((*JOBS, *METHODS))}")
        init = stage.get("init", "previous")
        if init not in ("previous", "own", *names):
            raise UserError(f"{path}: stage {stage['name']}: init is `previous` (default), "
                            f"`own` (the stage's config says) or an earlier stage, got {init!r}")
        if stage["name"] in names:
            raise UserError(f"{path}: two stages are called {stage['name']}")
        names.append(stage["name"])
    return {"out_dir": tree.get("out_dir", "runs/chain"), "all": list(tree.get("all") or []),
            "stages": stages}


def chain_stages(chain: dict, extra: list[str] = ()) -> list[Stage]:
    out = Path(chain["out_dir"])
    stages = []
    for i, s in enumerate(chain["stages"]):
        init = s.get("init", "previous")
        start = (chain["stages"][i - 1]["name"] if init == "previous" and i > 0
                 else "" if init in ("previous", "own") else init)
        stages.append(Stage(s["name"], s["method"], s.get("config"),
                            (*chain["all"], *(s.get("overrides") or []), *extra),
                            start=start, out=out / s["name"]))
    return stages


def run_chain(chain: dict, extra: list[str] = (), overwrite: bool = False) -> dict:
    out = Path(chain["out_dir"])
    done = run_graph(chain_stages(chain, extra), out, overwrite, log="chain")
    results = {name: d.result for name, d in done.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "chain.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit chain", description=__doc__.splitlines()[0])
    parser.add_argument("chain", help="the chain's YAML file")
    parser.add_argument("args", nargs="*", help="key=value overrides for every stage")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete every stage's run and train the chain again")
    ns = parser.parse_intermixed_args(argv)
    chain = read_chain(ns.chain)
    with run_dir.hold(chain["out_dir"], "chain"):
        results = run_chain(chain, ns.args, ns.overwrite)
    last = list(results)[-1]
    print(json.dumps({last: results[last]}, indent=2, default=str))
    return 0
