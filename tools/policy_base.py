"""The gate policy's state and lookups: aliases, methods that reach ``self``, chains.

:class:`PolicyBase` collects what the rules in :class:`tools.policy.Policy` ask about:
import aliases, which methods reach private attributes of ``self``, whether a name is
this method's ``self`` / ``super()``, and whether an attribute chain rooted at an import
stays on the allowed list (docs/security.md, the gate).
"""

from __future__ import annotations

import ast
import types
from typing import Any

from tools.policy_ast import (
    FUNCS,
    class_bindings,
    is_self_method,
    is_super_call,
    own_bindings,
    positional,
    scope_of,
)
from tools.policy_rules import (
    ALLOWED_IMPORTS,
    DECORATOR_ONLY,
    DENIED_FIX,
    HOOK_PREFIXES,
    INTROSPECTION,
    IO_ATTRS,
    MODULE_INTERNALS,
    MODULE_REASONS,
    REACHABLE,
    RESERVED,
    denied_ids,
    is_private,
    module_names,
    resolve_dotted,
    safe_decorator_ids,
)


class PolicyBase(ast.NodeVisitor):
    """Collects ``(line, col, problem, fix)`` violations; the lookups the rules share."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.allowed_imports = set(ALLOWED_IMPORTS)
        self.violations: list[tuple[int, int, str, str]] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted path of an imported object
        self.import_bound: set[str] = set()  # names assigned an imported object
        self.docstrings: set[int] = set()
        self.decorators: set[int] = set()
        self.annotations: set[int] = set()  # ids of every node inside a type hint
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        self.local_classes = {n.name for n in classes}
        self.denied = denied_ids()
        self.module_api, self.module_private = module_names()
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
            body = getattr(node, "body", None)
            for stmt in body if isinstance(body, list) else [body] if body else []:
                stmt.body_of = node
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
        methods = [n for n in ast.walk(tree) if is_self_method(n)]
        self.plain_methods = {id(m) for m in methods
                              if all(self._safe_decorator(d) for d in m.decorator_list)}
        self.tainted = self._tainted_methods(methods)
        self.class_methods = {id(c): {name for name, where in class_bindings(c)
                                      if isinstance(where, FUNCS)} for c in classes}
        self.method_names = set().union(*self.class_methods.values())
        bases = {b.id for c in classes for b in c.bases if isinstance(b, ast.Name)}
        self.module_like = {id(c) for c in classes if c.name in bases or any(
            not self._plain_base(b) for b in c.bases)}
        self._check_bindings(tree)

    def bad(self, node: ast.AST, problem: str, fix: str) -> None:
        """Record a violation at ``node``: what is wrong and how to fix it."""
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

    def resolved(self, expr: ast.AST) -> Any:
        """Return the library object an import-rooted name or chain names, else None."""
        root, parts = self.root_chain(expr)
        if not (isinstance(root, ast.Name) and root.id in self.aliases):
            return None
        objs, ok = resolve_dotted(".".join([self.aliases[root.id], *parts]))
        return objs[-1] if ok else None

    def _safe_decorator(self, dec: ast.expr) -> bool:
        if isinstance(dec, ast.Name) and dec.id == "property":
            return True
        if isinstance(dec, ast.Call):
            if not all(isinstance(a, ast.Constant) for a in [*dec.args,
                                                             *(k.value for k in dec.keywords)]):
                return False
            dec = dec.func
        obj = self.resolved(dec)
        return obj is not None and id(obj) in safe_decorator_ids()

    def _plain_base(self, base: ast.expr) -> bool:
        import typing

        return (isinstance(base, ast.Name) and base.id == "object") \
            or self.resolved(base) is typing.NamedTuple

    @staticmethod
    def _self_uses(method: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[bool, set[str]]:
        """Return what ``method`` reaches on its ``self`` (or ``super()``).

        That is: whether it reads private attributes there, and the attribute names it reaches
        (``__init__`` also for ``X.__init__(self, ...)``, which runs on this ``self``).
        """
        private, names = False, set()
        stack: list[ast.AST] = list(method.body)
        while stack:
            node = stack.pop()
            if is_self_method(node):  # a nested class's method has its own self
                stack += [*node.decorator_list, *node.args.defaults]
                continue
            if isinstance(node, ast.Attribute):
                base = node.value
                if (isinstance(base, ast.Name) and base.id == "self") or is_super_call(base):
                    private |= is_private(node.attr)
                    names.add(node.attr)
                call = getattr(node, "parent", None)
                if node.attr == "__init__" and isinstance(call, ast.Call) and call.func is node \
                        and call.args and isinstance(call.args[0], ast.Name) \
                        and call.args[0].id == "self":
                    names.add("__init__")  # Base.__init__(self, ...) runs on this self
            stack.extend(ast.iter_child_nodes(node))
        return private, names

    def _tainted_methods(self, methods: list[ast.FunctionDef | ast.AsyncFunctionDef]
                         ) -> set[str]:
        """Return the names of methods that reach private attributes of ``self``.

        Directly or through other such methods: called with a foreign object as ``self`` they
        would reach that object's private attributes, so only ``self`` may reach them.
        """
        uses = [(m.name, *self._self_uses(m)) for m in methods]
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
            for name, where in own_bindings(node):
                if name == "self":
                    fn = getattr(getattr(where, "parent", None), "parent", None)
                    if not (isinstance(where, ast.arg) and is_self_method(fn)
                            and positional(fn.args)[0] is where):
                        self.bad(where, "'self' is bound somewhere other than the first "
                                        "parameter of a method",
                                 "use the name self only for the first parameter of methods")
                elif name in RESERVED:
                    self.bad(where, f"the builtin '{name}' is rebound",
                             f"choose another name than '{name}'")
                elif name in self.aliases and not isinstance(where, ast.alias):
                    self.bad(where, f"the imported name '{name}' is rebound",
                             f"choose another name; '{name}' must keep naming the import")

    def self_state(self, expr: ast.AST) -> str:
        """Classify ``expr`` as the current method's ``self`` / ``super()``.

        Returns ``"ok"`` in a plain method, ``"decorated"`` in a method with other
        decorators, ``""`` for anything else.
        """
        if isinstance(expr, ast.Name) and expr.id == "self":
            scope = scope_of(expr)
            while not isinstance(scope, ast.Module) and not is_self_method(scope):
                scope = scope_of(scope)
            if isinstance(scope, ast.Module):
                return ""
        elif is_super_call(expr):
            scope = scope_of(expr)
            if not is_self_method(scope):
                return ""
        else:
            return ""
        return "ok" if id(scope) in self.plain_methods else "decorated"

    # imports
    def _module_ok(self, name: str) -> bool:
        return name in REACHABLE
    def chain_ok(self, node: ast.AST, dotted: str, as_value: bool) -> bool:
        """Check an attribute chain rooted at an import; report and return False if denied."""
        parts = dotted.split(".")
        objs, _ = resolve_dotted(dotted)
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
                why = MODULE_REASONS.get(obj.__name__, "it is not on the allowed module list")
                self.bad(node, f"'{prefix}' (module {obj.__name__}) is not allowed: {why}",
                         "build the model from torch, torch.nn and torch.nn.functional layers only")
                return False
            if id(obj) in self.denied and self.denied[id(obj)][0] not in DECORATOR_ONLY:
                name, why = self.denied[id(obj)]
                self.bad(node, f"'{prefix}' ({name}) is not allowed: it {why}", DENIED_FIX.get(
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
            and self.denied[id(final)][0] in DECORATOR_ONLY
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

    def root_chain(self, node: ast.AST) -> tuple[ast.AST, list[str]]:
        """Split an attribute chain into its root node and the attribute names after it."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return node, parts[::-1]

    def attr_problem(self, attr: str, state: str, imported: bool) -> tuple[str, str] | None:
        """Why reading ``<object>.attr`` is not allowed (``state`` from ``self_state``)."""
        if attr in INTROSPECTION:
            return f"'.{attr}' (frame/code introspection) is not allowed", "remove it"
        if attr in IO_ATTRS:
            return f"'.{attr}' can read/write files or leave torch", "remove it"
        if attr in MODULE_INTERNALS or (state and attr in self.module_private):
            return (f"'.{attr}' touches nn.Module/tensor internals",
                    "use register_parameter/register_buffer/add_module and public API")
        if attr.startswith(HOOK_PREFIXES):
            return f"'.{attr}' installs a global or state-dict hook", "remove it"
        if imported:
            return None  # private parts of import chains are reported by chain_ok
        if (is_private(attr) or attr in self.tainted) and state == "decorated":
            return (f"'self.{attr}' is used in a method with a decorator other than @property "
                    "or @torch.no_grad()", "remove the decorator, or make the attribute public")
        if is_private(attr) and state != "ok":
            return (f"private attribute '.{attr}' on an object other than self",
                    "use _private attributes only as self._name inside methods whose first "
                    "parameter is self; use public attributes (or a plain function) otherwise")
        if attr in self.tainted and state != "ok":
            return (f"'.{attr}' is a method that uses private attributes of self, reached "
                    "through something other than self",
                    f"call it only as self.{attr}(...) or super().{attr}(...) inside a method")
        return None

    def in_literal(self, node: ast.AST) -> bool:
        """Tell whether ``node`` sits inside the subscript of ``typing.Literal``."""
        import typing

        child, parent = node, getattr(node, "parent", None)
        while parent is not None:
            if isinstance(parent, ast.Subscript) and child is parent.slice \
                    and self.resolved(parent.value) is typing.Literal:
                return True
            child, parent = parent, getattr(parent, "parent", None)
        return False

    def check_target(self, node: ast.AST) -> None:
        """Reject assignments to attributes of computed or imported objects."""
        root = node
        while isinstance(root, ast.Attribute | ast.Subscript):
            root = root.value
        if not isinstance(root, ast.Name):
            self.bad(node, "assignment to an attribute of a computed object",
                     "assign only to attributes of self or of objects you created")
        elif root.id in self.aliases or root.id in self.import_bound:
            self.bad(node, f"assignment to an attribute of imported '{root.id}' (monkeypatching)",
                     "do not modify torch or library objects; define your own module instead")
