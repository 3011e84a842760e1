"""Role registry: a role is its spec (the shape of timm's model registry).

A role module registers what the role is, once; the graph builder makes its node from
that spec (one generic node: view -> think -> trace -> update, see agents/step.py), for
the core roles and extension roles alike::

    register_role("auditor", schema=Audit, prompt="auditor.md", fallback=audit,
                  hook="after_evaluate")

* ``schema``: the pydantic answer of the role's brain.
* ``prompt``: the prompt file, relative to the role's own module (a role in another
  package ships its prompt beside it); ``None``: the role never calls an LLM.
* ``fallback(view, settings)``: the offline (heuristic) brain.
* ``model``: the role's default model; its own setting (``[models] <role>``) overrides
  it, the shared ``model`` does not.
* ``hook``: where an extension role runs in the loop; ``None`` for the core roles, which
  the builder places.
* ``view(state, settings)``, ``brief(view, settings)`` (prompt values) and
  ``apply(answer, brain, view, settings)`` (the state update): the role's pure functions;
  the defaults (agents/step.py) hand the role the state, fill its prompt with the newest
  candidate and the recent notes, and turn its answer into a note the Critic and the
  Designer read.

Load extension role modules with ``--roles module.path`` (docs/architecture.md).
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

Hook = Literal["after_prepare", "before_design", "after_evaluate", "before_finalize"]
HOOKS: tuple[Hook, ...] = ("after_prepare", "before_design", "after_evaluate", "before_finalize")


@dataclass(frozen=True)
class RoleSpec:
    """One registered role: everything the builder needs to make its node."""

    name: str
    schema: type[BaseModel]
    fallback: Callable[[Any, Any], Any]
    prompt: Path | None = None
    """Absolute path of the prompt file (resolved against the role's module)."""
    model: str | None = None
    hook: Hook | None = None
    view: Callable[[Any, Any], Any] | None = None
    brief: Callable[[Any, Any], dict[str, Any]] | None = None
    apply: Callable[[Any, str, Any, Any], Any] | None = None
    description: str = ""
    module: str = ""


_ROLES: dict[str, RoleSpec] = {}


def _prompt_path(module: str, prompt: str | None) -> Path | None:
    """Resolve ``prompt`` against the folder of ``module`` (the role ships it beside it)."""
    if prompt is None:
        return None
    mod = sys.modules.get(module)
    where = getattr(mod, "__file__", None)
    base = Path(where).parent if where else Path.cwd()
    return (base / prompt).resolve()


def register_role(
    name: str,
    *,
    schema: type[BaseModel],
    fallback: Callable[[Any, Any], Any],
    prompt: str | None = None,
    model: str | None = None,
    hook: Hook | None = None,
    view: Callable[[Any, Any], Any] | None = None,
    brief: Callable[[Any, Any], dict[str, Any]] | None = None,
    apply: Callable[[Any, str, Any, Any], Any] | None = None,
    description: str = "",
    override: bool = False,
    module: str | None = None,
) -> RoleSpec:
    """Register the role ``name`` from its spec (see the module docstring).

    Args:
        name: Role name, also the graph node name and the ``[models]`` key.
        schema: Pydantic answer schema of the role's brain.
        fallback: Offline brain ``(view, settings) -> answer`` (schema instance or dict).
        prompt: Prompt file relative to the calling module; ``None``: offline brain only.
        model: Default model of the role (its ``[models]`` entry overrides it; the shared
            ``model`` does not).
        hook: Where an extension role is wired; ``None`` for core roles.
        view: ``(state, settings) -> view``; default: the state as it is.
        brief: ``(view, settings) -> prompt values``.
        apply: ``(answer, brain, view, settings) -> agents.step.Outcome``.
        description: One line for ``list_roles`` displays.
        override: Allow replacing a role registered by another module.
        module: The role's module (default: the caller's).

    Returns:
        The registered spec.

    Raises:
        ValueError: Unknown hook, or the name is taken by another module.
    """
    if hook is not None and hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; choose one of {', '.join(HOOKS)}")
    module = module or sys._getframe(1).f_globals.get("__name__", "")
    old = _ROLES.get(name)
    # Re-importing the same module (tests, reloads) re-registers silently.
    if old is not None and old.module != module and not override:
        raise ValueError(f"role {name!r} already registered by {old.module}")
    spec = RoleSpec(name=name, schema=schema, fallback=fallback,
                    prompt=_prompt_path(module, prompt), model=model, hook=hook, view=view,
                    brief=brief, apply=apply, module=module,
                    description=description or (schema.__doc__ or "").strip().split("\n")[0])
    _ROLES[name] = spec
    return spec


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
    """Return the spec of role ``name``.

    Raises:
        KeyError: ``name`` is not registered (the message lists those that are).
    """
    try:
        return _ROLES[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r}; registered: {', '.join(list_roles())}") from None


def unregister_role(name: str) -> None:
    """Remove a role (tests use this to keep the registry clean)."""
    _ROLES.pop(name, None)


CORE_MODULES = ("agents.critic", "agents.designer", "agents.code_fixer")
CORE_ROLES = ("critic", "designer", "code_fixer")


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
