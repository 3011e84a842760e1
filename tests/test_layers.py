"""The product's packages depend one way: tasks -> evaluation -> tools -> agents -> graph.

Every import is checked, including the ones inside functions (a lazy import is still a
dependency), so a lower layer never reaches up into a higher one and no two modules of
different layers import each other. ``prompts`` is a data package any layer above ``tasks``
may read. See docs/architecture.md#layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("tasks", "evaluation", "tools", "agents", "graph")
RANK = {name: i for i, name in enumerate(LAYERS)}
DATA_PACKAGES = {"prompts": 1}  # package -> lowest layer rank allowed to import it


def product_modules() -> list[Path]:
    return sorted(p for pkg in (*LAYERS, "prompts") for p in (REPO / pkg).rglob("*.py")
                  if "candidates" not in p.parts)


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    layer = path.relative_to(REPO).parts[0]
    rank = RANK.get(layer, DATA_PACKAGES.get(layer, 0))
    upward = [f"line {line}: imports {pkg}" for line, pkg in imported_packages(path)
              if (pkg in RANK and RANK[pkg] > rank)
              or (pkg in DATA_PACKAGES and rank < DATA_PACKAGES[pkg])]
    assert not upward, f"{path.relative_to(REPO)} ({layer}) reaches up: {'; '.join(upward)}"


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from graph.builder import build_graph\n    import agents.x\n")
    assert imported_packages(mod) == [(2, "graph"), (3, "agents")]


def private_uses(path: Path) -> list[str]:
    """Private names of *other* product modules that ``path`` imports or reaches into."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    product = (*LAYERS, "prompts")
    out: list[str] = []
    modules: set[str] = set()  # local names bound to product modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in product:
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"line {node.lineno}: from {node.module} import {a.name}")
                else:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in product:
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__") and isinstance(node.value, ast.Name) and \
                node.value.id in modules:
            out.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return out


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_member_of_another_module_is_used(path: Path) -> None:
    found = private_uses(path)
    assert not found, f"{path.relative_to(REPO)} uses private names: {'; '.join(found)}"
