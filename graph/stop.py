"""When the search stops: the stop rules, in the order they are checked (docs/architecture.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agents.heuristic import targets_met
from agents.records import headline
from agents.settings import Settings


def stop_reason(state: Mapping[str, Any], ctx: Settings) -> str | None:
    """Why the search should stop now, or None to continue.

    In order: every target met by the best design (``targets_met``) or the Critic
    declared convergence (``converged``); IterMax rounds done (``iter_max``); no
    hypervolume gain for ``patience`` rounds (``patience``); LLM token budget spent
    (``llm_budget``); the LLM circuit breaker opened with action ``stop``
    (``llm_unavailable``); wall-time budget spent (``wall_time``).
    """
    crit = (state.get("critiques") or [None])[-1]
    cands = state.get("candidates") or {}
    best = headline(cands.get(state.get("best_id") or "")) if state.get("best_id") else None
    targets = {"balanced_accuracy": ctx.target_balanced_accuracy, "max_gap": ctx.target_max_gap}
    if targets_met(best, targets):
        return "targets_met"
    if crit and crit.get("converged") and state.get("round", 0) > 0:
        return "converged"
    if state.get("round", 0) >= ctx.iter_max:
        return "iter_max"
    if state.get("stale_rounds", 0) >= ctx.patience:
        return "patience"
    tokens = state.get("tokens") or {}
    if ctx.max_llm_tokens is not None and \
            tokens.get("input", 0) + tokens.get("output", 0) >= ctx.max_llm_tokens:
        return "llm_budget"
    if tokens.get("breaker_stop"):
        return "llm_unavailable"
    if ctx.max_wall_s is not None and state.get("started_at") and \
            time.time() - state["started_at"] >= ctx.max_wall_s:
        return "wall_time"
    return None
