"""The rules of docs/architecture.md#layers, checked on the product's source.

* Packages depend one way: tasks -> evaluation -> tools -> agents -> graph. Every import is
  checked, including the ones inside functions (a lazy import is still a dependency), so a
  lower layer never reaches up and no two layers import each other. ``prompts`` is a data
  package any layer above ``tasks`` may read.
* No module uses another module's private (``_name``) members.
* No file over 400 lines, no function over 60 lines unless the line above it says why
  (``# long: <reason>``); every package is marked typed.
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


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def long_functions(path: Path) -> list[str]:
    """Functions over the limit whose preceding line does not say why (``# long: ...``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
            reason = lines[first - 2].strip() if first >= 2 else ""
            if length > MAX_FUNCTION_LINES and not reason.startswith("# long:"):
                out.append(f"{node.name} (line {node.lineno}, {length} lines)")
    return out


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_files_and_functions_stay_small(path: Path) -> None:
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    assert n_lines <= MAX_FILE_LINES, f"{path.relative_to(REPO)} has {n_lines} lines"
    assert not long_functions(path), f"{path.relative_to(REPO)}: {long_functions(path)}"


def test_the_size_check_sees_a_long_function_and_its_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    mod = tmp_path / "m.py"
    mod.write_text(f"def f():\n{body}\n\n# long: one table\ndef g():\n{body}")
    assert long_functions(mod) == ["f (line 1, 61 lines)"]


@pytest.mark.parametrize("package", [*LAYERS, "prompts"])
def test_every_package_is_marked_typed(package: str) -> None:
    assert (REPO / package / "py.typed").is_file()


def test_the_private_check_sees_imports_and_attribute_access(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("from tools.sandbox import _POLICY, run_job\nimport tools.gate as g\n"
                   "from tools import train\nx = g._rules\ny = train.__name__\nz = run_job._x\n")
    assert private_uses(mod) == ["line 1: from tools.sandbox import _POLICY",
                                 "line 4: g._rules", "line 6: run_job._x"]


def direct_ast_parses(path: Path) -> list[int]:
    """Lines of ``path`` that call ``ast.parse`` (or ``compile`` to an AST) directly."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "parse" and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "ast":
            out.append(node.lineno)
    return out


def test_product_code_parses_python_only_through_the_locked_helper() -> None:
    # CPython 3.11's AST constructor is not thread-safe (tasks/pyast.py); candidate branches
    # run in threads, so a direct ast.parse in the product can fail at random.
    direct = {str(p.relative_to(REPO)): lines for p in product_modules()
              if p.name != "pyast.py" and (lines := direct_ast_parses(p))}
    assert not direct, f"use tasks.pyast.parse instead of ast.parse: {direct}"


def test_the_parse_check_sees_a_direct_call(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import ast\n\ntree = ast.parse('x = 1')\n")
    assert direct_ast_parses(bad) == [3]
