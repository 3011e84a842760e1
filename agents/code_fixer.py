"""The Code-Fixer: repairs code that failed the gate or crashed in the worker.

Output schema :class:`Fix`; prompt ``prompts/code_fixer.md``; offline brain
:func:`agents.heuristic.fix` (re-render from the parsed genome, shrink on a budget
failure, else fall back to the parent design). Each fix is a new candidate with origin
``fixer`` whose parent is the broken one; attempts are bounded by
``Settings.max_fix_attempts`` (the graph records the candidate as failed after that).
The builder makes its node from this spec (agents/step.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agents import heuristic
from agents.designer import seeded_rng
from agents.records import Candidate, FixAttempt, new_record, tried_keys
from agents.registry import register_role
from agents.settings import Settings
from agents.step import Outcome, View

#: The Fixer sees the tail of an error: tracebacks end with what matters.
ERROR_TAIL_CHARS = 3000


class Fix(BaseModel):
    """Repaired candidate code."""

    explanation: str = Field(description="what was wrong and what changed")
    code: str = Field(description="the complete repaired module")


def tail(text: str, limit: int = ERROR_TAIL_CHARS) -> str:
    """Return the last ``limit`` characters of ``text``, marked when cut."""
    return text if len(text) <= limit else "[...]" + text[-limit:]


def failure_of(rec: Candidate) -> tuple[str, str]:
    """(stage, message) of a failed candidate: the failed gate check or worker stage."""
    if rec.gate is not None and not rec.gate.ok:
        return rec.gate.stage or "gate", rec.gate.message or rec.failure or ""
    rep = rec.report
    reason = (rep.failure_reason if rep else None) or rec.failure or ""
    return (rep.failure_stage if rep else None) or "crash", reason


def view(state: Mapping[str, Any], settings: Settings) -> View:
    """Read the broken candidate, its error, its design's parent and the fix's id."""
    cands = state["candidates"]
    broken: Candidate = cands[state["current"]]
    attempt = broken.attempt + 1
    base_id = broken.id.split("-fix")[0]
    cid = f"{base_id}-fix{attempt}"
    stage, error = failure_of(broken)
    base = cands.get(base_id)
    parent = cands.get(base.parent) if base is not None and base.parent else None
    return View(state=state, round=broken.round, candidate=cid,
                data={"broken": broken, "attempt": attempt, "stage": stage, "error": error,
                      "parent_code": parent.code if parent else None},
                show=[("stage", (broken.id, "fixing"))])


def brief(v: View, settings: Settings) -> dict[str, Any]:
    """Prompt values: the failed check, the error's tail and the code."""
    d = v.data
    return {"stage": d["stage"], "attempt": d["attempt"],
            "max_attempts": settings.max_fix_attempts, "budgets": settings.budgets.model_dump(),
            "error": tail(d["error"]), "code": d["broken"].code}


def fallback(v: View, settings: Settings) -> dict[str, Any]:
    """Answer with the heuristic Fixer (seeded per run and candidate)."""
    d = v.data
    heuristic_brief = {"code": d["broken"].code, "error": tail(d["error"]), "stage": d["stage"],
                       "parent_code": d["parent_code"],
                       "tried": tried_keys(v.state.get("candidates") or {})}
    return heuristic.fix(heuristic_brief,
                         seeded_rng(settings.resolved_search_seed, "fix", v.candidate))


def apply(answer: Fix, brain: str, v: View, settings: Settings) -> Outcome:
    """Make the repaired code a new candidate; record the hand-over on the broken one."""
    d = v.data
    cid, broken, stage, error = str(v.candidate), d["broken"], d["stage"], d["error"]
    rec = new_record(cid, code=answer.code, origin="fixer", parent=broken.id,
                     round_=broken.round, rationale=answer.explanation, brain=brain,
                     attempt=d["attempt"])
    broken = broken.model_copy(update={"fixes": [*broken.fixes, FixAttempt(
        attempt=d["attempt"], stage=stage, error=tail(error, 500), fixed_by=cid, brain=brain)]})
    handed = {"candidate": broken.id, "outcome": "failed", "origin": broken.origin,
              "parent": broken.parent, "round": broken.round, "brain": broken.brain,
              "code_hash": broken.code_hash, "failure": broken.failure, "fixed_by": cid,
              "headline": f"{stage} failure, handed to the Code-Fixer"}
    fixed = {"role": "code_fixer", "round": rec.round, "candidate": cid, "fixes": broken.id,
             "attempt": d["attempt"], "stage": stage, "error": tail(error, 1000),
             "diagnosis": answer.explanation, "brain": brain, "code_hash": rec.code_hash}
    return Outcome(update={"current": cid, "order": [cid],
                           "candidates": {cid: rec, broken.id: broken}},
                   events=[("candidate", handed), ("fix", fixed)], persist=[broken, rec],
                   show=[("stage", (cid, "origin:fixer"))])


SPEC = register_role("code_fixer", schema=Fix, prompt="../prompts/code_fixer.md",
                     fallback=fallback, view=view, brief=brief, apply=apply,
                     description="repairs code that failed the gate or crashed")
