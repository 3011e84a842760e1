"""Each role's LLM: which backend and model it uses, its chat client, the run's breaker.

A role's model is, in order: its own setting (``[models] <role>`` / ``--role-model``),
the default the role registered (``register_role(model=...)``), the shared ``model``, the
model named in ``--llm backend:model``. A role that registered a model of its own keeps it
when only the shared ``--model`` is given. Every request is traced (docs/architecture.md).
"""

from __future__ import annotations

import threading
from typing import Any

from agents.llm import CallRecord, CircuitBreaker, LLMSpec, make_chat_model, parse_llm
from agents.registry import create_role, is_role
from agents.settings import Settings
from graph.trace import estimate_cost


class RoleLLMs:
    """LLM specs, chat clients (one per role) and the circuit breaker of one run."""

    def __init__(self, ctx: Settings) -> None:
        """Nothing is built until a role asks."""
        self.ctx = ctx
        self._chats: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._breaker: CircuitBreaker | None = None

    def spec(self, role: str) -> LLMSpec:
        """Return the LLM spec of ``role`` (heuristic unless an LLM backend is configured)."""
        c = self.ctx
        if c.llm == "heuristic" and not c.base_url:
            return parse_llm("heuristic")
        # "--base-url URL --model M" alone selects an OpenAI-compatible server.
        backend, _, inline = (c.llm if c.llm != "heuristic" else "openai").partition(":")
        registered = create_role(role).model if is_role(role) else None
        model = c.models.get(role) or registered or c.model or inline or None
        return parse_llm(backend, base_url=c.base_url, model=model, timeout_s=c.llm_timeout_s)

    def chat(self, role: str) -> Any:
        """Return the chat model of ``role`` (built once per role)."""
        with self._lock:
            if role not in self._chats:
                self._chats[role] = make_chat_model(self.spec(role))
            return self._chats[role]

    def breaker(self) -> CircuitBreaker:
        """Return the run's LLM circuit breaker (one for every role, built on first use)."""
        with self._lock:
            if self._breaker is None:
                self._breaker = CircuitBreaker(self.ctx.llm_breaker_after,
                                               self.ctx.llm_breaker_action)
            return self._breaker


def call_event(record: CallRecord, *, prompt_name: str, prompt_sha: str,
               candidate: str | None) -> dict[str, Any]:
    """Fields of the ``llm_call`` trace event of one request (with its estimated cost)."""
    return {"prompt_file": prompt_name, "prompt_sha256": prompt_sha, "candidate": candidate,
            "cost_usd": estimate_cost(record.model, record.input_tokens, record.output_tokens),
            **record.to_dict()}
