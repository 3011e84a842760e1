"""The Code-Fixer: repairs code that failed the gate or crashed in the worker.

Output schema :class:`Fix`; prompt ``prompts/code_fixer.md``; offline brain
:func:`agents.heuristic.fix` (re-render from the parsed genome, shrink on a budget
failure, else fall back to the parent design). Each fix is a new candidate record with
origin ``fixer`` whose parent is the broken one; attempts are bounded by
``Settings.max_fix_attempts`` (the graph records the candidate as failed after that).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents import heuristic
from agents.base import think
from agents.designer import seeded_rng
from agents.records import new_record, tried_keys
from agents.registry import register_role
from agents.settings import Settings
from graph.services import services_for

#: The Fixer sees the tail of an error: tracebacks end with what matters.
ERROR_TAIL_CHARS = 3000


class Fix(BaseModel):
    """Repaired candidate code."""

    explanation: str = Field(description="what was wrong and what changed")
    code: str = Field(description="the complete repaired module")


def tail(text: str, limit: int = ERROR_TAIL_CHARS) -> str:
    """Return the last ``limit`` characters of ``text``, marked when cut."""
    return text if len(text) <= limit else "[...]" + text[-limit:]


def failure_of(rec: dict[str, Any]) -> tuple[str, str]:
    """(stage, message) of a failed candidate: the failed gate check or worker stage."""
    gate = rec.get("gate") or {}
    if gate and not gate.get("ok", True):
        return gate.get("stage") or "gate", gate.get("message") or rec.get("failure") or ""
    rep = rec.get("report") or {}
    reason = rep.get("failure_reason") or rec.get("failure") or ""
    return rep.get("failure_stage") or "crash", reason


@register_role("code_fixer", schema=Fix, prompt="code_fixer.md", fallback=heuristic.fix,
               description="repairs code that failed the gate or crashed")
def code_fixer_node(state: dict[str, Any], runtime: Runtime[Settings]) -> dict[str, Any]:
    """Repair the current candidate; the repaired code becomes a new candidate."""
    ctx = Settings.of(runtime.context)
    svc = services_for(ctx)
    cands = state["candidates"]
    broken = cands[state["current"]]
    attempt = broken.get("attempt", 0) + 1
    base_id = broken["id"].split("-fix")[0]
    cid = f"{base_id}-fix{attempt}"
    svc.display.stage(broken["id"], "fixing")
    stage, error = failure_of(broken)
    parent = cands.get(cands.get(base_id, {}).get("parent") or "") or {}
    brief = {"code": broken["code"], "error": tail(error), "stage": stage,
             "parent_code": parent.get("code"), "tried": tried_keys(cands)}
    thought = think(
        "code_fixer", schema=Fix, prompt_file="code_fixer.md",
        values={"stage": stage, "attempt": attempt, "max_attempts": ctx.max_fix_attempts,
                "budgets": ctx.budgets.model_dump(), "error": tail(error),
                "code": broken["code"]},
        fallback=lambda: Fix.model_validate(
            heuristic.fix(brief, seeded_rng(ctx.seed, "fix", cid))),
        services=svc, candidate=cid,
    )
    fix: Fix = thought.answer  # type: ignore[assignment]
    rec = new_record(cid, code=fix.code, origin="fixer", parent=broken["id"],
                     round_=broken.get("round", state.get("round", 0)),
                     rationale=fix.explanation, brain=thought.brain)
    rec["attempt"] = attempt
    fixes = [*broken.get("fixes", []), {"attempt": attempt, "stage": stage,
                                         "error": tail(error, 500), "fixed_by": cid,
                                         "brain": thought.brain}]
    broken = {**broken, "fixes": fixes}
    svc.persist(broken)
    svc.tracer.event("candidate", candidate=broken["id"], outcome="failed",
                     origin=broken["origin"], parent=broken.get("parent"),
                     round=broken.get("round"), brain=broken.get("brain"),
                     code_hash=broken["code_hash"], failure=broken.get("failure"),
                     fixed_by=cid, headline=f"{stage} failure, handed to the Code-Fixer")
    svc.persist(rec)
    svc.tracer.event("fix", role="code_fixer", round=rec["round"], candidate=cid,
                     fixes=broken["id"], attempt=attempt, stage=stage, error=tail(error, 1000),
                     diagnosis=fix.explanation, brain=thought.brain, code_hash=rec["code_hash"])
    svc.display.stage(cid, "origin:fixer")
    return {"current": cid, "order": [cid], "tokens": thought.tokens,
            "candidates": {cid: rec, broken["id"]: broken}}
