"""The code gate: static policy, then build / shape / budget checks in the sandbox.

``static_check`` never executes candidate code: it parses the source and applies the
policy of DESIGN.md §6 layer 1. An allowed import root is not an allowed capability, so
attribute chains rooted at an import are resolved against the real modules and checked
by identity (``F.torch.save`` is ``torch.save``): private attributes, modules off the
list (``torch.os``, ``torch.hub``, ``typing.sys`` ...) and file / native-code / global-state
functions are rejected. Monkeypatching (assigning to attributes of imported objects) is
rejected here and detected again at run time by the worker's integrity check.

``gate`` adds the dynamic stages in a sandboxed worker (job kind ``"gate"``, handled by
:func:`gate_job`): build the model, run dummy forwards, count parameters and FLOPs.
"""

from __future__ import annotations

import ast
import importlib
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from evaluation.report import Budgets

MAX_SOURCE_BYTES = 64 * 1024
ALLOWED_IMPORTS = ("torch", "torch.nn", "torch.nn.functional", "math", "typing", "collections",
                   "functools", "dataclasses")
# Modules that may be reached as attributes (never imported directly).
_REACHABLE = frozenset(ALLOWED_IMPORTS) | {
    "torch.nn.init", "torch.nn.utils", "torch.nn.utils.parametrize",
    "torch.nn.utils.parametrizations", "torch.linalg", "torch.fft", "torch.special",
    "collections.abc"}
_MODULE_REASONS = {
    "torch.hub": "it downloads and runs code", "torch.jit": "it loads and saves TorchScript files",
    "torch.ops": "it loads native libraries (torch.ops.load_library)",
    "torch.utils": "it holds cpp_extension (compiles native code), data loaders and file I/O",
    "torch.library": "it registers native operators", "torch.classes": "it loads native classes",
    "torch.backends": "it changes global backend settings of the evaluator",
    "torch.distributed": "it opens sockets and processes",
    "torch.multiprocessing": "it starts processes",
    "torch.autograd": "it installs global autograd hooks",
    "torch.overrides": "it intercepts the evaluator's torch calls",
    "torch.serialization": "it reads and writes files",
    "torch.storage": "it maps files into memory", "torch.package": "it reads and writes files",
    "torch.random": "it changes the global random state",
    "torch.cuda": "it changes device state", "torch.compiler": "it compiles code and writes caches",
    "torch.nn.modules": "it holds global module hooks (register_module_forward_hook)"}
_DENIED = {
    "torch.save": "writes files", "torch.load": "reads files and unpickles objects",
    "torch.from_file": "reads files", "torch.compile": "compiles code and writes caches",
    "torch.manual_seed": "changes the evaluator's global random state",
    "torch.seed": "changes the evaluator's global random state",
    "torch.use_deterministic_algorithms": "changes global torch settings",
    "torch.init_num_threads": "changes global threading", "torch.fork": "starts async work",
    "torch.wait": "waits on async work", "torch.get_file_path": "touches files",
    "torch.import_ir_module": "loads TorchScript files",
    "torch.import_ir_module_from_buffer": "loads TorchScript code",
    "typing.get_type_hints": "evaluates strings as code",
    "typing.ForwardRef": "evaluates strings as code",
    "functools.update_wrapper": "copies attributes onto other objects (monkeypatching)",
    "functools.wraps": "copies attributes onto other objects (monkeypatching)"}
_DECORATOR_ONLY = {"dataclasses.dataclass"}  # called on a torch class it rewrites that class
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "memoryview", "type", "exit", "quit", "help",
    "license", "credits", "copyright"})
