"""Graph state: typed records and JSON-like values, checkpointed into SQLite.

A candidate is one :class:`~agents.records.Candidate` (AIDE-journal style) holding its
whole story: parent, origin, code, gate results, fix attempts, evaluation report,
outcome. Traces, the summary and the display are views of these records, not separate
bookkeeping. The checkpointer revives them as typed objects (graph/checkpoint.py).
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from typing_extensions import TypedDict

from agents.records import Candidate, Note


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: shallow-merge ``right`` into ``left`` (a key's new value replaces the old)."""
    out = dict(left or {})
    out.update(right or {})
    return out


def add_counts(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Reducer: add counters key by key (token totals, LLM call counts)."""
    out = dict(left or {})
    for key, value in (right or {}).items():
        out[key] = out.get(key, 0) + value
    return out


class State(TypedDict, total=False):
    """State of one FL-NAS search (all fields JSON-like)."""

    round: int
    """Designer rounds started so far (compared with IterMax)."""
    candidates: Annotated[dict[str, Candidate], merge_dicts]
    """Candidate records by id: parent, origin, code, gate, fixes, report, status."""
    order: Annotated[list[str], operator.add]
    """Candidate ids in creation order."""
    current: str | None
    """Id of the candidate in flight; after a round, the round's pick (the Critic's latest)."""
    batch: list[str]
    """Ids the Designer opened this round (``--proposals``), each evaluated in its branch."""
    critiques: Annotated[list[dict[str, Any]], operator.add]
    """Every Critique so far (newest last), each with its round and brain."""
    archive: list[str]
    """Ids of the Pareto archive (non-dominated feasible-or-not ok candidates)."""
    hv_history: Annotated[list[float], operator.add]
    """Archive hypervolume after each evaluation round."""
    stale_rounds: int
    """Consecutive rounds without hypervolume gain (patience counter)."""
    best_id: str | None
    """Id of the current best design by the selection rule (after ``confirm``: on means)."""
    noise_sd: float | None
    """Std of the Template's selection score over training seeds (prepare), or None."""
    finalists: list[str]
    """Ids re-evaluated on more training seeds by ``confirm`` (graph/confirm.py)."""
    tokens: Annotated[dict[str, int], add_counts]
    """LLM token and call totals: input, output, calls, fallbacks."""
    notes: Annotated[list[Note], operator.add]
    """What roles told the others (role, round, text, payload); briefs include them."""
    stop_reason: str | None
    """Why the search stopped (iter_max, patience, targets_met, converged, budget)."""
    started_at: float
    """Wall-clock time (epoch seconds) the search started, for the wall-time budget."""
    summary: dict[str, Any]
    """Final run summary written by finalize (best design, test metrics, ...)."""


def _reducers() -> dict[str, Callable[[Any, Any], Any]]:
    hints = typing.get_type_hints(State, include_extras=True)
    return {key: hint.__metadata__[0] for key, hint in hints.items()
            if typing.get_origin(hint) is Annotated and callable(hint.__metadata__[0])}


#: The reducer of every State key that has one (the others keep the last value written).
REDUCERS = _reducers()


def apply_update(state: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``state`` with ``update`` applied as LangGraph applies it (key reducers).

    A node that runs several steps inside itself (the Designer's K proposals, a
    candidate's gate / fix / evaluate branch) shows each step the state so far with this,
    and returns the steps' combined update (:func:`combine`).
    """
    out = dict(state)
    for key, value in update.items():
        known = key in REDUCERS and out.get(key) is not None
        out[key] = REDUCERS[key](out[key], value) if known else value
    return out


def combine(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """Return one update equal to applying ``first`` then ``then`` (the reducers associate)."""
    return apply_update(first, then)
