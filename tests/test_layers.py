"""The package's layering: each layer imports only layers below it, with no import cycle, and
the pure layers import no Ray. Imports inside functions count (they hide cycles too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a module may import its own layer's modules (without a cycle) and lower ones.
LAYERS = (
    ("envs",),
    ("rllib_alma_mi.keys",),
    ("rllib_alma_mi.settings",),
    ("rllib_alma_mi.nn", "rllib_alma_mi.views"),
    ("rllib_alma_mi.losses", "rllib_alma_mi.deploy"),
    ("rllib_alma_mi.hierarchy",),
    ("rllib_alma_mi.registry",),
    ("rllib_alma_mi.rllib",),
    ("rllib_alma_mi.evolution",),
    ("rllib_alma_mi.algorithm",),
    ("rllib_alma_mi.app",),
)
RAY_FREE = (
    "envs",
    "rllib_alma_mi.keys",
    "rllib_alma_mi.settings",
    "rllib_alma_mi.nn",
    "rllib_alma_mi.views",
    "rllib_alma_mi.losses",
    "rllib_alma_mi.deploy",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(name: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(_within(name, p) for p in prefixes):
            return index
    return None


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (resolved to known module names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = {
        _module_name(p): p
        for pkg in ("rllib_alma_mi", "envs")
        for p in (ROOT / pkg).rglob("*.py")
    }
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def _raw_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


GRAPH = _graph()


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if _layer(m) is None and m != "rllib_alma_mi"] == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    if module == "rllib_alma_mi":  # the lazy top-level names load on first use
        return
    upward = sorted(t for t in GRAPH[module] if (_layer(t) or 0) > _layer(module))
    assert upward == [], f"{module} (layer {LAYERS[_layer(module)]}) imports {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> imported modules), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("prefix", RAY_FREE)
def test_pure_layers_import_no_ray(prefix):
    paths = [
        p for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts and _within(_module_name(p), prefix)
    ]
    assert paths
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in _raw_imports(p) if _within(n, "ray"))
        for p in paths
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_upward_imports_and_cycles(tmp_path):
    assert _layer("rllib_alma_mi.app.cli") > _layer("rllib_alma_mi.nn.mine")
    assert _layer("rllib_alma_mi.rllib.learner") > _layer("rllib_alma_mi.losses.mutual_info")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "from rllib_alma_mi.app import cli\ndef f():\n    import rllib_alma_mi.nn.mine\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = _imports(path, "probe", set(GRAPH))
    assert found == {"rllib_alma_mi.app", "rllib_alma_mi.app.cli", "rllib_alma_mi.nn.mine"}
