"""The Critic: reads the newest report(s) and the Pareto archive, says what to fix next.

Output schema :class:`Critique`; prompt ``prompts/critic.md``; offline brain
:func:`agents.heuristic.critique` (rule-based over the same report).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents import heuristic
from agents.base import think
from agents.records import headline, select_best
from agents.registry import register_role
from agents.settings import Settings
from graph.services import services_for


class LaggingGroup(BaseModel):
    """A demographic group whose accuracy is below the overall accuracy."""

    attribute: str = Field(description="sex or age")
    group: str = Field(description="group name, e.g. female or >=60")
    accuracy: float = Field(description="the group's accuracy")
    gap: float = Field(description="overall accuracy minus the group's accuracy")


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


def critic_brief(state: dict[str, Any], ctx: Settings) -> dict[str, Any]:
    """Collect the Critic's inputs: newest candidate, best design, archive, budgets, targets."""
    cands = state.get("candidates") or {}
    order = state.get("order") or []
    # Baselines are references to beat, not designs to critique: the newest design is.
    designs = [cid for cid in order if (cands.get(cid) or {}).get("origin") != "baseline"]
    latest_id = state.get("current") or (designs[-1] if designs else None)
    best_id = select_best(cands, ctx.unfairness_weight)
    return {
        "latest": headline(cands.get(latest_id)) if latest_id else None,
        "best": headline(cands.get(best_id)) if best_id else None,
        "archive": {cid: headline(cands[cid]) for cid in state.get("archive") or []},
        "budgets": ctx.budgets.model_dump(),
        "targets": {"balanced_accuracy": ctx.target_balanced_accuracy,
                    "max_gap": ctx.target_max_gap},
        "round": state.get("round", 0),
    }


@register_role("critic", schema=Critique, prompt="critic.md",
               fallback=heuristic.critique,
               description="reads fairness and hardware reports, orders priorities")
def critic_node(state: dict[str, Any], runtime: Runtime[Settings]) -> dict[str, Any]:
    """Critique the newest candidate against budgets, groups and the best design."""
    ctx = Settings.of(runtime.context)
    svc = services_for(ctx)
    brief = critic_brief(state, ctx)
    archive_lines = {
        cid: {k: h.get(k) for k in ("balanced_accuracy", "max_gap", "latency_ms", "params")}
        for cid, h in brief["archive"].items() if h
    }
    thought = think(
        "critic", schema=Critique, prompt_file="critic.md",
        values={"budgets": brief["budgets"], "targets": brief["targets"],
                "latest": brief["latest"], "best": brief["best"], "archive": archive_lines,
                "round": brief["round"], "iter_max": ctx.iter_max},
        fallback=lambda: Critique.model_validate(heuristic.critique(brief)),
        services=svc, candidate=(brief["latest"] or {}).get("id"),
    )
    crit = thought.answer.model_dump(mode="json")
    crit.update(round=brief["round"], brain=thought.brain,
                about=(brief["latest"] or {}).get("id"))
    # Every decision enters the trace whatever the brain (an LLM call logs its prompt too).
    svc.tracer.event("critique", role="critic", round=brief["round"], candidate=crit["about"],
                     brain=thought.brain, **thought.answer.model_dump(mode="json"))
    svc.display.message(f"critic ({thought.brain}): {crit['summary'][:150]}")
    return {"critiques": [crit], "tokens": thought.tokens}
