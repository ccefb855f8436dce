"""The package's structure: modules import only from their own layer or below, with no cycles, and stay small.

Every ``import`` counts, also one inside a function: a lazy import still makes the
lower layer depend on the upper one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sta

PACKAGE = Path(sta.__file__).resolve().parent  # the package under test: the source tree, or an installed wheel

# Lowest first. A module may import from its own layer (without a cycle) or any layer below.
LAYERS = (
    ("sta", "errors"),  # the root only re-exports lazily (by name, no import statements)
    ("utils", "core"),
    ("data", "labels"),
    ("models",),
    ("adapters",),
    ("measure",),
    ("deploy",),
    ("factory",),
    ("evaluate", "vis"),
    ("demo",),
    ("cli", "__main__"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
HEAVY = ("av", "cv2", "transformers", "onnx", "onnxruntime", "openvino", "matplotlib")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    """``sta.models.vit`` -> ``models``; ``sta`` -> ``sta``."""
    return module.split(".")[1] if "." in module else module


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from sta.x import y`: the submodule sta.x.y when there is one, else sta.x
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import sta.core.prune.x` -> the module that exists
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_package_has_a_layer():
    assert len(MODULES) > 50, f"found only {len(MODULES)} modules under {PACKAGE}"
    assert {layer(m) for m in MODULES} <= set(RANK), "a new package must be given a layer in LAYERS"


def test_imports_only_run_downward():
    upward = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
              if RANK[layer(t)] > RANK[layer(m)]]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycles_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    cycle = find_cycle(packages)
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "sta.models.vit" in GRAPH["sta.factory"] and RANK["models"] < RANK["factory"]


@pytest.mark.parametrize("statement", ["import sta", "import sta.core.prune", "import sta.core.methods",
                                       "import sta.labels", "import sta.models.vit"])
def test_light_imports_load_no_heavy_or_optional_dependency(statement):
    code = f"import sys; {statement}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_needs_only_torch():
    allowed = {"torch", "sta", "__future__"} | set(sys.stdlib_module_names)
    for module, path in MODULES.items():
        if layer(module) != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert all(name.split(".")[0] in allowed for name in names), f"{module} imports {names}"


def test_modules_and_functions_stay_readable():
    long_modules = [f"{m}: {n}" for m, p in MODULES.items()
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}: {length}")
    assert not long_modules and not long_functions, long_modules + long_functions
