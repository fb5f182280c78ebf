"""The import graph runs one way (cnn_jax/ARCHITECTURE.md): each part imports only parts below it, and
model code is layers <- blocks <- families <- registry. Read from the source, so a new back edge fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "cnn_jax"
# Bottom to top; a module may import its own part and the parts of lower levels only.
LEVELS = (
    ("errors", "files", "tuning"),
    ("kernels",),
    ("config", "data", "models", "provenance"),
    ("validation", "rundir"),
    ("checkpoints",),
    ("loading",),
    ("weights",),
    ("train",),
    ("sweep", "analysis"),
    ("reproduce", "api"),
    ("cli",),
)
LEVEL_OF = {part: level for level, parts in enumerate(LEVELS) for part in parts}
MODEL_ORDER = {"layers": 0, "spec": 1, "blocks": 1, "registry": 3}  # any other models/ file is a family (2)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The cnn_jax modules a file imports (`from cnn_jax.pkg import mod` counts as cnn_jax.pkg.mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnn_jax":
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cnn_jax"}
    return found


def part(module: str) -> str:
    """The top-level part of a cnn_jax module: 'cnn_jax.train.loop' -> 'train'."""
    return module.split(".")[1] if "." in module else "__init__"


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_has_a_level():
    assert {part(m) for m in GRAPH} - {"__init__"} <= set(LEVEL_OF)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if part(m) != "__init__"))
def test_a_module_imports_only_its_own_part_and_lower_levels(module):
    mine = part(module)
    for target in GRAPH[module]:
        theirs = part(target)
        if theirs in (mine, "__init__"):
            continue
        assert LEVEL_OF[theirs] < LEVEL_OF[mine], f"{module} imports {target}: {theirs} is not below {mine}"


def test_model_code_runs_layers_to_blocks_to_families_to_registry():
    def rank(module: str) -> int:
        return MODEL_ORDER.get(module.rsplit(".", 1)[-1], 2)

    for module, targets in GRAPH.items():
        if module.startswith("cnn_jax.models.") and not module.endswith(".summary"):
            for target in targets:
                if target.startswith("cnn_jax.models."):
                    assert rank(target) < rank(module), f"{module} imports {target}"


def test_there_is_no_import_cycle():
    done, active = set(), []

    def visit(module: str) -> None:
        if module in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(module) :] + [module]))
        if module in done:
            return
        active.append(module)
        for target in GRAPH[module]:
            if target in GRAPH:
                visit(target)
        active.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)
