"""The import graph of the package and of the scripts and benchmarks around it, read with `ast`
(every `import` and `from ... import`, absolute or relative, at the top of a module or inside a
function): prints each layer's modules and checks two rules, that no module imports a module of
a higher layer and that no import circle exists, and a third, that no Python file of the tree
(package, scripts, benchmarks, tests) is over 400 lines. Exit 1 on a violation.
`tests/test_layers.py` runs it; `python scripts/import_graph.py` prints the graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]
ROOT = TREE / "src" / "distinit"
# The folders whose Python files are modules of the graph, and those held to MAX_LINES.
AROUND = ("scripts", "benchmarks")
SIZED = ("src", "scripts", "benchmarks", "tests")
MAX_LINES = 400
# Lowest first. A module belongs to the first layer one of whose prefixes it starts with.
LAYERS = [
    ("foundation", ("distinit.errors", "distinit.arguments", "distinit.optional", "distinit.config",
                    "distinit.config_schema",
                    "distinit.config_rules")),
    ("engine", ("distinit.engine",)),
    ("data, models, losses", ("distinit.data", "distinit.models", "distinit.losses")),
    ("teacher targets", ("distinit.targets",)),
    ("run parts", ("distinit.build",)),
    ("methods", ("distinit.methods",)),
    ("jobs", ("distinit.jobs",)),
    ("tools", ("distinit.tools",)),
    ("experiments", ("distinit.experiments",)),
    ("command line", ("distinit.cli", "distinit")),
    ("scripts and benchmarks", AROUND),
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def tree_modules() -> dict[str, Path]:
    """The package's modules and the scripts' and benchmarks' files (`scripts.import_graph`,
    `scripts.gpu_check.gpucheck.part_env`, ...)."""
    out = modules()
    for folder in AROUND:
        out.update(modules(TREE / folder))
    return out


def _absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a relative `from .x import y` in module `name` starts from."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of `mods` it imports (a `from pkg import mod` names the module)."""
    edges = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                module = _absolute(name, path, node) if node.level else node.module
                for a in node.names:
                    sub = f"{module}.{a.name}"
                    deps.add(sub if sub in mods else module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        edges[name] = {d for d in deps if d in mods and d != name}
    return edges


def too_long(limit: int = MAX_LINES) -> dict[str, int]:
    """Every Python file of the tree over `limit` lines: its path and length."""
    return {str(p.relative_to(TREE)): n for folder in SIZED for p in (TREE / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > limit}


def layer(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise KeyError(f"{name} is in no layer: add it to scripts/import_graph.py LAYERS")


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
            for a, deps in sorted(edges.items()) for b in sorted(deps) if layer(b) > layer(a)]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    edges = imports(tree_modules())
    for i, (title, _) in enumerate(LAYERS):
        names = sorted(n.removeprefix("distinit.") for n in edges if layer(n) == i)
        print(f"{i} {title}: {', '.join(names)}")
    bad = upward(edges) + [" -> ".join(c) for c in circles(edges)]
    bad += [f"{path} has {n} lines (at most {MAX_LINES})" for path, n in too_long().items()]
    for line in bad:
        print("violation:", line)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
