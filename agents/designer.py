"""The Designer: proposes the next model (rationale + complete code).

Output schema :class:`Design`; prompt ``prompts/designer.md``; offline brain
:func:`agents.heuristic.design` (mutates a Pareto-front member with a move drawn from the
run's per-move statistics, as the critique asks). Both brains see the same evidence: the
move-effect table of :mod:`agents.move_stats`. With
``--strategy random`` or ``evolution`` the proposal comes from :mod:`agents.strategies`
instead, without an LLM. The builder makes its node from this spec (agents/step.py).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agents import heuristic, strategies
from agents.move_prior import load_prior
from agents.move_stats import DEFAULT_NOISE_SD, effects_table, move_stats
from agents.records import headline, history, new_record, recent_notes, select_best, tried_keys
from agents.registry import register_role
from agents.settings import Settings
from agents.step import Outcome, View
from tasks.genome import choices_text, genome_summary, parse_genome, render


class Design(BaseModel):
    """A proposed candidate model."""

    rationale: str = Field(description="which Choices change and why, citing the numbers")
    code: str = Field(description="complete Python module defining build_model(num_classes)")
    parent: str | None = Field(default=None, description="id of the candidate this design "
                               "was derived from (default: the current best design)")


def candidate_id(round_: int, index: int = 0, per_round: int = 1) -> str:
    """Id of the ``index``-th of ``per_round`` candidates of a round (``c001``, ``c002``, ...).

    Numbered on across rounds, so one proposal per round gives ``c<round>``; stable, so a
    rerun node is idempotent.
    """
    return f"c{(round_ - 1) * per_round + index + 1:03d}"


def round_rng(settings: Settings, what: str, round_: int, index: int) -> random.Random:
    """Return the generator of a round's ``index``-th proposal (index 0: as before K > 1)."""
    parts: tuple[object, ...] = (round_,) if index == 0 else (round_, index)
    return seeded_rng(settings.resolved_search_seed, what, *parts)


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """Deterministic generator for one decision (same run, same round -> same answer)."""
    return random.Random(f"{seed}:" + ":".join(str(p) for p in parts))


def noise_sd(state: Mapping[str, Any]) -> float:
    """Std of the selection score over seeds as the run measured it, else the default."""
    value = state.get("noise_sd")
    return float(value) if value else DEFAULT_NOISE_SD


def view(state: Mapping[str, Any], settings: Settings) -> View:
    """Read the new round's candidate id, best design, critique, notes and move statistics.

    The per-move statistics (:func:`agents.move_stats.move_stats`) are judged against the
    run's measured score noise (``state["noise_sd"]``, else 0.05). With ``--proposals K``
    the round's node asks K times; ``state["opening"]`` then holds the ids it opened so
    far this round (their designs are in ``candidates``, so none is proposed twice).

    Under a search strategy other than ``agents`` the view also holds that strategy's
    proposal and marks the step ``offline`` (agents/step.py then asks no LLM).
    """
    round_ = state.get("round", 0) + 1
    index = len(state.get("opening") or [])
    cid = candidate_id(round_, index, settings.proposals)
    cands = state.get("candidates") or {}
    best_id = select_best(cands, settings.unfairness_weight) or "c000"
    data: dict[str, Any] = {"best_id": best_id, "best": cands.get(best_id),
                            "critique": (state.get("critiques") or [None])[-1],
                            "notes": recent_notes(state.get("notes")),
                            "noise_sd": noise_sd(state),
                            "archive": list(state.get("archive") or []), "index": index}
    data["move_stats"] = move_stats(cands, settings.unfairness_weight, data["noise_sd"])
    if settings.strategy != "agents":
        rng = round_rng(settings, settings.strategy, round_, index)
        data.update(proposal=strategies.propose(state, settings, rng), offline=True)
    return View(state=state, round=round_, candidate=cid, data=data,
                show=[("round", (round_, settings.iter_max)),
                      ("stage", (cid, "origin:designer")), ("stage", (cid, "designing"))])


def brief(v: View, settings: Settings) -> dict[str, Any]:
    """Prompt values: task, budgets, Choices, best design, critique, notes, history, moves.

    ``move_effects`` is the move-effect table (:func:`agents.move_stats.effects_table`).
    """
    best = v.data["best"]
    return {
        "task": f"{settings.task}: 8-class skin-lesion classification at "
                f"{settings.image_size}x{settings.image_size}, fairness across sex and age",
        "budgets": settings.budgets.model_dump(), "choices": choices_text(),
        "best_id": v.data["best_id"], "best_metrics": headline(best),
        "best_code": best.code if best else None, "critique": v.data["critique"],
        "notes": v.data["notes"] or "none",
        "history": history(v.state.get("candidates") or {}, v.state.get("order") or []),
        "move_effects": effects_table(v.data["move_stats"], v.data["noise_sd"], load_prior()),
        "round": v.round, "iter_max": settings.iter_max,
    }


def fallback(v: View, settings: Settings) -> dict[str, Any]:
    """Answer with the strategy's proposal, else the heuristic Designer (seeded per round)."""
    proposal: strategies.Proposal | None = v.data.get("proposal")
    if proposal is not None:
        return {"rationale": proposal.rationale, "code": render(proposal.genome)}
    best = v.data["best"]
    cands = v.state.get("candidates") or {}
    heuristic_brief = {"best": {"code": best.code} if best else {},
                       "best_id": v.data["best_id"] if best else None,
                       "critique": v.data["critique"], "notes": v.data["notes"],
                       "tried": tried_keys(cands), "history": cands,
                       "archive": v.data["archive"], "noise_sd": v.data["noise_sd"],
                       "unfairness_weight": settings.unfairness_weight}
    return heuristic.design(heuristic_brief,
                            round_rng(settings, "design", v.round, v.data.get("index", 0)))


def apply(answer: Design, brain: str, v: View, settings: Settings) -> Outcome:
    """Open the round's next candidate (``batch``: the round's ids so far).

    Its parent is the candidate the answer names when it exists, else the best design.
    """
    cid, crit = v.candidate or candidate_id(v.round), v.data["critique"] or {}
    batch = [*(v.state.get("opening") or []), cid]
    proposal: strategies.Proposal | None = v.data.get("proposal")
    named = answer.parent if answer.parent in (v.state.get("candidates") or {}) else None
    parent = proposal.parent if proposal is not None else named or v.data["best_id"]
    brain = proposal.brain if proposal is not None else brain
    rec = new_record(cid, code=answer.code, origin="designer", parent=parent,
                     round_=v.round, rationale=answer.rationale, brain=brain)
    g = parse_genome(answer.code)
    event = {"role": "designer", "round": v.round, "candidate": cid,
             "parent": parent, "brain": brain, "rationale": answer.rationale,
             "design": genome_summary(g) if g else "custom", "code_hash": rec.code_hash,
             "critique": crit.get("summary"), "critique_about": crit.get("about"),
             "notes": v.data["notes"]}
    return Outcome(update={"round": v.round, "current": cid, "batch": batch,
                           "candidates": {cid: rec}, "order": [cid]}, events=[("design", event)])


SPEC = register_role("designer", schema=Design, prompt="../prompts/designer.md",
                     fallback=fallback, view=view, brief=brief, apply=apply,
                     description="proposes a new design from the best one and the critique")
