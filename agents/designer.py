"""The Designer: proposes the next model (rationale + complete code).

Output schema :class:`Design`; prompt ``prompts/designer.md``; offline brain
:func:`agents.heuristic.design` (mutates the best genome as the critique asks).
"""

from __future__ import annotations

import random
from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents import heuristic
from agents.base import think
from agents.records import headline, history, new_record, select_best, tried_keys
from agents.registry import register_role
from agents.settings import Settings
from graph.services import services_for
from tasks.genome import choices_text, genome_summary, parse_genome


class Design(BaseModel):
    """A proposed candidate model."""

    rationale: str = Field(description="which Choices change and why, citing the numbers")
    code: str = Field(description="complete Python module defining build_model(num_classes)")


def candidate_id(round_: int) -> str:
    """Id of the Designer's candidate of a round (stable, so a rerun node is idempotent)."""
    return f"c{round_:03d}"


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """Deterministic generator for one decision (same run, same round -> same answer)."""
    return random.Random(f"{seed}:" + ":".join(str(p) for p in parts))


@register_role("designer", schema=Design, prompt="designer.md", fallback=heuristic.design,
               description="proposes a new design from the best one and the critique")
def designer_node(state: dict[str, Any], runtime: Runtime[Settings]) -> dict[str, Any]:
    """Design the next candidate of a new round."""
    ctx = Settings.of(runtime.context)
    svc = services_for(ctx)
    round_ = state.get("round", 0) + 1
    cid = candidate_id(round_)
    svc.display.round(round_, ctx.iter_max)
    svc.display.stage(cid, "origin:designer")
    svc.display.stage(cid, "designing")
    cands = state.get("candidates") or {}
    best_id = select_best(cands, ctx.unfairness_weight) or "c000"
    best = cands.get(best_id) or {}
    critique = (state.get("critiques") or [None])[-1]
    brief = {"best": best, "critique": critique, "tried": tried_keys(cands)}
    thought = think(
        "designer", schema=Design, prompt_file="designer.md",
        values={
            "task": f"{ctx.task}: 8-class skin-lesion classification at "
                    f"{ctx.image_size}x{ctx.image_size}, fairness across sex and age",
            "budgets": ctx.budgets.model_dump(), "choices": choices_text(),
            "best_id": best_id, "best_metrics": headline(best), "best_code": best.get("code"),
            "critique": critique,
            "history": history(cands, state.get("order") or []),
            "round": round_, "iter_max": ctx.iter_max,
        },
        fallback=lambda: Design.model_validate(
            heuristic.design(brief, seeded_rng(ctx.seed, "design", round_))),
        services=svc, candidate=cid,
    )
    design: Design = thought.answer  # type: ignore[assignment]
    rec = new_record(cid, code=design.code, origin="designer", parent=best_id, round_=round_,
                     rationale=design.rationale, brain=thought.brain)
    rec["attempt"] = 0
    svc.tracer.event("design", role="designer", round=round_, candidate=cid, parent=best_id,
                     brain=thought.brain, rationale=design.rationale,
                     design=genome_summary(g) if (g := parse_genome(design.code)) else "custom",
                     code_hash=rec["code_hash"], critique=(critique or {}).get("summary"),
                     critique_about=(critique or {}).get("about"))
    return {"round": round_, "current": cid, "candidates": {cid: rec}, "order": [cid],
            "tokens": thought.tokens}
