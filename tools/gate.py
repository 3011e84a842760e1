"""The code gate: static policy, then build / shape / budget checks in the sandbox.

``static_check`` never executes candidate code: it parses the source and applies the
policy of docs/security.md, the gate. An allowed import root is not an allowed capability, so
attribute chains rooted at an import are resolved against the real modules and checked
by identity (``F.torch.save`` is ``torch.save``): private attributes, modules off the
list (``torch.os``, ``torch.hub``, ``typing.sys`` ...), metaclasses and file / native-code /
global-state / string-evaluating functions are rejected. Monkeypatching (assigning to
attributes of imported objects) is rejected here and detected again at run time by the
worker's integrity check.

Rules that close ways of reaching attributes or code by name:

- private (``_name``) attributes only as ``self._name`` (or ``super()._name``) inside
  methods whose first parameter is ``self`` and whose decorators are at most
  ``@property`` / ``@torch.no_grad()``; ``self`` may be bound nowhere else, ``super``,
  ``property`` and import aliases are never rebound, ``super`` is only ``super()`` or
  ``super(YourClass, self)`` in such a method, and a method that reaches private
  attributes of ``self`` may only be reached through ``self`` / ``super()`` (never
  ``Class.method(other)``, a class-body reference or ``X.__init__(other)``), so ``self``
  is always an instance of the candidate's own classes; nn.Module's own private names
  stay off limits on ``self`` too;
- ``match`` class patterns: keyword attribute names are checked like attributes, the class
  must be the candidate's own, a builtin type or an import chain (library classes take no
  positional sub-patterns, which read attributes named by ``__match_args__``);
- no string type hints / forward references (except inside ``Literal[...]``): they are
  evaluated as code by ``typing.get_type_hints`` and ``functools.singledispatch``, both
  denied as well;
- class bodies may not bind names of ``nn.Module`` (``train = ...``, ``for``, ``with``,
  walrus, imports ...) except the overridable ones; attributes named like ``nn.Module``
  members (other than ``training``) may not be assigned on any object;
- no metaclasses (``typing.ABCMeta`` ...) and nothing that hands out ``type``
  (``typing.get_origin``, ``type_before_parametrizations``), nor
  ``dataclasses.make_dataclass``: classes come from class statements only;
- ``str.format`` / ``format_map`` only on string constants whose fields have no
  attribute (``.``) or index (``[``) access (f-strings are checked as code);
- a module-level ``__all__`` list of strings is allowed.

The gate is a first filter in front of the OS sandbox, not the boundary.

``gate`` adds the dynamic stages in a sandboxed worker (job kind ``"gate"``, handled by
:func:`gate_job`): build the model, run dummy forwards, count parameters and FLOPs.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import string
import types
from collections.abc import Iterable, Iterator
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
    "functools.wraps": "copies attributes onto other objects (monkeypatching)",
    # register() reads the first parameter's type hint through typing.get_type_hints
    "functools.singledispatch": "evaluates string type hints as code",
    "functools.singledispatchmethod": "evaluates string type hints as code",
    "dataclasses.make_dataclass": "builds classes from a namespace dict, past the class checks",
    # both hand out `type` itself, which builds classes past the class checks
    "torch.get_device_module": "hands out device modules (torch.cuda ...) as values",
    "typing.get_origin": "returns the class behind a type hint (typing.Type[...] gives type)",
    "torch.nn.utils.parametrize.type_before_parametrizations": "returns type(x), i.e. type "
                                                               "itself for a class"}
_DENIED_FIX = {
    "typing.get_type_hints": "remove it; write the types themselves",
    "typing.ForwardRef": "remove it; write the types themselves",
    "functools.singledispatch": "dispatch with isinstance checks in a plain function",
    "functools.singledispatchmethod": "dispatch with isinstance checks in a plain method",
    "dataclasses.make_dataclass": "write a class statement (with @dataclass if needed)"}
_DECORATOR_ONLY = {"dataclasses.dataclass"}  # called on a torch class it rewrites that class
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "memoryview", "type", "exit", "quit", "help",
    "license", "credits", "copyright"})
_INTROSPECTION = frozenset({
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "gi_frame", "gi_code",
    "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "tb_frame", "tb_next", "co_code", "co_consts", "co_names", "mro",
    "fget", "fset", "fdel"})  # a property's functions, callable with any object as self
_IO_ATTRS = frozenset({"save", "load", "from_file", "tofile", "fromfile", "dump", "load_library",
                       "numpy", "ctypes", "untyped_storage",
                       # storage().type("pkg.mod") imports by name; shared memory starts
                       # libshm's manager process and leaves sockets behind
                       "storage", "share_memory", "share_memory_"})
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
_FORMAT_METHODS = frozenset({"format", "format_map"})
# Builtin classes a match class pattern may name (they match the subject itself).
_MATCH_BUILTINS = frozenset({"bool", "bytearray", "bytes", "dict", "float", "frozenset", "int",
                             "list", "set", "str", "tuple"})
# Names the private-attribute rule relies on: rebinding them would fake 'self' or 'super()'.
_RESERVED = frozenset({"self", "super", "property"})
# Decorators a method using private attributes of self may carry (none keeps the function).
_SAFE_METHOD_DECORATORS = ("torch.no_grad", "torch.enable_grad", "torch.inference_mode")
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


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
    # The forbidden builtins stay forbidden when some module re-exports them.
    for name in FORBIDDEN_NAMES:
        if hasattr(builtins, name):
            out.setdefault(id(getattr(builtins, name)),
                           (f"builtins.{name}", "is a forbidden builtin"))
    return out


@functools.lru_cache(maxsize=1)
def _safe_decorator_ids() -> frozenset[int]:
    resolved = [_resolve(d) for d in _SAFE_METHOD_DECORATORS]
    return frozenset(id(objs[-1]) for objs, ok in resolved if ok)


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not _is_dunder(name)


@functools.lru_cache(maxsize=1)
def _module_names() -> tuple[frozenset[str], frozenset[str]]:
    """Non-dunder names of nn.Module and of its instances, and the private ones among them."""
    import torch.nn as nn

    names = {n for n in dir(nn.Module) if not _is_dunder(n)} | set(vars(nn.Module()))
    return frozenset(names), frozenset(n for n in names if n.startswith("_"))


def _scope(node: ast.AST) -> ast.AST:
    """Return the function, lambda, class or module whose scope evaluates ``node``.

    Decorators, defaults, annotations and bases belong to the enclosing scope.
    """
    child, parent = node, getattr(node, "parent", None)
    while parent is not None:
        # body_of is set by _Policy for the statements of every body (and a lambda's body)
        if getattr(child, "body_of", None) is parent \
                and isinstance(parent, (*_FUNCS, ast.ClassDef, ast.Lambda)):
            return parent
        child, parent = parent, getattr(parent, "parent", None)
    return child


def _positional(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args]


def _is_self_method(node: ast.AST) -> bool:
    """Tell whether ``node`` is a def in a class body whose first parameter is ``self``."""
    if not isinstance(node, _FUNCS) or not isinstance(_scope(node), ast.ClassDef):
        return False
    params = _positional(node.args)
    return bool(params) and params[0].arg == "self"


def _is_super_call(node: ast.AST) -> bool:
    """Tell whether ``node`` is ``super()`` or ``super(Name, self)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "super" and not node.keywords):
        return False
    args = node.args
    return not args or (len(args) == 2 and isinstance(args[0], ast.Name)
                        and isinstance(args[1], ast.Name) and args[1].id == "self")


