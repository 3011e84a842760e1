"""What a request to a chat model leaves: :class:`CallRecord`, and the error of a call."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Cap of the answer text kept in a trace record (the rest is counted, not stored).
TRACE_RESPONSE_CHARS = 20_000


@dataclass
class CallRecord:
    """One request to a chat model as it appears in the trace.

    Attributes:
        role: Agent role that asked (designer, critic, code_fixer, ...).
        model: Model label (see :attr:`LLMSpec.label`).
        prompt: Messages sent, as OpenAI-style dicts.
        response: Text answered ("" when no answer came back).
        input_tokens: Prompt tokens reported by the server (0 if unknown).
        output_tokens: Completion tokens reported by the server (0 if unknown).
        latency_s: Wall time of the request including transport retries and waits.
        retries: Transport retries this request needed.
        reasks: How many re-asks preceded this request (0 for the first ask).
        method: ``"json_schema"`` (response_format) or ``"fallback"`` (plain + extract).
        error: Why this attempt did not yield a valid object, else ``None``.
        schema: Name of the expected output schema.
        attempts: Every HTTP attempt of this request: ``{"kind", "error_class",
            "status"}`` (kind: ok, rate_limited, server_error, timeout, connection,
            bad_body, context_length, bad_request, auth, not_found, crash).
        error_class: Exception class of the failure, else ``None``.
        status: HTTP status of the last attempt (200 for a body that was received,
            ``None`` when no HTTP answer came: timeout, connection error).
        response_chars: Length of the full answer (``response`` is capped at
            :data:`TRACE_RESPONSE_CHARS`).
        shortened: How many times the prompt was shortened to fit the context window.
    """

    role: str
    model: str
    prompt: list[dict]
    response: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    retries: int
    reasks: int
    method: str
    error: str | None = None
    schema: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error_class: str | None = None
    status: int | None = None
    response_chars: int = 0
    shortened: int = 0

    @property
    def http_attempts(self) -> int:
        """HTTP requests this record stands for (first try + transport retries)."""
        return len(self.attempts) or self.retries + 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of this record."""
        return asdict(self)


class LLMCallError(RuntimeError):
    """Retries or re-asks are exhausted; ``records`` holds every attempt."""

    def __init__(self, message: str, records: list[CallRecord] | None = None) -> None:
        super().__init__(message)
        self.records: list[CallRecord] = list(records or [])

    @property
    def http_attempts(self) -> int:
        """HTTP requests sent for this call (every record's first try and retries)."""
        return sum(r.http_attempts for r in self.records)

