"""Role registry (the shape of timm's model registry).

A role is one module: its node function, its pydantic output schema, its prompt file in
``prompts/`` and its offline (heuristic) fallback. Registering it is one decorator::

    @register_role("auditor", schema=Note, prompt="auditor.md", hook="after_evaluate",
                   fallback=heuristic_audit)
    def auditor_node(state, runtime): ...

Core roles (designer, critic, code_fixer) have ``hook=None``: the builder places them.
Extension roles name a hook point and the builder wires every registered one there, so
adding a role never edits graph internals. Load a role module with ``--roles module.path``.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

Hook = Literal["after_prepare", "before_design", "after_evaluate", "before_finalize"]
HOOKS: tuple[Hook, ...] = ("after_prepare", "before_design", "after_evaluate", "before_finalize")

NodeFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class RoleSpec:
    """One registered role."""

    name: str
    node: NodeFn
    schema: type[BaseModel] | None = None
    prompt: str | None = None
    fallback: Callable[..., Any] | None = None
    hook: Hook | None = None
    description: str = ""
    module: str = ""


_ROLES: dict[str, RoleSpec] = {}


def register_role(
    name: str,
    *,
    schema: type[BaseModel] | None = None,
    prompt: str | None = None,
    fallback: Callable[..., Any] | None = None,
    hook: Hook | None = None,
    description: str = "",
    override: bool = False,
) -> Callable[[NodeFn], NodeFn]:
    """Register ``node`` as the role ``name``.

    Args:
        name: Role name, also the graph node name.
        schema: Pydantic output schema of the role's brain.
        prompt: Prompt file name under ``prompts/``.
        fallback: Offline (heuristic) brain used without an LLM or when a call fails.
        hook: Where an extension role is wired; ``None`` for core roles.
        description: One line for ``list_roles`` displays.
        override: Allow replacing an already registered role of another module.

    Returns:
        The decorator (it returns the node unchanged).
    """
    if hook is not None and hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; choose one of {', '.join(HOOKS)}")

    def deco(node: NodeFn) -> NodeFn:
        old = _ROLES.get(name)
        # Re-importing the same module (tests, reloads) re-registers silently.
        if old is not None and old.module != node.__module__ and not override:
            raise ValueError(f"role {name!r} already registered by {old.module}")
        _ROLES[name] = RoleSpec(
            name=name,
            node=node,
            schema=schema,
            prompt=prompt,
            fallback=fallback,
            hook=hook,
            description=description or (node.__doc__ or "").strip().split("\n")[0],
            module=node.__module__,
        )
        return node

    return deco


def list_roles(pattern: str = "*", *, hook: str | None = None) -> list[str]:
    """List registered role names matching a glob ``pattern`` (and ``hook`` when given)."""
    return sorted(
        n
        for n, spec in _ROLES.items()
        if fnmatch.fnmatch(n, pattern) and (hook is None or spec.hook == hook)
    )


def is_role(name: str) -> bool:
    """Tell whether ``name`` is registered."""
    return name in _ROLES


def create_role(name: str) -> RoleSpec:
    """Return the spec of role ``name`` (node, schema, prompt, fallback, hook)."""
    try:
        return _ROLES[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r}; registered: {', '.join(list_roles())}") from None


def unregister_role(name: str) -> None:
    """Remove a role (tests use this to keep the registry clean)."""
    _ROLES.pop(name, None)


CORE_MODULES = ("agents.critic", "agents.designer", "agents.code_fixer")


def load_roles(modules: Iterable[str] = ()) -> list[str]:
    """Import the core role modules and ``modules``; return the names now registered.

    Raises:
        ImportError: With the module name, when a role module cannot be imported.
    """
    for mod in (*CORE_MODULES, *modules):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ImportError(f"cannot import role module {mod!r}: {exc}") from exc
    return list_roles()
