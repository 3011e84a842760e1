"""The Critic: reads the newest report(s) and the Pareto archive, says what to fix next.

Output schema :class:`Critique`; prompt ``prompts/critic.md``; offline brain
:func:`agents.heuristic.critique` (rule-based over the same report). The builder makes
its node from this spec (agents/step.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agents import heuristic
from agents.records import headline, recent_notes, select_best
from agents.registry import register_role
from agents.settings import Settings
from agents.step import Outcome, View


class LaggingGroup(BaseModel):
    """A demographic group whose accuracy is below the overall accuracy."""

    attribute: str = Field(description="sex or age")
    group: str = Field(description="group name, e.g. female or >=60")
    accuracy: float = Field(description="the group's accuracy")
    gap: float = Field(description="overall accuracy minus the group's accuracy")
    from_class_mix: float | None = Field(
        default=None, description="the part of gap its class mix gives: overall accuracy minus "
                                  "the group's expected_accuracy")


class Critique(BaseModel):
    """The Critic's structured reading of the newest evaluation."""

    summary: str = Field(description="two or three sentences with the key numbers")
    violated_budgets: list[str] = Field(
        default_factory=list,
        description="each violated device budget with numbers, e.g. 'latency 3.1 ms > 2 ms'")
    lagging_groups: list[LaggingGroup] = Field(default_factory=list)
    priorities: list[str] = Field(default_factory=list, description="most important first")
    suggestions: list[str] = Field(
        default_factory=list, description="concrete changes along the Template's Choices")
    converged: bool = Field(False, description="every target met; further rounds unlikely to help")


def critic_brief(state: Mapping[str, Any], ctx: Settings) -> dict[str, Any]:
    """Collect the Critic's inputs: newest candidate, best design, archive, budgets, targets."""
    cands = state.get("candidates") or {}
    order = state.get("order") or []
    # Baselines are references to beat, not designs to critique: the newest design is.
    designs = [cid for cid in order if cid in cands and cands[cid].origin != "baseline"]
    latest_id = state.get("current") or (designs[-1] if designs else None)
    best_id = select_best(cands, ctx.unfairness_weight)
    return {
        "latest": headline(cands.get(latest_id)) if latest_id else None,
        "best": headline(cands.get(best_id)) if best_id else None,
        "archive": {cid: headline(cands[cid]) for cid in state.get("archive") or []},
        "budgets": ctx.budgets.model_dump(),
        "targets": {"balanced_accuracy": ctx.target_balanced_accuracy,
                    "max_gap": ctx.target_max_gap},
        "notes": recent_notes(state.get("notes")),
        "round": state.get("round", 0),
    }


def view(state: Mapping[str, Any], settings: Settings) -> View:
    """Read the Critic's brief, about the newest candidate."""
    b = critic_brief(state, settings)
    return View(state=state, round=b["round"], candidate=(b["latest"] or {}).get("id"),
                data=b)


def brief(v: View, settings: Settings) -> dict[str, Any]:
    """Prompt values: budgets, targets, newest and best candidates, archive, notes."""
    b = v.data
    archive_lines = {
        cid: {k: h.get(k) for k in ("balanced_accuracy", "max_gap", "latency_ms", "params")}
        for cid, h in b["archive"].items() if h
    }
    return {"budgets": b["budgets"], "targets": b["targets"], "latest": b["latest"],
            "best": b["best"], "archive": archive_lines, "notes": b["notes"] or "none",
            "round": b["round"], "iter_max": settings.iter_max}


def fallback(v: View, settings: Settings) -> dict[str, Any]:
    """Answer with the rule-based Critic."""
    return heuristic.critique(v.data)


def apply(answer: Critique, brain: str, v: View, settings: Settings) -> Outcome:
    """Add the critique (with its round, brain and subject) to the state."""
    dumped = answer.model_dump(mode="json")
    crit = {**dumped, "round": v.round, "brain": brain, "about": v.candidate}
    # Every decision enters the trace whatever the brain (an LLM call logs its prompt too).
    return Outcome(update={"critiques": [crit]},
                   events=[("critique", {"role": "critic", "round": v.round,
                                         "candidate": v.candidate, "brain": brain, **dumped})],
                   show=[("message", (f"critic ({brain}): {crit['summary'][:150]}",))])


SPEC = register_role("critic", schema=Critique, prompt="../prompts/critic.md",
                     fallback=fallback, view=view, brief=brief, apply=apply,
                     description="reads fairness and hardware reports, orders priorities")
