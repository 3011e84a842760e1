"""What every role's brain shares: ask the LLM for the role's schema, or think offline.

:func:`think` renders the role's prompt file from a brief, calls
:func:`agents.llm.structured_call` (transport retries and re-asks live there, one layer),
traces every request, and on :class:`~agents.llm.LLMCallError` logs the failure and
falls back to the role's heuristic brain for this step (the trace says so). The run's
:class:`~agents.llm.CircuitBreaker` counts failed calls; once it is open no LLM is
called again in this process (or the run stops, by setting), and the console, the trace
(``llm_breaker_open``) and ``summary.json`` say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from agents.llm import CallRecord, LLMCallError, structured_call
from prompts import Prompt, load_prompt

T = TypeVar("T", bound=BaseModel)


@dataclass
class Thought:
    """A role's answer and how it was obtained."""

    answer: BaseModel
    brain: str
    """``heuristic``, the model label, or ``heuristic (fallback: ...)``."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Token/call counters for the state's ``tokens`` reducer."""


def as_text(value: Any) -> str:
    """Readable JSON for prompts (strings pass through)."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, default=str)


def shortened_values(values: dict[str, Any], level: int) -> dict[str, Any] | None:
    """Prompt values with less history, for a prompt that overflowed the context window.

    Every list value (history, archive lines) keeps its newest ``len >> level`` items
    (newest last), with a note of how many older ones were left out. ``None`` when no
    value is a list that can shrink.
    """
    out, changed = dict(values), False
    for name, value in values.items():
        if isinstance(value, list) and value:
            keep = len(value) >> level
            if keep < len(value):
                changed = True
                out[name] = [f"({len(value) - keep} older entries left out to fit the "
                             "model's context window)", *value[len(value) - keep:]] \
                    if keep else [f"({len(value)} entries left out to fit the model's "
                                  "context window)"]
    return out if changed else None


def think(
    role: str,
    *,
    schema: type[T],
    prompt_file: str | Path,
    values: dict[str, Any],
    fallback: Callable[[], T],
    services: Any,
    candidate: str | None = None,
) -> Thought:
    """Get ``role``'s answer from its LLM, or from its heuristic brain.

    The prompt is filled first, whatever the brain, so a placeholder without a value
    fails the step before any call (and in offline runs too).

    Args:
        role: Role name (selects the per-role model).
        schema: Output schema the answer must validate against.
        prompt_file: The role's prompt (a path, or a name under ``prompts/``).
        values: Placeholder values for the prompt (rendered with :func:`as_text`).
        fallback: The offline brain, called without an LLM or when the LLM call fails.
        services: The run's services (``spec``, ``chat``, ``llm_breaker``, ``tracer``,
            ``display``, ``record_llm``; graph/services.py).
        candidate: Candidate id the answer is for (traced).

    Returns:
        The answer with its brain label and token counters.

    Raises:
        prompts.PromptError: The prompt has a placeholder ``values`` does not fill.
        agents.llm.LLMConfigError: A configuration problem (refused key, unknown model):
            stops the run with a clear message; finished work is checkpointed.
    """
    prompt = load_prompt(prompt_file)

    def render(vals: dict[str, Any]) -> list[Any]:
        system, user = prompt.render(**{k: as_text(v) for k, v in vals.items()})
        return [SystemMessage(system), HumanMessage(user)]

    messages = render(values)
    spec = services.spec(role)
    if spec.backend == "heuristic":
        return Thought(answer=fallback(), brain="heuristic")
    breaker = services.llm_breaker()
    if not breaker.allow():
        services.tracer.event("llm_skipped", role=role, model=spec.label, candidate=candidate,
                              reason="circuit breaker open")
        return Thought(answer=fallback(), brain=f"heuristic (circuit breaker open: "
                                                f"{spec.label})",
                       tokens={"fallbacks": 1, "breaker_skips": 1})

    def shorten(level: int) -> list[Any] | None:
        vals = shortened_values(values, level)
        return render(vals) if vals is not None else None

    return _ask(role, schema, prompt, messages, shorten, fallback, services, candidate)


def _ask(role: str, schema: type[T], prompt: Prompt, messages: list[Any],
         shorten: Callable[[int], list[Any] | None], fallback: Callable[[], T],
         services: Any, candidate: str | None) -> Thought:
    """Call the role's LLM (tracing every request); fall back to the offline brain on failure."""
    spec = services.spec(role)
    tokens = {"input": 0, "output": 0, "calls": 0}

    def on_record(rec: CallRecord) -> None:
        tokens["input"] += rec.input_tokens
        tokens["output"] += rec.output_tokens
        tokens["calls"] += 1
        services.record_llm(rec, prompt_name=f"{prompt.name}@v{prompt.version}",
                            prompt_sha=prompt.sha256, candidate=candidate)

    try:
        answer, _ = structured_call(services.chat(role), messages, schema, role=role,
                                    on_record=on_record, shorten=shorten)
    except LLMCallError as exc:
        _fell_back(services, role, spec.label, candidate, exc, tokens)
        return Thought(answer=fallback(), brain=f"heuristic (fallback: {spec.label} failed)",
                       tokens=tokens)
    services.llm_breaker().success()
    return Thought(answer=answer, brain=spec.label, tokens=tokens)


def _fell_back(services: Any, role: str, label: str, candidate: str | None,
               exc: LLMCallError, tokens: dict[str, int]) -> None:
    """Trace and show a failed call; count it on the circuit breaker (maybe opening it)."""
    services.tracer.event("llm_fallback", role=role, model=label, candidate=candidate,
                          error=str(exc)[:2000], attempts=exc.http_attempts,
                          answers=len(exc.records),
                          attempt_kinds=[a["kind"] for r in exc.records for a in r.attempts])
    services.display.message(f"{role}: LLM failed ({str(exc)[:120]}); using the "
                             "heuristic brain for this step")
    tokens["fallbacks"] = 1
    breaker = services.llm_breaker()
    if breaker.failure(str(exc), role):
        report = breaker.report()
        services.tracer.event("llm_breaker_open", role=role, model=label,
                              candidate=candidate, **report)
        services.display.message(f"warning: {breaker.describe()}")
        tokens["breaker_open"] = 1
        if breaker.action == "stop":
            tokens["breaker_stop"] = 1
