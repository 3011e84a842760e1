"""Chat-model backends, preflight checks and one robust structured call for every role.

Backends (``--llm``):

* ``heuristic``: no model at all; the graph uses the offline brains of each role.
* ``openai:<model>``: OpenAI through langchain-openai (key in ``$OPENAI_API_KEY``).
* ``local:<model>`` / ``openai-compatible:<model>`` + ``base_url``: any server that speaks
  the OpenAI chat-completions protocol (vLLM, Ollama, llama.cpp, LM Studio).

Failure handling has exactly one layer per failure class (docs/architecture.md#the-llm-side):
transport errors (429, timeouts, connection errors, 5xx) are retried here with tenacity
while the SDK's own retries are switched off; answers that do not validate are re-asked
with the validation error; a server that rejects ``response_format`` is asked again
without it, and that choice is remembered per model so later calls do not fail the same
way again.

A 200 answer whose body is broken (invalid JSON, no ``choices``, a ``text/plain`` page)
is a transport error like a 5xx: retried, then a failed call. A prompt longer than the
model's context window is its own error: the prompt is shortened (earlier answers first,
then the role's history) and sent again, in the same method. Every HTTP attempt is
traced with its error class and status. A :class:`CircuitBreaker` counts consecutive
failed calls so a persistent outage stops costing retries.

Modules: :mod:`~agents.llm.spec` (the ``--llm`` forms and the client),
:mod:`~agents.llm.preflight`, :mod:`~agents.llm.breaker`, :mod:`~agents.llm.records`,
:mod:`~agents.llm.transport` (retry policy, attempt classes) and :mod:`~agents.llm.call`
(:func:`structured_call`).
"""

from agents.llm.breaker import CircuitBreaker
from agents.llm.call import (
    MAX_SHORTENINGS,
    Method,
    chat_label,
    reset_method_cache,
    structured_call,
)
from agents.llm.preflight import preflight, preflight_all
from agents.llm.records import TRACE_RESPONSE_CHARS, CallRecord, LLMCallError
from agents.llm.spec import (
    VALID_FORMS,
    LLMConfigError,
    LLMSpec,
    make_chat_model,
    normalize_base_url,
    parse_llm,
)
from agents.llm.transport import BadResponseBody, attempt_info, is_context_overflow

__all__ = [
    "MAX_SHORTENINGS",
    "TRACE_RESPONSE_CHARS",
    "VALID_FORMS",
    "BadResponseBody",
    "CallRecord",
    "CircuitBreaker",
    "LLMCallError",
    "LLMConfigError",
    "LLMSpec",
    "Method",
    "attempt_info",
    "chat_label",
    "is_context_overflow",
    "make_chat_model",
    "normalize_base_url",
    "parse_llm",
    "preflight",
    "preflight_all",
    "reset_method_cache",
    "structured_call",
]