_INTROSPECTION = frozenset({
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "gi_frame", "gi_code",
    "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "tb_frame", "tb_next", "co_code", "co_consts", "co_names", "mro"})
_IO_ATTRS = frozenset({"save", "load", "from_file", "tofile", "fromfile", "dump", "load_library",
                       "numpy", "ctypes", "untyped_storage"})
_MODULE_INTERNALS = frozenset({
    "_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks",
    "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_non_persistent_buffers_set",
    "_version", "_cdata", "_base", "_grad_fn"})
_HOOK_PREFIXES = ("register_module_", "register_state_dict", "register_load_state_dict",
                  "_register_")
ALLOWED_DUNDER_DEFS = frozenset({"__init__", "__post_init__", "__repr__", "__str__", "__len__",
                                 "__getitem__", "__iter__", "__contains__"})
_OVERRIDABLE = frozenset({"forward", "extra_repr", "reset_parameters"})
ALLOWED_MSG = ", ".join(ALLOWED_IMPORTS)


class GateCheck(BaseModel):
    """One gate stage and its outcome."""

    name: Literal["syntax", "policy", "build", "shape", "budget"]
    ok: bool
    detail: str = ""


class GateReport(BaseModel):
    """Outcome of the gate; ``message`` is written for the Code-Fixer."""

    ok: bool
    checks: list[GateCheck] = Field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    message: str = ""
    isolation: list[str] = Field(default_factory=list)


# --- static policy ------------------------------------------------------------------------


def _resolve(dotted: str) -> tuple[list[Any], bool]:
    """Objects along ``dotted`` (root module first); False if a step does not exist."""
    parts = dotted.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
    except ImportError:
        return [], False
    objs = [obj]
    for part in parts[1:]:
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - a missing attribute fails at build time instead
            return objs, False
        objs.append(obj)
    return objs, True


def _denied_ids() -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    for dotted, why in list(_DENIED.items()) + [(d, "") for d in _DECORATOR_ONLY]:
        objs, ok = _resolve(dotted)
        if ok:
            out[id(objs[-1])] = (dotted, why)
    return out


class _Policy(ast.NodeVisitor):
    """Collects ``(line, col, problem, fix)`` violations of the candidate policy."""

    def __init__(self, tree: ast.Module, extra_imports: tuple[str, ...]) -> None:
        self.tree = tree
        self.extra = extra_imports
        self.allowed_imports = set(ALLOWED_IMPORTS) | set(extra_imports)
        self.violations: list[tuple[int, int, str, str]] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted path of an imported object
        self.import_bound: set[str] = set()  # names assigned an imported object
        self.docstrings: set[int] = set()
        self.decorators: set[int] = set()
        self.local_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        self.denied = _denied_ids()
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
            body = getattr(node, "body", None)
            scoped = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            if isinstance(node, scoped) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant):
                self.docstrings.add(id(body[0].value))
            for dec in getattr(node, "decorator_list", []):
                self.decorators.add(id(dec.func if isinstance(dec, ast.Call) else dec))

    def bad(self, node: ast.AST, problem: str, fix: str) -> None:
        self.violations.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0),
                                problem, fix))

    # imports
    def _module_ok(self, name: str) -> bool:
        return name in _REACHABLE or any(name == e or name.startswith(e + ".") for e in self.extra)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name not in self.allowed_imports:
                self.bad(node, f"import of '{a.name}' is not allowed",
                         f"only import: {ALLOWED_MSG}")
            elif a.asname:
                self.aliases[a.asname] = a.name
            else:
                self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if mod == "__future__":
            return
        if node.level or mod not in self.allowed_imports:
            self.bad(node, f"import from '{'.' * node.level}{mod}' is not allowed",
                     f"only import from: {ALLOWED_MSG}")
            return
        for a in node.names:
            if a.name == "*":
                self.bad(node, "star imports are not allowed", "import the names you use")
                continue
            dotted = f"{mod}.{a.name}"
            if self._chain_ok(node, dotted, as_value=False):
                self.aliases[a.asname or a.name] = dotted

    # attribute chains rooted at an import
    def _chain_ok(self, node: ast.AST, dotted: str, as_value: bool) -> bool:
        parts = dotted.split(".")
        objs, _ = _resolve(dotted)
        for i, part in enumerate(parts[1:], start=1):
            prefix = ".".join(parts[: i + 1])
            if part.startswith("__") and part.endswith("__"):
                return True  # dunder rules live in visit_Attribute (e.g. nn.Module.__init__)
            if part.startswith("_"):
                self.bad(node, f"'{prefix}' is a private attribute", "use only public torch API")
                return False
            if i >= len(objs):
                return True  # does not exist: the build stage reports it
            obj, owner = objs[i], objs[i - 1]
            if isinstance(obj, types.ModuleType) and not self._module_ok(obj.__name__):
                why = _MODULE_REASONS.get(obj.__name__, "it is not on the allowed module list")
                self.bad(node, f"'{prefix}' (module {obj.__name__}) is not allowed: {why}",
                         "build the model from torch, torch.nn and torch.nn.functional layers only")
                return False
            if id(obj) in self.denied and self.denied[id(obj)][0] not in _DECORATOR_ONLY:
                name, why = self.denied[id(obj)]
                self.bad(node, f"'{prefix}' ({name}) is not allowed: it {why}",
                         "remove it; the evaluator handles files, seeds and settings")
                return False
            if isinstance(owner, types.ModuleType) and part.startswith("set_"):
                self.bad(node, f"'{prefix}' changes global state of the evaluator",
                         "remove it; configure things inside your own modules")
                return False
        final = objs[-1] if len(objs) == len(parts) else None
        decorator_only = final is not None and id(final) in self.denied \
            and self.denied[id(final)][0] in _DECORATOR_ONLY
        if as_value and decorator_only and id(node) not in self.decorators:
            self.bad(node, f"'{dotted}' may only be used as a decorator",
                     "use @dataclass on your own classes")
            return False
        if as_value and isinstance(final, types.ModuleType):
            parent = getattr(node, "parent", None)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.bad(node, f"module '{dotted}' is used as a value",
                         "use modules only to access their attributes (e.g. nn.Conv2d)")
                return False
        return True

    def _root_chain(self, node: ast.AST) -> tuple[ast.AST, list[str]]:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return node, parts[::-1]

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        parent = getattr(node, "parent", None)
        if attr.startswith("__") and attr.endswith("__"):
            if not (attr == "__init__" and isinstance(parent, ast.Call) and parent.func is node):
                self.bad(node, f"dunder attribute access '.{attr}' is not allowed",
                         "only super().__init__(...) may use a dunder attribute")
        elif attr in _INTROSPECTION:
            self.bad(node, f"'.{attr}' (frame/code introspection) is not allowed", "remove it")
        elif attr in _IO_ATTRS:
            self.bad(node, f"'.{attr}' can read/write files or leave torch", "remove it")
        elif attr in _MODULE_INTERNALS:
            self.bad(node, f"'.{attr}' touches nn.Module/tensor internals",
                     "use register_parameter/register_buffer/add_module and public API")
        elif attr.startswith(_HOOK_PREFIXES):
            self.bad(node, f"'.{attr}' installs a global or state-dict hook", "remove it")
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._check_target(node)
        root, parts = self._root_chain(node)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            self._chain_ok(node, ".".join([self.aliases[root.id], *parts]), as_value=True)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._check_target(node)
        self.generic_visit(node)

    def _check_target(self, node: ast.AST) -> None:
        root = node
        while isinstance(root, ast.Attribute | ast.Subscript):
            root = root.value
        if not isinstance(root, ast.Name):
            self.bad(node, "assignment to an attribute of a computed object",
                     "assign only to attributes of self or of objects you created")
        elif root.id in self.aliases or root.id in self.import_bound:
            self.bad(node, f"assignment to an attribute of imported '{root.id}' (monkeypatching)",
                     "do not modify torch or library objects; define your own module instead")

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in FORBIDDEN_NAMES:
            self.bad(node, f"'{name}' is not allowed", "remove it; use plain attribute access")
        elif name.startswith("__") and name != "__name__":
            self.bad(node, f"name '{name}' is not allowed", "remove it")
        elif name in self.aliases and isinstance(node.ctx, ast.Load):
            self._chain_ok(node, self.aliases[name], as_value=True)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        root, _ = self._root_chain(node.value)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            for t in node.targets:
                self.import_bound.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str | bytes) and id(node) not in self.docstrings:
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in text and text != "__main__":
                self.bad(node, "string containing '__' (string-based attribute access)",
                         "remove dunder names from strings")

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if isinstance(node, ast.AsyncFunctionDef):
            self.bad(node, "async functions are not allowed", "use a plain def")
        if node.name.startswith("__") and node.name not in ALLOWED_DUNDER_DEFS:
            self.bad(node, f"defining '{node.name}' is not allowed",
                     f"only these dunder methods may be defined: {sorted(ALLOWED_DUNDER_DEFS)}")
        self.generic_visit(node)

    visit_FunctionDef = _visit_def
    visit_AsyncFunctionDef = _visit_def

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        import torch.nn as nn

        if node.keywords:
            self.bad(node, "class keywords (metaclass=...) are not allowed", "remove them")
        for base in node.bases:
            self._check_base(base, nn)
        api = {n for n in dir(nn.Module) if not n.startswith("__")} - _OVERRIDABLE
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in api:
                self.bad(item, f"method '{item.name}' overrides nn.Module.{item.name}",
                         f"rename it; only {sorted(_OVERRIDABLE)} may be overridden")
        self.generic_visit(node)

    def _check_base(self, base: ast.expr, nn: types.ModuleType) -> None:
        if isinstance(base, ast.Name) and (base.id in self.local_classes or base.id == "object"):
            return
        root, parts = self._root_chain(base)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            objs, ok = _resolve(".".join([self.aliases[root.id], *parts]))
            import typing

            if ok and (objs[-1] is typing.NamedTuple or (
                    isinstance(objs[-1], type) and issubclass(objs[-1], nn.Module))):
                return
        self.bad(base, f"base class '{ast.unparse(base)}' is not allowed",
                 "subclass nn.Module (or its subclasses), typing.NamedTuple or your own classes")

    def _forbid(self, node: ast.AST) -> None:
        self.bad(node, f"'{type(node).__name__}' is not allowed in model code", "remove it")

    visit_Await = visit_AsyncFor = visit_AsyncWith = _forbid


