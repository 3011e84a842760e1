"""The role registry: a role is its spec, and the builder makes its node from it."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from agents.registry import (
    create_role,
    is_role,
    list_roles,
    load_roles,
    register_role,
    unregister_role,
)
from agents.settings import Settings
from agents.step import View, run_role
from graph.builder import build_graph, role_node
from graph.display import PlainDisplay
from prompts import PromptError
from tests.fakes.reports import make_record, make_report


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def event(self, name: str, **fields: Any) -> None:
        self.seen.append((name, fields))


class _Svc:
    """Heuristic services: no LLM, events and written records kept for assertions."""

    def __init__(self) -> None:
        self.tracer = _Events()
        self.display = PlainDisplay(out=io.StringIO())
        self.persisted: list[str] = []

    def spec(self, role: str) -> Any:
        return SimpleNamespace(backend="heuristic", label="heuristic")

    def persist(self, rec: Any) -> None:
        self.persisted.append(rec.id)


def _state(**kw: Any) -> dict[str, Any]:
    c0 = make_record("c000", make_report(bal=0.5), origin="template")
    base = {"round": 0, "candidates": {"c000": c0}, "order": ["c000"], "critiques": [],
            "notes": [], "current": None, "started_at": time.time()}
    return {**base, **kw}


def test_core_role_nodes_come_from_their_spec():
    load_roles()
    assert list_roles("c*") == ["code_fixer", "critic"]
    svc, ctx = _Svc(), Settings()
    # The critic's node is the generic step over its spec: critique, trace event, message.
    out = role_node(create_role("critic"))(_state(), ctx, svc)  # type: ignore[arg-type]
    assert out["critiques"][0]["about"] == "c000" and out["critiques"][0]["brain"] == "heuristic"
    assert [n for n, _ in svc.tracer.seen] == ["critique"]
    # The designer's spec opens round 1 with a typed candidate whose parent is the best.
    st = _state(critiques=out["critiques"])
    out = run_role(create_role("designer"), st, ctx, svc)  # type: ignore[arg-type]
    rec = out["candidates"]["c001"]
    assert out["round"] == 1 and out["current"] == "c001" and rec.parent == "c000"
    assert rec.origin == "designer" and rec.attempt == 0 and rec.code != st["candidates"][
        "c000"].code
    # The fixer's spec turns a failed candidate into its fix and records the hand-over.
    broken = rec.model_copy(update={"status": "failed", "failure": "train: boom"})
    st = _state(candidates={**st["candidates"], "c001": broken}, current="c001", round=1)
    out = run_role(create_role("code_fixer"), st, ctx, svc)  # type: ignore[arg-type]
    assert out["current"] == "c001-fix1" and out["candidates"]["c001-fix1"].attempt == 1
    assert out["candidates"]["c001"].fixes[0].fixed_by == "c001-fix1"
    assert svc.persisted == ["c001", "c001-fix1"]


def test_unknown_role_hook_and_prompt_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown role"):
        create_role("nope")
    with pytest.raises(ValueError, match="unknown hook"):
        register_role("x", schema=BaseModel, fallback=lambda v, s: {},
                      hook="somewhere")  # type: ignore[arg-type]
    spec = register_role("ghost", schema=BaseModel, fallback=lambda v, s: {},
                         prompt="ghost.md", hook="before_design")
    try:
        assert spec.prompt is not None and spec.prompt.name == "ghost.md"
        # The prompt sits beside the registering module; a missing one stops the build
        # even in an offline run.
        with pytest.raises(PromptError, match="cannot read prompt file .*ghost.md"):
            build_graph()
    finally:
        unregister_role("ghost")


def test_load_roles_reports_bad_module():
    with pytest.raises(ImportError, match="no_such_module"):
        load_roles(["no_such_module.roles"])


def test_extension_role_is_wired_at_its_hook_and_writes_a_note():
    load_roles(["tests.agents.extra_role"])
    try:
        assert is_role("auditor") and list_roles(hook="after_evaluate") == ["auditor"]
        mermaid = build_graph().get_graph().draw_mermaid()
        assert "merge --> auditor" in mermaid  # once a round, after its branches
        assert "auditor --> critic" in mermaid
        c1 = make_record("c001", make_report(bal=0.7), parent="c000", round_=1)
        st = _state(candidates={**_state()["candidates"], "c001": c1}, current="c001",
                    round=1)
        svc = _Svc()
        out = run_role(create_role("auditor"), st, Settings(), svc)  # type: ignore[arg-type]
        note = out["notes"][0]
        assert (note.role, note.candidate, note.text) == ("auditor", "c001",
                                                         "c001 beat its parent")
        assert out["candidates"]["c001"].notes == [note]  # kept on the record too
        assert svc.tracer.seen[0][0] == "role_event" and svc.tracer.seen[0][1]["improved"]
    finally:
        unregister_role("auditor")
    assert "auditor" not in build_graph().get_graph().draw_mermaid()


def test_default_view_is_the_state():
    from agents.step import default_view

    v = default_view(_state(current="c000", round=2), Settings())
    assert isinstance(v, View) and (v.round, v.candidate) == (2, "c000")
