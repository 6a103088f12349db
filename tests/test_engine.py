"""The experiment engine: stages as data, one runner, the front ends' override syntax."""

import pytest
import yaml

from distinit.cli import main
from distinit.errors import UserError
from distinit.experiments.parallel import run_graph
from distinit.experiments.runner import Done, Stage, check_stages, stage_config
from distinit.experiments.world import parse_demo, recipe_path


def test_a_stage_of_an_unknown_kind_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown kind 'magic'.*distinit.*finetune.*scratch"):
        Stage("x", "magic", out="o")


def test_stages_start_only_from_earlier_ones():
    with pytest.raises(UserError, match="starts from 'later', which is not an earlier stage"):
        check_stages([Stage("a", "scratch", start="later"), Stage("later", "scratch")])
    check_stages([Stage("b", "inflate", start="a")], earlier={"a"})  # already run: fine


def test_a_later_stage_starts_from_the_earlier_ones_backbone(tmp_path):
    done = run_graph([Stage("init", "scratch")], tmp_path)
    assert done["init"].handed() == ["model.init=scratch", "model.weights="]
    ft = Stage("ft", "finetune", recipe_path(parse_demo([]), "finetune"), ("seed=3",),
               start="init", out=tmp_path / "ft")
    cfg = stage_config(ft, Done("checkpoint", "W/last.pt"))
    assert (cfg.model.init, cfg.model.weights, cfg.seed) == ("checkpoint", "W/last.pt", 3)
    assert cfg.out_dir == str(tmp_path / "ft")


def test_any_recipe_name_takes_overrides_without_a_field_per_method():
    demo = parse_demo(["vcop=[optim.lr=0.5]", "auxskd=[optim.epochs=2]", "all=[seed=1]"])
    assert demo.overrides == {"vcop": ["optim.lr=0.5"], "auxskd": ["optim.epochs=2"]}
    assert demo.all == ["seed=1"]
    with pytest.raises(UserError, match="unknown config key magic"):
        parse_demo(["magic=[optim.lr=0.5]"])


def test_a_chain_checks_every_stage_before_the_first_trains(tmp_path, capsys):
    chain = {"out_dir": str(tmp_path / "c"), "stages": [
        {"name": "a", "method": "vspp", "config": "configs/demo/vspp.yaml"},
        {"name": "b", "method": "finetune", "config": "configs/demo/finetune.yaml",
         "overrides": ["optim.magic=1"]}]}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(chain))
    assert main(["chain", str(path)]) == 2
    assert "unknown config key optim.magic" in capsys.readouterr().err
    assert not (tmp_path / "c" / "a").exists()  # nothing trained