def _fixer_message(stage: str, intro: str, lines: Iterable[str]) -> str:
    body = "\n".join(f"- {line}" for line in lines)
    return (f"Gate stage '{stage}' failed: {intro}\n{body}\n"
            "Change only what these points need; the file must keep defining "
            "build_model(num_classes) that returns a torch.nn.Module.")


def static_check(source: str, *, extra_allowed_imports: tuple[str, ...] = ()) -> GateReport:
    """Check candidate source against the policy without executing it.

    Args:
        source: Candidate module source.
        extra_allowed_imports: Additional importable modules (e.g. "torchvision.models").

    Returns:
        A report with a "syntax" and (if parsed) a "policy" check; ``ok`` when both pass.
    """
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        detail = f"source is {size} bytes; the limit is {MAX_SOURCE_BYTES}"
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=_fixer_message("syntax", detail, ["write a shorter module"]))
    try:
        tree = ast.parse(source, filename="<candidate>")
    except SyntaxError as e:
        where = f"line {e.lineno}, col {e.offset}"
        text = (e.text or "").strip()
        detail = f"{e.msg} ({where})" + (f": {text}" if text else "")
        hint = f"{where}: {e.msg}" + (f" in `{text}`" if text else "")
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=_fixer_message("syntax", "the code does not parse.", [hint]))
    except (ValueError, RecursionError, MemoryError) as e:
        detail = f"cannot parse: {type(e).__name__}: {e}"
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=_fixer_message("syntax", detail, ["simplify the code"]))
    checks = [GateCheck(name="syntax", ok=True)]
    policy = _Policy(tree, tuple(extra_allowed_imports))
    try:
        policy.visit(tree)
    except RecursionError:
        policy.bad(tree, "the code is nested too deeply to check", "flatten it")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "build_model" for n in tree.body):
        policy.bad(tree, "no top-level function build_model",
                   "define `def build_model(num_classes: int) -> nn.Module` at module level")
    found = sorted(set(policy.violations))
    if not found:
        checks.append(GateCheck(name="policy", ok=True))
        return GateReport(ok=True, checks=checks)
    lines = [(f"line {ln}, col {col}: " if ln else "") + f"{what}. Fix: {fix}"
             for ln, col, what, fix in found[:20]]
    if len(found) > 20:
        lines.append(f"... and {len(found) - 20} more")
    checks.append(GateCheck(name="policy", ok=False, detail="; ".join(lines[:5])))
    return GateReport(ok=False, checks=checks, message=_fixer_message(
        "policy", "the code breaks the safety rules for model code (nothing was run).", lines))


