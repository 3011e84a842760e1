"""The gate's static policy: an AST visitor that applies the rules of docs/security.md.

It never executes candidate code. An allowed import root is not an allowed capability,
so attribute chains rooted at an import are resolved against the real modules and checked
by identity (see :mod:`tools.gate` for the rules in prose).
"""

from __future__ import annotations

import ast
import types

from tools.policy_ast import FUNCS, class_bindings, is_super_call, scope_of
from tools.policy_base import PolicyBase
from tools.policy_rules import (
    ALLOWED_DUNDER_DEFS,
    ALLOWED_MSG,
    FORBIDDEN_NAMES,
    FORMAT_METHODS,
    MATCH_BUILTINS,
    OVERRIDABLE,
    format_problem,
    is_dunder,
    resolve_dotted,
)


class Policy(PolicyBase):
    """Visits a parsed candidate and records every violation of the policy in ``violations``."""

    def visit_Import(self, node: ast.Import) -> None:
        """Record allowed imports as aliases; reject the others."""
        for a in node.names:
            if a.name not in self.allowed_imports:
                self.bad(node, f"import of '{a.name}' is not allowed",
                         f"only import: {ALLOWED_MSG}")
            elif a.asname:
                self.aliases[a.asname] = a.name
            else:
                self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        """Allow ``from <allowed module> import name`` when the name passes the chain rules."""
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
            if self.chain_ok(node, dotted, as_value=False):
                self.aliases[a.asname or a.name] = dotted

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """Check dunder, private, I/O and hook attributes, stores, and import chains."""
        attr = node.attr
        parent = getattr(node, "parent", None)
        root, parts = self.root_chain(node)
        imported = isinstance(root, ast.Name) and root.id in self.aliases
        state = self.self_state(node.value)
        if attr in FORMAT_METHODS:
            self._check_format(node)
        if is_dunder(attr):
            if not (attr == "__init__" and isinstance(parent, ast.Call) and parent.func is node):
                self.bad(node, f"dunder attribute access '.{attr}' is not allowed",
                         "only super().__init__(...) may use a dunder attribute")
            elif not is_super_call(node.value) and not (
                    parent.args and isinstance(parent.args[0], ast.Name)
                    and parent.args[0].id == "self" and self.self_state(parent.args[0]) == "ok"):
                self.bad(node, "'.__init__' is called on something other than self",
                         "call super().__init__(...) (or Base.__init__(self, ...)) in __init__")
        elif problem := self.attr_problem(attr, state, imported):
            self.bad(node, *problem)
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.check_target(node)
            if attr in self.module_api and attr != "training":
                self.bad(node, f"assigning '.{attr}' replaces nn.Module.{attr} on that object",
                         "use another attribute name")
        if imported and isinstance(root, ast.Name):
            self.chain_ok(node, ".".join([self.aliases[root.id], *parts]), as_value=True)
        self.generic_visit(node)

    def _check_format(self, node: ast.Attribute) -> None:
        value = node.value
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            self.bad(node, f"'.{node.attr}' on something other than a string constant "
                           "(format fields can read attributes and items)",
                     "use an f-string")
        elif problem := format_problem(value.value):
            text = value.value if len(value.value) <= 60 else value.value[:57] + "..."
            self.bad(node, f"format string {text!r}: {problem}",
                     "use an f-string, or only plain fields like {} and {name}")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        """Check subscript stores and string forward references in typing subscripts."""
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.check_target(node)
        elif id(node) not in self.annotations:
            obj = self.resolved(node.value)
            if getattr(obj, "__module__", None) == "typing":
                for n in ast.walk(node.slice):
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) \
                            and not self.in_literal(n):
                        self.bad(n, f"string {n.value[:40]!r} in a typing subscript "
                                    "(a forward reference)",
                                 "write the type itself, not its name as a string")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        """Reject forbidden builtins, misuse of ``super`` and methods taken as values."""
        name = node.id
        load = isinstance(node.ctx, ast.Load)
        if name in FORBIDDEN_NAMES:
            self.bad(node, f"'{name}' is not allowed", "remove it; use plain attribute access")
        elif name.startswith("__") and name != "__name__":
            self.bad(node, f"name '{name}' is not allowed", "remove it")
        elif name == "super" and load:
            call = getattr(node, "parent", None)
            if not (isinstance(call, ast.Call) and call.func is node and is_super_call(call)
                    and self.self_state(call) == "ok"
                    and all(isinstance(a, ast.Name) and a.id in self.local_classes
                            for a in call.args[:1])):
                self.bad(node, "'super' may only be called as super() (or super(YourClass, "
                               "self)) directly in a method whose first parameter is self "
                               "(decorators: only @property / @torch.no_grad())",
                         "call super().name(...) in the method itself")
        elif name in self.aliases and load:
            self.chain_ok(node, self.aliases[name], as_value=True)
        # a method taken as a value in its class body can be called with any object as self
        scope = scope_of(node) if load and name in self.method_names else None
        if isinstance(scope, ast.ClassDef) and name in self.class_methods[id(scope)]:
            self.bad(node, f"method '{name}' is used as a value in the body of class {scope.name}",
                     f"call it as self.{name}(...) from other methods")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        """Track names bound to imported objects; allow a module-level ``__all__``."""
        if self._is_all(node, node.targets, node.value):
            self.visit(node.value)
            return
        root, _ = self.root_chain(node.value)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            for t in node.targets:
                self.import_bound.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        """Allow an annotated module-level ``__all__``; visit anything else."""
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
        """Reject dunder names in strings and string type hints."""
        if isinstance(node.value, str | bytes) and id(node) not in self.docstrings:
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in text and text != "__main__":
                self.bad(node, "string containing '__' (string-based attribute access)",
                         "remove dunder names from strings")
        if isinstance(node.value, str) and id(node) in self.annotations \
                and not self.in_literal(node):
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
        """Reject metaclasses, foreign bases and overrides of nn.Module members."""
        import torch.nn as nn

        if node.keywords:
            self.bad(node, "class keywords (metaclass=...) are not allowed", "remove them")
        for base in node.bases:
            self._check_base(base, nn)
        api = self.module_api - OVERRIDABLE
        for name, where in class_bindings(node):
            if name not in api:
                continue
            if isinstance(where, FUNCS):
                self.bad(where, f"method '{name}' overrides nn.Module.{name}",
                         f"rename it; only {sorted(OVERRIDABLE)} may be overridden")
            elif id(node) in self.module_like:
                self.bad(where, f"'{name}' bound in the body of class {node.name} overrides "
                                f"nn.Module.{name}",
                         f"rename it; only {sorted(OVERRIDABLE)} may be overridden (with def)")
        self.generic_visit(node)

    def _check_base(self, base: ast.expr, nn: types.ModuleType) -> None:
        if isinstance(base, ast.Name) and (base.id in self.local_classes or base.id == "object"):
            return
        root, parts = self.root_chain(base)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            objs, ok = resolve_dotted(".".join([self.aliases[root.id], *parts]))
            import typing

            if ok and (objs[-1] is typing.NamedTuple or (
                    isinstance(objs[-1], type) and issubclass(objs[-1], nn.Module))):
                return
        self.bad(base, f"base class '{ast.unparse(base)}' is not allowed",
                 "subclass nn.Module (or its subclasses), typing.NamedTuple or your own classes")

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        """Check the class and keyword attributes of a ``match`` class pattern."""
        cls = node.cls
        name = cls.id if isinstance(cls, ast.Name) else None
        library = self.resolved(cls) is not None
        if not (name in self.local_classes or name in MATCH_BUILTINS or library):
            self.bad(cls, f"match class pattern on '{ast.unparse(cls)}'",
                     "match only your own classes, builtin types (int, str, ...) or torch "
                     "classes (case nn.Conv2d(): ...), or use isinstance")
        elif library and node.patterns:
            self.bad(cls, f"positional sub-patterns on library class '{ast.unparse(cls)}' read "
                          "attributes by name", "use isinstance and public attributes")
        for attr in node.kwd_attrs:
            if is_dunder(attr):
                self.bad(node, f"match pattern reads the dunder attribute '{attr}'", "remove it")
            elif problem := self.attr_problem(attr, "", imported=False):
                self.bad(node, f"match pattern keyword: {problem[0]}", problem[1])
        self.generic_visit(node)

    def _forbid(self, node: ast.AST) -> None:
        self.bad(node, f"'{type(node).__name__}' is not allowed in model code", "remove it")

    visit_Await = visit_AsyncFor = visit_AsyncWith = _forbid
