"""The package's layers, checked on the import graph of the package, its scripts and benchmarks
(scripts/import_graph.py): no module imports a higher layer, no import circle, no Python file of
the tree (package, scripts, benchmarks, tests) over 400 lines."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph)


def test_no_module_imports_a_higher_layer_and_no_circle():
    edges = graph.imports(graph.tree_modules())
    assert len(edges) > 50  # the whole package was read
    assert any(n.startswith("scripts.gpu_check.gpucheck.") for n in edges)  # and the scripts
    assert any(n.startswith("benchmarks.") for n in edges)
    assert graph.upward(edges) == []
    assert graph.circles(edges) == []


def test_the_checker_finds_an_upward_import_and_a_circle():
    edges = {"distinit.data.a": {"distinit.methods.b"}, "distinit.methods.b": {"distinit.data.a"}}
    assert graph.upward(edges) == ["distinit.data.a (data, models, losses) imports "
                                   "distinit.methods.b (methods)"]
    assert graph.circles(edges) == [["distinit.data.a", "distinit.methods.b"]]


def test_no_file_is_over_400_lines():
    assert graph.too_long() == {}


def test_relative_imports_are_edges_of_the_graph(tmp_path):
    pkg = tmp_path / "scripts" / "tool"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("from . import b\nx = 1\n")
    (pkg / "b.py").write_text("from .a import x\n")
    mods = graph.modules(tmp_path / "scripts")
    edges = graph.imports(mods)
    assert edges["scripts.tool"] == {"scripts.tool.a"}
    assert edges["scripts.tool.a"] == {"scripts.tool.b"}
    assert graph.circles(edges) == [["scripts.tool.a", "scripts.tool.b"]]
