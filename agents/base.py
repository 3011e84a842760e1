"""What every role's brain shares: ask the LLM for the role's schema, or think offline.

:func:`think` renders the role's prompt file from a brief, calls
:func:`agents.llm.structured_call` (transport retries and re-asks live there, one layer),
traces every request, and on :class:`~agents.llm.LLMCallError` logs the failure and
falls back to the role's heuristic brain for this step (the trace says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from agents.llm import CallRecord, LLMCallError, structured_call
from prompts import load_prompt

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


def think(
    role: str,
    *,
    schema: type[T],
    prompt_file: str,
    values: dict[str, Any],
    fallback: Callable[[], T],
    services: Any,
    candidate: str | None = None,
) -> Thought:
    """Get ``role``'s answer from its LLM, or from its heuristic brain.

    Args:
        role: Role name (selects the per-role model).
        schema: Output schema the answer must validate against.
        prompt_file: The role's prompt under ``prompts/``.
        values: Placeholder values for the prompt (rendered with :func:`as_text`).
        fallback: The offline brain, called without an LLM or when the LLM call fails.
        services: The run's :class:`graph.services.Services`.
        candidate: Candidate id the answer is for (traced).

    Returns:
        The answer with its brain label and token counters.

    Raises:
        agents.llm.LLMConfigError: A configuration problem (refused key, unknown model):
            stops the run with a clear message; finished work is checkpointed.
    """
    spec = services.spec(role)
    if spec.backend == "heuristic":
        return Thought(answer=fallback(), brain="heuristic")
    prompt = load_prompt(prompt_file)
    system, user = prompt.render(**{k: as_text(v) for k, v in values.items()})
    tokens = {"input": 0, "output": 0, "calls": 0}

    def on_record(rec: CallRecord) -> None:
        tokens["input"] += rec.input_tokens
        tokens["output"] += rec.output_tokens
        tokens["calls"] += 1
        services.record_llm(rec, prompt_name=f"{prompt.name}@v{prompt.version}",
                            prompt_sha=prompt.sha256, candidate=candidate)

    chat = services.chat(role)
    try:
        answer, _ = structured_call(chat, [SystemMessage(system), HumanMessage(user)], schema,
                                    role=role, on_record=on_record)
    except LLMCallError as exc:
        services.tracer.event("llm_fallback", role=role, model=spec.label, candidate=candidate,
                              error=str(exc)[:2000], attempts=len(exc.records))
        services.display.message(f"{role}: LLM failed ({str(exc)[:120]}); using the "
                                 "heuristic brain for this step")
        tokens["fallbacks"] = 1
        return Thought(answer=fallback(), brain=f"heuristic (fallback: {spec.label} failed)",
                       tokens=tokens)
    return Thought(answer=answer, brain=spec.label, tokens=tokens)
