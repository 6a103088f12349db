"""The package's layers, checked on its import graph (scripts/import_graph.py): no module imports
a higher layer, no import circle, no module over 400 lines."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph)


def test_no_module_imports_a_higher_layer_and_no_circle():
    edges = graph.imports(graph.modules())
    assert len(edges) > 50  # the whole package was read
    assert graph.upward(edges) == []
    assert graph.circles(edges) == []


def test_the_checker_finds_an_upward_import_and_a_circle():
    edges = {"distinit.data.a": {"distinit.methods.b"}, "distinit.methods.b": {"distinit.data.a"}}
    assert graph.upward(edges) == ["distinit.data.a (data, models, losses) imports "
                                   "distinit.methods.b (methods)"]
    assert graph.circles(edges) == [["distinit.data.a", "distinit.methods.b"]]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "src").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
