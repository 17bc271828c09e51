"""The package's layers: every import points downward, and no module imports itself back.

    cli → jobs → training → objectives | partition → samplers → energy
    (metrics and testing below training; data beside samplers; diagnostics beside energy,
     so that sampler records can export themselves;
     distributed/ imports nothing of ebmlab; atomic and registry are shared by all)

The graph is read from the source with :mod:`ast` (every ``import`` and ``from ... import``,
at module level or inside a function: a deferred import is still a dependency). The root
``ebmlab/__init__.py`` is the public facade and may import anything; no other module may import
the root. The negative controls run the same checker on small trees that break each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ebmlab"

#: Components by level: a component may import components of strictly lower level.
LEVELS = {
    "energy": 0, "diagnostics": 0,
    "samplers": 1, "data": 1,
    "objectives": 2, "partition": 2,
    "metrics": 3, "testing": 3,
    "training": 4,
    "jobs": 5,
    "cli": 6,
}
#: Shared leaf modules: importable from anywhere, importing nothing of ebmlab.
SHARED = {"atomic", "registry"}
#: Importable only from this level up; imports nothing of ebmlab itself.
DISTRIBUTED_MIN_LEVEL = LEVELS["training"]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: {imported ebmlab modules}}`` for every ``.py`` file under the package ``root``."""
    top = root.name
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == top)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != top:
                    continue
                for alias in node.names:  # `from pkg import submodule` depends on the submodule
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
        graph[name] = deps - {name}
    return graph


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import against the layer order."""
    bad = []
    for module, deps in sorted(graph.items()):
        source = component(module)
        if source == "":  # the facade
            continue
        for dep in sorted(deps):
            target = component(dep)
            if target == source:
                continue
            if target == "":
                bad.append(f"{module} imports the package root {dep}")
            elif source in SHARED or source == "distributed":
                bad.append(f"{module} ({source} imports nothing of ebmlab) imports {dep}")
            elif target in SHARED:
                continue
            elif target == "distributed":
                if LEVELS.get(source, -1) < DISTRIBUTED_MIN_LEVEL:
                    bad.append(f"{module} ({source}) imports {dep}: distributed is for training and above")
            elif target not in LEVELS or source not in LEVELS:
                bad.append(f"{module} -> {dep}: component {target if target not in LEVELS else source!r} has no layer")
            elif LEVELS[target] >= LEVELS[source]:
                bad.append(f"{module} ({source}, level {LEVELS[source]}) imports {dep} "
                           f"({target}, level {LEVELS[target]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan 1972)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_component_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert names <= set(LEVELS) | SHARED | {"distributed"}, sorted(names - set(LEVELS) - SHARED)


def test_imports_follow_the_layers():
    assert layer_violations(import_graph(PACKAGE)) == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_no_module_passes_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ebmlab"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_negative_control_upward_import_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "energy/__init__.py": "", "samplers/__init__.py": "",
        "energy/base.py": "def f():\n    from ebmlab.samplers import run  # deferred, still upward\n",
        "samplers/run.py": "from ..energy.base import f\n",
        "distributed/__init__.py": "from ebmlab.energy import base\n",
        "objectives/__init__.py": "from ebmlab import distributed\n",
    })
    bad = layer_violations(import_graph(root))
    assert any(line.startswith("ebmlab.energy.base (energy, level 0) imports ebmlab.samplers.run") for line in bad), bad
    assert any("ebmlab.distributed (distributed imports nothing" in line for line in bad), bad
    assert any("ebmlab.objectives (objectives) imports ebmlab.distributed" in line for line in bad), bad
    assert len(bad) == 3


def test_negative_control_cycle_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "energy/__init__.py": "",
        "energy/a.py": "from ebmlab.energy import b\n",
        "energy/b.py": "from . import c\n",
        "energy/c.py": "import ebmlab.energy.a\n",
        "energy/d.py": "from ebmlab.energy.a import x\n",
    })
    assert cycles(import_graph(root)) == [["ebmlab.energy.a", "ebmlab.energy.b", "ebmlab.energy.c"]]


@pytest.mark.parametrize("source,target,ok", [
    ("training", "objectives", True), ("objectives", "partition", False), ("partition", "objectives", False),
    ("metrics", "partition", True), ("samplers", "data", False), ("jobs", "cli", False), ("cli", "jobs", True),
])
def test_level_table(tmp_path, source, target, ok):
    root = _tree(tmp_path, {"__init__.py": "", f"{source}/__init__.py": f"from ebmlab.{target} import thing\n",
                            f"{target}/__init__.py": ""})
    assert (layer_violations(import_graph(root)) == []) is ok
