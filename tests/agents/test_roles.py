"""The role registry: register, list, create, load modules, wire extension roles."""

from __future__ import annotations

import pytest

from agents.registry import (
    create_role,
    is_role,
    list_roles,
    load_roles,
    register_role,
    unregister_role,
)
from graph.builder import build_graph


def test_core_roles_registered_with_schema_prompt_fallback():
    load_roles()
    assert {"critic", "designer", "code_fixer"} <= set(list_roles())
    for name, schema in (("critic", "Critique"), ("designer", "Design"), ("code_fixer", "Fix")):
        spec = create_role(name)
        assert spec.schema.__name__ == schema
        assert spec.prompt == f"{name}.md" and spec.fallback is not None and spec.hook is None
    assert list_roles("c*") == ["code_fixer", "critic"]


def test_unknown_role_and_hook_errors():
    with pytest.raises(KeyError, match="unknown role"):
        create_role("nope")
    with pytest.raises(ValueError, match="unknown hook"):
        register_role("x", hook="somewhere")  # type: ignore[arg-type]


def test_load_roles_reports_bad_module():
    with pytest.raises(ImportError, match="no_such_module"):
        load_roles(["no_such_module.roles"])


def test_extension_role_is_wired_at_its_hook_without_editing_the_builder():
    load_roles(["tests.agents.extra_role"])
    try:
        assert is_role("auditor") and list_roles(hook="after_evaluate") == ["auditor"]
        mermaid = build_graph().get_graph().draw_mermaid()
        assert "evaluate -. &nbsp;critic&nbsp; .-> auditor" in mermaid
        assert "auditor --> critic" in mermaid
        assert "gate -. &nbsp;critic&nbsp; .-> auditor" in mermaid
    finally:
        unregister_role("auditor")
    assert "auditor" not in build_graph().get_graph().draw_mermaid()