def _own_bindings(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Names that ``node`` itself binds (not those of its children)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        yield node.id, node
    elif isinstance(node, ast.arg):
        yield node.arg, node
    elif isinstance(node, (*_FUNCS, ast.ClassDef)):
        yield node.name, node
    elif isinstance(node, ast.alias):
        yield node.asname or node.name.split(".")[0], node
    elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
        yield node.name, node
    elif isinstance(node, ast.MatchMapping) and node.rest:
        yield node.rest, node
    elif isinstance(node, ast.Global | ast.Nonlocal):
        for name in node.names:
            yield name, node


def _class_bindings(cls: ast.ClassDef) -> Iterator[tuple[str, ast.AST]]:
    """Names bound in the class body's own scope, by any statement or expression."""
    stack: list[ast.AST] = list(cls.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.arg):
            continue  # parameters bind in their function's scope
        yield from _own_bindings(node)
        if isinstance(node, _FUNCS):
            a = node.args
            params = [*_positional(a), *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
            stack += [*node.decorator_list, *a.defaults, *(d for d in a.kw_defaults if d),
                      *(p.annotation for p in params if p.annotation)]
            stack += [node.returns] if node.returns else []
        elif isinstance(node, ast.Lambda):
            stack += [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        elif isinstance(node, ast.ClassDef):
            stack += [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        elif isinstance(node, _COMPREHENSIONS):
            stack.append(node.generators[0].iter)  # the rest is the comprehension's scope
        else:
            stack.extend(ast.iter_child_nodes(node))


def _format_problem(text: str) -> str | None:
    """Why a ``str.format`` template is unsafe (attribute / index fields), or None."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as e:
        return f"it is not a valid format string ({e})"
    for _literal, field, spec, _conversion in fields:
        if field is not None and ("." in field or "[" in field):
            return f"the field '{{{field}}}' reads an attribute or an item"
        if spec and (problem := _format_problem(spec)):  # nested fields: "{0:{1.x}}"
            return problem
    return None


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
        self.annotations: set[int] = set()  # ids of every node inside a type hint
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        self.local_classes = {n.name for n in classes}
        self.denied = _denied_ids()
        self.module_api, self.module_private = _module_names()
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
            body = getattr(node, "body", None)
            for stmt in body if isinstance(body, list) else [body] if body else []:
                stmt.body_of = node  # type: ignore[union-attr]
            scoped = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            if isinstance(node, scoped) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant):
                self.docstrings.add(id(body[0].value))
            for dec in getattr(node, "decorator_list", []):
                self.decorators.add(id(dec.func if isinstance(dec, ast.Call) else dec))
            hints = [getattr(node, "annotation", None), getattr(node, "returns", None)]
            for hint in hints:
                if hint is not None:
                    self.annotations.update(id(n) for n in ast.walk(hint))
        self._collect_aliases(tree)
        methods = [n for n in ast.walk(tree) if _is_self_method(n)]
        self.plain_methods = {id(m) for m in methods
                              if all(self._safe_decorator(d) for d in m.decorator_list)}
        self.tainted = self._tainted_methods(methods)
        self.class_methods = {id(c): {name for name, where in _class_bindings(c)
                                      if isinstance(where, _FUNCS)} for c in classes}
        self.method_names = set().union(*self.class_methods.values())
        bases = {b.id for c in classes for b in c.bases if isinstance(b, ast.Name)}
        self.module_like = {id(c) for c in classes if c.name in bases or any(
            not self._plain_base(b) for b in c.bases)}
        self._check_bindings(tree)

    def bad(self, node: ast.AST, problem: str, fix: str) -> None:
        self.violations.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0),
                                problem, fix))

    # setup: imports, methods, bindings
    def _collect_aliases(self, tree: ast.Module) -> None:
        """Pre-fill import aliases, so rules can resolve names used before the visit sees them."""
        found: list[tuple[ast.alias, str, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a, a.asname or a.name.split(".")[0],
                           a.name if a.asname else a.name.split(".")[0])
                          for a in node.names if a.name in self.allowed_imports]
            elif isinstance(node, ast.ImportFrom) and not node.level \
                    and node.module in self.allowed_imports:
                found += [(a, a.asname or a.name, f"{node.module}.{a.name}")
                          for a in node.names if a.name != "*"]
        for where, name, dotted in found:
            # one name, two imports: which one holds at run time depends on the control flow
            if self.aliases.setdefault(name, dotted) != dotted:
                self.bad(where, f"'{name}' is imported as two different things "
                                f"({self.aliases[name]} and {dotted})",
                         "give each import its own name")

    def _resolved(self, expr: ast.AST) -> Any:
        """Return the library object an import-rooted name or chain names, else None."""
        root, parts = self._root_chain(expr)
        if not (isinstance(root, ast.Name) and root.id in self.aliases):
            return None
        objs, ok = _resolve(".".join([self.aliases[root.id], *parts]))
        return objs[-1] if ok else None

    def _safe_decorator(self, dec: ast.expr) -> bool:
        if isinstance(dec, ast.Name) and dec.id == "property":
            return True
        if isinstance(dec, ast.Call):
            if not all(isinstance(a, ast.Constant) for a in [*dec.args,
                                                             *(k.value for k in dec.keywords)]):
                return False
            dec = dec.func
        obj = self._resolved(dec)
        return obj is not None and id(obj) in _safe_decorator_ids()

    def _plain_base(self, base: ast.expr) -> bool:
        import typing

        return (isinstance(base, ast.Name) and base.id == "object") \
            or self._resolved(base) is typing.NamedTuple

    @staticmethod
    def _self_uses(method: ast.AST) -> tuple[bool, set[str]]:
        """Return what ``method`` reaches on its ``self`` (or ``super()``).

        That is: whether it reads private attributes there, and the attribute names it reaches
        (``__init__`` also for ``X.__init__(self, ...)``, which runs on this ``self``).
        """
        private, names = False, set()
        stack = list(method.body)  # type: ignore[attr-defined]
        while stack:
            node = stack.pop()
            if _is_self_method(node):  # a nested class's method has its own self
                stack += [*node.decorator_list, *node.args.defaults]  # type: ignore[attr-defined]
                continue
            if isinstance(node, ast.Attribute):
                base = node.value
                if (isinstance(base, ast.Name) and base.id == "self") or _is_super_call(base):
                    private |= _is_private(node.attr)
                    names.add(node.attr)
                call = getattr(node, "parent", None)
                if node.attr == "__init__" and isinstance(call, ast.Call) and call.func is node \
                        and call.args and isinstance(call.args[0], ast.Name) \
                        and call.args[0].id == "self":
                    names.add("__init__")  # Base.__init__(self, ...) runs on this self
            stack.extend(ast.iter_child_nodes(node))
        return private, names

    def _tainted_methods(self, methods: list[ast.AST]) -> set[str]:
        """Return the names of methods that reach private attributes of ``self``.

        Directly or through other such methods: called with a foreign object as ``self`` they
        would reach that object's private attributes, so only ``self`` may reach them.
        """
        uses = [(m.name, *self._self_uses(m)) for m in methods]  # type: ignore[attr-defined]
        tainted = {name for name, private, _ in uses if private}
        while True:
            found = {name for name, _, names in uses if names & tainted}
            if found <= tainted:
                return tainted
            tainted |= found

    def _check_bindings(self, tree: ast.Module) -> None:
        """Allow ``self`` only as a method's first parameter; never rebind reserved names.

        ``super`` / ``property`` and import aliases are trusted by the other rules.
        """
        for node in ast.walk(tree):
            for name, where in _own_bindings(node):
                if name == "self":
                    fn = getattr(getattr(where, "parent", None), "parent", None)
                    if not (isinstance(where, ast.arg) and _is_self_method(fn)
                            and _positional(fn.args)[0] is where):  # type: ignore[union-attr]
                        self.bad(where, "'self' is bound somewhere other than the first "
                                        "parameter of a method",
                                 "use the name self only for the first parameter of methods")
                elif name in _RESERVED:
                    self.bad(where, f"the builtin '{name}' is rebound",
                             f"choose another name than '{name}'")
                elif name in self.aliases and not isinstance(where, ast.alias):
                    self.bad(where, f"the imported name '{name}' is rebound",
                             f"choose another name; '{name}' must keep naming the import")

    def _self_state(self, expr: ast.AST) -> str:
        """Classify ``expr`` as the current method's ``self`` / ``super()``.

        Returns ``"ok"`` in a plain method, ``"decorated"`` in a method with other
        decorators, ``""`` for anything else.
        """
        if isinstance(expr, ast.Name) and expr.id == "self":
            scope = _scope(expr)
            while not isinstance(scope, ast.Module) and not _is_self_method(scope):
                scope = _scope(scope)
            if isinstance(scope, ast.Module):
                return ""
        elif _is_super_call(expr):
            scope = _scope(expr)
            if not _is_self_method(scope):
                return ""
        else:
            return ""
        return "ok" if id(scope) in self.plain_methods else "decorated"

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
                self.bad(node, f"'{prefix}' ({name}) is not allowed: it {why}", _DENIED_FIX.get(
                    name, "remove it; the evaluator handles files, seeds and settings"))
                return False
            if isinstance(obj, type) and issubclass(obj, type):
                self.bad(node, f"'{prefix}' is a metaclass: it builds classes past these checks",
                         "define classes with the class statement")
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

    def _attr_problem(self, attr: str, state: str, imported: bool) -> tuple[str, str] | None:
        """Why reading ``<object>.attr`` is not allowed (``state`` from ``_self_state``)."""
        if attr in _INTROSPECTION:
            return f"'.{attr}' (frame/code introspection) is not allowed", "remove it"
        if attr in _IO_ATTRS:
            return f"'.{attr}' can read/write files or leave torch", "remove it"
        if attr in _MODULE_INTERNALS or (state and attr in self.module_private):
            return (f"'.{attr}' touches nn.Module/tensor internals",
                    "use register_parameter/register_buffer/add_module and public API")
        if attr.startswith(_HOOK_PREFIXES):
            return f"'.{attr}' installs a global or state-dict hook", "remove it"
        if imported:
            return None  # private parts of import chains are reported by _chain_ok
        if (_is_private(attr) or attr in self.tainted) and state == "decorated":
            return (f"'self.{attr}' is used in a method with a decorator other than @property "
                    "or @torch.no_grad()", "remove the decorator, or make the attribute public")
        if _is_private(attr) and state != "ok":
            return (f"private attribute '.{attr}' on an object other than self",
                    "use _private attributes only as self._name inside methods whose first "
                    "parameter is self; use public attributes (or a plain function) otherwise")
        if attr in self.tainted and state != "ok":
            return (f"'.{attr}' is a method that uses private attributes of self, reached "
                    "through something other than self",
                    f"call it only as self.{attr}(...) or super().{attr}(...) inside a method")
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        parent = getattr(node, "parent", None)
        root, parts = self._root_chain(node)
        imported = isinstance(root, ast.Name) and root.id in self.aliases
        state = self._self_state(node.value)
        if attr in _FORMAT_METHODS:
            self._check_format(node)
        if _is_dunder(attr):
            if not (attr == "__init__" and isinstance(parent, ast.Call) and parent.func is node):
                self.bad(node, f"dunder attribute access '.{attr}' is not allowed",
                         "only super().__init__(...) may use a dunder attribute")
            elif not _is_super_call(node.value) and not (
                    parent.args and isinstance(parent.args[0], ast.Name)
                    and parent.args[0].id == "self" and self._self_state(parent.args[0]) == "ok"):
                self.bad(node, "'.__init__' is called on something other than self",
                         "call super().__init__(...) (or Base.__init__(self, ...)) in __init__")
        elif problem := self._attr_problem(attr, state, imported):
            self.bad(node, *problem)
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._check_target(node)
            if attr in self.module_api and attr != "training":
                self.bad(node, f"assigning '.{attr}' replaces nn.Module.{attr} on that object",
                         "use another attribute name")
        if imported:
            self._chain_ok(node, ".".join([self.aliases[root.id], *parts]),  # type: ignore
                           as_value=True)
        self.generic_visit(node)

    def _check_format(self, node: ast.Attribute) -> None:
        value = node.value
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            self.bad(node, f"'.{node.attr}' on something other than a string constant "
                           "(format fields can read attributes and items)",
                     "use an f-string")
        elif problem := _format_problem(value.value):
            text = value.value if len(value.value) <= 60 else value.value[:57] + "..."
            self.bad(node, f"format string {text!r}: {problem}",
                     "use an f-string, or only plain fields like {} and {name}")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._check_target(node)
        elif id(node) not in self.annotations:
            obj = self._resolved(node.value)
            if getattr(obj, "__module__", None) == "typing":
                for n in ast.walk(node.slice):
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) \
                            and not self._in_literal(n):
                        self.bad(n, f"string {n.value[:40]!r} in a typing subscript "
                                    "(a forward reference)",
                                 "write the type itself, not its name as a string")
        self.generic_visit(node)

    def _in_literal(self, node: ast.AST) -> bool:
        import typing

        child, parent = node, getattr(node, "parent", None)
        while parent is not None:
            if isinstance(parent, ast.Subscript) and child is parent.slice \
                    and self._resolved(parent.value) is typing.Literal:
                return True
            child, parent = parent, getattr(parent, "parent", None)
        return False

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
        load = isinstance(node.ctx, ast.Load)
        if name in FORBIDDEN_NAMES:
            self.bad(node, f"'{name}' is not allowed", "remove it; use plain attribute access")
        elif name.startswith("__") and name != "__name__":
            self.bad(node, f"name '{name}' is not allowed", "remove it")
        elif name == "super" and load:
            call = getattr(node, "parent", None)
            if not (isinstance(call, ast.Call) and call.func is node and _is_super_call(call)
                    and self._self_state(call) == "ok"
                    and all(a.id in self.local_classes for a in call.args[:1])):  # type: ignore
                self.bad(node, "'super' may only be called as super() (or super(YourClass, "
                               "self)) directly in a method whose first parameter is self "
                               "(decorators: only @property / @torch.no_grad())",
                         "call super().name(...) in the method itself")
        elif name in self.aliases and load:
            self._chain_ok(node, self.aliases[name], as_value=True)
        # a method taken as a value in its class body can be called with any object as self
        scope = _scope(node) if load and name in self.method_names else None
        if isinstance(scope, ast.ClassDef) and name in self.class_methods[id(scope)]:
            self.bad(node, f"method '{name}' is used as a value in the body of class {scope.name}",
                     f"call it as self.{name}(...) from other methods")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._is_all(node, node.targets, node.value):
            self.visit(node.value)
            return
        root, _ = self._root_chain(node.value)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            for t in node.targets:
                self.import_bound.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None and self._is_all(node, [node.target], node.value):
            self.visit(node.annotation)
            self.visit(node.value)
            return
        self.generic_visit(node)

    @staticmethod
    def _is_all(stmt: ast.Assign | ast.AnnAssign, targets: list[ast.expr],
                value: ast.expr) -> bool:
        """Tell whether this is a module-level ``__all__ = [...]`` of strings (allowed)."""
        return (isinstance(getattr(stmt, "parent", None), ast.Module) and len(targets) == 1
                and isinstance(targets[0], ast.Name) and targets[0].id == "__all__"
                and isinstance(value, ast.List | ast.Tuple)
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                        for e in value.elts))

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str | bytes) and id(node) not in self.docstrings:
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in text and text != "__main__":
                self.bad(node, "string containing '__' (string-based attribute access)",
                         "remove dunder names from strings")
        if isinstance(node.value, str) and id(node) in self.annotations \
                and not self._in_literal(node):
            self.bad(node, f"string type hint {node.value[:40]!r} (a forward reference)",
                     "write the type itself (e.g. nn.Module) or leave the hint out; "
                     "libraries evaluate string hints as code")

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
        api = self.module_api - _OVERRIDABLE
        for name, where in _class_bindings(node):
            if name not in api:
                continue
            if isinstance(where, _FUNCS):
                self.bad(where, f"method '{name}' overrides nn.Module.{name}",
                         f"rename it; only {sorted(_OVERRIDABLE)} may be overridden")
            elif id(node) in self.module_like:
                self.bad(where, f"'{name}' bound in the body of class {node.name} overrides "
                                f"nn.Module.{name}",
                         f"rename it; only {sorted(_OVERRIDABLE)} may be overridden (with def)")
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

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        cls = node.cls
        name = cls.id if isinstance(cls, ast.Name) else None
        library = self._resolved(cls) is not None
        if not (name in self.local_classes or name in _MATCH_BUILTINS or library):
            self.bad(cls, f"match class pattern on '{ast.unparse(cls)}'",
                     "match only your own classes, builtin types (int, str, ...) or torch "
                     "classes (case nn.Conv2d(): ...), or use isinstance")
        elif library and node.patterns:
            self.bad(cls, f"positional sub-patterns on library class '{ast.unparse(cls)}' read "
                          "attributes by name", "use isinstance and public attributes")
        for attr in node.kwd_attrs:
            if _is_dunder(attr):
                self.bad(node, f"match pattern reads the dunder attribute '{attr}'", "remove it")
            elif problem := self._attr_problem(attr, "", imported=False):
                self.bad(node, f"match pattern keyword: {problem[0]}", problem[1])
        self.generic_visit(node)

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
