"""One step of any role: view -> think -> trace -> update (docs/architecture.md).

The graph builder makes every role's node from its :class:`~agents.registry.RoleSpec`
with :func:`run_role`; a role module only supplies its pure functions. A role's
``view`` reads the state, ``brief`` turns the view into prompt values, the brain
(:func:`agents.base.think`: the LLM, or the offline ``fallback``) answers, and
``apply`` turns the answer into an :class:`Outcome`: the state update plus what to
trace, show and write. The run's resources arrive as ``services`` (the graph's
closure), so this module imports nothing from ``graph``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from agents.base import Thought, think
from agents.records import Candidate, Note, headline, recent_notes
from agents.registry import RoleSpec


class RoleServices(Protocol):
    """What a role's step uses of the run's services (graph/services.py)."""

    tracer: Any
    display: Any

    def persist(self, rec: Candidate) -> None:
        """Write the candidate's folder."""

    def spec(self, role: str) -> Any:
        """Return the role's LLM spec (``backend``, ``label``)."""

    def chat(self, role: str) -> Any:
        """Return the role's chat model."""

    def llm_breaker(self) -> Any:
        """Return the run's LLM circuit breaker."""

    def record_llm(self, record: Any, *, prompt_name: str, prompt_sha: str,
                   candidate: str | None) -> None:
        """Trace one LLM request."""


@dataclass
class View:
    """What a role reads of the state for one step."""

    state: Mapping[str, Any]
    round: int = 0
    candidate: str | None = None
    """The candidate the step is about (traced with the LLM call)."""
    data: dict[str, Any] = field(default_factory=dict)
    """The role's own reading (its briefs are built from it)."""
    show: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """Display calls before thinking, e.g. ``("stage", (cid, "designing"))``."""


@dataclass
class Outcome:
    """What a role's answer changes: the state update and what to trace, show and write."""

    update: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    persist: list[Candidate] = field(default_factory=list)
    show: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


def default_view(state: Mapping[str, Any], settings: Any) -> View:
    """Read the state as it is, about the candidate in flight."""
    return View(state=state, round=state.get("round", 0), candidate=state.get("current"))


def default_brief(view: View, settings: Any) -> dict[str, Any]:
    """Prompt values of an extension role: the newest candidate, budgets, recent notes."""
    cands = view.state.get("candidates") or {}
    return {"latest": headline(cands.get(view.candidate or "")),
            "budgets": settings.budgets.model_dump(), "notes": recent_notes(
                view.state.get("notes")), "round": view.round}


def default_apply(answer: BaseModel, brain: str, view: View, settings: Any) -> Outcome:
    """Turn an extension role's answer into a note the Critic and the Designer read.

    The answer's ``note`` (or ``text``) field is the line the agents see; the whole
    answer is the payload. A note about a candidate is also kept on that record.
    """
    payload = answer.model_dump(mode="json")
    text = str(payload.get("note") or payload.get("text") or "")
    role = str(view.data.get("role", ""))
    note = Note(role=role, round=view.round, text=text, candidate=view.candidate,
                payload=payload)
    update: dict[str, Any] = {"notes": [note]}
    rec = (view.state.get("candidates") or {}).get(view.candidate or "")
    if isinstance(rec, Candidate):
        update["candidates"] = {rec.id: rec.model_copy(update={"notes": [*rec.notes, note]})}
    return Outcome(update=update,
                   # The answer as it is: `graph.trace` folds a note that repeats it.
                   events=[("role_event", {"role": role, **payload})])


def _show(display: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    for method, args in calls:
        getattr(display, method)(*args)


def run_role(spec: RoleSpec, state: Mapping[str, Any], settings: Any,
             services: RoleServices) -> dict[str, Any]:
    """Run one step of the role ``spec``: view -> think -> trace -> update.

    Args:
        spec: The registered role.
        state: The graph state.
        settings: The run's ``agents.settings.Settings``.
        services: The run's resources (tracer, display, persist, LLMs).

    Returns:
        The state update (the role's, plus the step's token counters).

    Raises:
        prompts.PromptError: The role's prompt has a placeholder its brief does not fill.
    """
    view = (spec.view or default_view)(state, settings)
    view.data.setdefault("role", spec.name)
    _show(services.display, view.show)

    def offline() -> BaseModel:
        answer = spec.fallback(view, settings)
        return answer if isinstance(answer, spec.schema) else spec.schema.model_validate(answer)

    if spec.prompt is None or view.data.get("offline"):  # e.g. a search strategy's step
        thought = Thought(answer=offline(), brain="heuristic")
    else:
        thought = think(spec.name, schema=spec.schema, prompt_file=spec.prompt,
                        values=(spec.brief or default_brief)(view, settings),
                        fallback=offline, services=services, candidate=view.candidate)
    outcome: Outcome = (spec.apply or default_apply)(thought.answer, thought.brain, view,
                                                     settings)
    for rec in outcome.persist:
        services.persist(rec)
    for name, fields in outcome.events:
        services.tracer.event(name, **fields)
    _show(services.display, outcome.show)
    update = dict(outcome.update)
    if thought.tokens:
        update["tokens"] = thought.tokens
    return update
