"""AST helpers of the gate's policy: scopes, method shapes and the names a node binds.

:class:`tools.policy.Policy` sets ``parent`` on every node and ``body_of`` on every
statement of a body before these run (docs/security.md, the gate).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TypeGuard

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def scope_of(node: ast.AST) -> ast.AST:
    """Return the function, lambda, class or module whose scope evaluates ``node``.

    Decorators, defaults, annotations and bases belong to the enclosing scope.
    """
    child, parent = node, getattr(node, "parent", None)
    while parent is not None:
        # body_of is set by Policy for the statements of every body (and a lambda's body)
        if getattr(child, "body_of", None) is parent \
                and isinstance(parent, (*FUNCS, ast.ClassDef, ast.Lambda)):
            return parent
        child, parent = parent, getattr(parent, "parent", None)
    return child


def positional(args: ast.arguments) -> list[ast.arg]:
    """Positional parameters of a signature (positional-only first)."""
    return [*args.posonlyargs, *args.args]


def is_self_method(node: object) -> TypeGuard[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Tell whether ``node`` is a def in a class body whose first parameter is ``self``."""
    if not isinstance(node, FUNCS) or not isinstance(scope_of(node), ast.ClassDef):
        return False
    params = positional(node.args)
    return bool(params) and params[0].arg == "self"


def is_super_call(node: ast.AST) -> bool:
    """Tell whether ``node`` is ``super()`` or ``super(Name, self)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "super" and not node.keywords):
        return False
    args = node.args
    return not args or (len(args) == 2 and isinstance(args[0], ast.Name)
                        and isinstance(args[1], ast.Name) and args[1].id == "self")


def own_bindings(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Names that ``node`` itself binds (not those of its children)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        yield node.id, node
    elif isinstance(node, ast.arg):
        yield node.arg, node
    elif isinstance(node, (*FUNCS, ast.ClassDef)):
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


def class_bindings(cls: ast.ClassDef) -> Iterator[tuple[str, ast.AST]]:
    """Names bound in the class body's own scope, by any statement or expression."""
    stack: list[ast.AST] = list(cls.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.arg):
            continue  # parameters bind in their function's scope
        yield from own_bindings(node)
        if isinstance(node, FUNCS):
            a = node.args
            params = [*positional(a), *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
            stack += [*node.decorator_list, *a.defaults, *(d for d in a.kw_defaults if d),
                      *(p.annotation for p in params if p.annotation)]
            stack += [node.returns] if node.returns else []
        elif isinstance(node, ast.Lambda):
            stack += [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        elif isinstance(node, ast.ClassDef):
            stack += [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        elif isinstance(node, COMPREHENSIONS):
            stack.append(node.generators[0].iter)  # the rest is the comprehension's scope
        else:
            stack.extend(ast.iter_child_nodes(node))