# --- dynamic stages -----------------------------------------------------------------------


def gate(source: str, *, budgets: Budgets, image_size: int = 64, num_classes: int = 8,
         timeout_s: float = 60, extra_allowed_imports: tuple[str, ...] = (),
         limits: Any = None) -> GateReport:
    """Run the full gate: static policy, then build, shape and budget in the sandbox.

    Args:
        source: Candidate module source.
        budgets: Device budgets (``max_params`` and ``max_flops`` are checked here).
        image_size: Side of the square dummy input.
        num_classes: Expected number of outputs.
        timeout_s: Wall-clock limit of the sandboxed run.
        extra_allowed_imports: Passed to :func:`static_check`.
        limits: Optional ``SandboxLimits`` (its ``timeout_s`` is replaced by ``timeout_s``).

    Returns:
        The report; ``message`` explains the first failing stage to the Code-Fixer.
    """
    from tools.sandbox import SandboxLimits, run_job

    report = static_check(source, extra_allowed_imports=extra_allowed_imports)
    if not report.ok:
        return report
    lim = (limits or SandboxLimits()).model_copy(update={"timeout_s": timeout_s})
    payload = {"code": source, "image_size": image_size, "num_classes": num_classes,
               "budgets": budgets.model_dump(), "threads": 1}
    res = run_job("gate", payload, limits=lim)
    checks = list(report.checks)
    if not res.ok or res.result is None:
        what = {"timeout": f"building and running the model took longer than {timeout_s:g} s "
                           "(an endless loop, or a model far too large)",
                "memory": "building or running the model ran out of memory (make it smaller)",
                "tamper": "the code modified torch or evaluator internals at run time"}.get(
            res.error_kind or "", f"the sandboxed run failed ({res.error_kind}): {res.error}")
        checks.append(GateCheck(name="build", ok=False, detail=what))
        return GateReport(ok=False, checks=checks, isolation=res.isolation,
                          message=_fixer_message("build", what, [res.error or what]))
    out = res.result
    checks += [GateCheck(**c) for c in out["checks"]]
    failed = next((c for c in checks if not c.ok), None)
    message = "" if failed is None else _fixer_message(
        failed.name, out.get("problem", failed.detail), out.get("hints", [failed.detail]))
    return GateReport(ok=failed is None, checks=checks, params=out.get("params"),
                      flops=out.get("flops"), message=message, isolation=res.isolation)


def gate_job(payload: dict, workdir: Path) -> dict:
    """Worker-side gate handler: build, shape and budget checks (see ``check_candidate``).

    Args:
        payload: ``code``, ``image_size``, ``num_classes``, ``budgets`` (a Budgets dict).
        workdir: The job's scratch directory (unused).

    Returns:
        ``{"checks": [...], "params", "flops"}`` plus ``problem``/``hints`` on a failure.
    """
    from tools.candidate import check_candidate

    budgets = Budgets(**payload.get("budgets", {}))
    return check_candidate(payload["code"], image_size=int(payload["image_size"]),
                           num_classes=int(payload["num_classes"]),
                           max_params=budgets.max_params, max_flops=budgets.max_flops)
