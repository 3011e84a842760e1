"""Chat-model backends, preflight checks and one robust structured call for every role.

Backends (``--llm``):

* ``heuristic``: no model at all; the graph uses the offline brains of each role.
* ``openai:<model>``: OpenAI through langchain-openai (key in ``$OPENAI_API_KEY``).
* ``local:<model>`` / ``openai-compatible:<model>`` + ``base_url``: any server that speaks
  the OpenAI chat-completions protocol (vLLM, Ollama, llama.cpp, LM Studio).

Failure handling has exactly one layer per failure class (docs/design.md#the-llm-side):
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
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_openai_messages
from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from agents.answers import (
    cap_text,
    echo_answer,
    reask_message,
    validate_answer,
    with_instructions,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
Method = Literal["json_schema", "fallback"]

VALID_FORMS = (
    "heuristic                         offline search policy, no model, no network",
    "openai:MODEL                      OpenAI API (needs $OPENAI_API_KEY), e.g. openai:gpt-4.1",
    "openai --model MODEL              same as openai:MODEL",
    "local:MODEL --base-url URL        any OpenAI-compatible server (vLLM, Ollama, llama.cpp, "
    "LM Studio); also openai-compatible:MODEL or local --model MODEL",
)
_LOCAL_NAMES = ("local", "openai-compatible")
_SERVER_HINT = (
    "start one, e.g. `vllm serve MODEL --port 8000` (base URL http://127.0.0.1:8000/v1), "
    "`ollama serve` (http://127.0.0.1:11434/v1), `llama-server -m MODEL.gguf --port 8080` "
    "(http://127.0.0.1:8080/v1) or LM Studio's server (http://127.0.0.1:1234/v1), then pass "
    "--base-url URL; or run offline with --llm heuristic"
)


class LLMConfigError(RuntimeError):
    """A configuration problem the user must fix (bad --llm, missing key, no server)."""


class LLMCallError(RuntimeError):
    """Retries or re-asks are exhausted; ``records`` holds every attempt."""

    def __init__(self, message: str, records: list[CallRecord] | None = None) -> None:
        super().__init__(message)
        self.records: list[CallRecord] = list(records or [])

    @property
    def http_attempts(self) -> int:
        """HTTP requests sent for this call (every record's first try and retries)."""
        return sum(r.http_attempts for r in self.records)


class BadResponseBody(RuntimeError):
    """A 200 answer whose body the client could not read as a chat completion.

    Invalid JSON, a body without ``choices``, or a non-JSON (``text/plain``) page: the
    SDK and LangChain raise ``JSONDecodeError`` / ``TypeError`` / ``AttributeError`` /
    ``KeyError`` there. Treated as transient (a proxy or an overloaded server).
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"unreadable 200 response body ({type(cause).__name__}: "
                         f"{str(cause)[:200]})")
        self.cause_class = type(cause).__name__

#: Cap of the answer text kept in a trace record (the rest is counted, not stored).
TRACE_RESPONSE_CHARS = 20_000
#: How many times an over-long prompt is shortened before the call gives up.
MAX_SHORTENINGS = 3
_OVERFLOW = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens|"
    r"input tokens exceed|reduce the length", re.IGNORECASE)


@dataclass(frozen=True)
class LLMSpec:
    """Which chat model a role talks to, and how patiently.

    Attributes:
        backend: ``"heuristic"`` or ``"openai"`` (the latter also covers any
            OpenAI-compatible server through ``base_url``).
        model: Model name as the server knows it.
        base_url: Server root ending in ``/v1``; ``None`` means api.openai.com.
        api_key_env: Environment variable holding the API key.
        timeout_s: Per-request timeout of the HTTP client.
        max_retries: Transport retries (429, timeout, connection, 5xx) after the first
            attempt; the SDK's own retries are off so the layers do not multiply.
        temperature: Sampling temperature.
    """

    backend: Literal["heuristic", "openai"]
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 4
    temperature: float = 0.2

    @property
    def label(self) -> str:
        """Short name for traces: ``heuristic``, ``openai:gpt-4.1`` or ``URL:model``."""
        if self.backend == "heuristic":
            return "heuristic"
        if self.base_url:
            return f"{self.base_url}:{self.model}"
        return f"openai:{self.model}"


def normalize_base_url(url: str) -> str:
    """Return ``url`` as a server root ending in ``/v1`` (scheme defaults to http)."""
    url = url.strip().rstrip("/")
    if not url:
        raise LLMConfigError("--base-url is empty; e.g. --base-url http://127.0.0.1:8000/v1")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def _bad_llm(llm: str, why: str) -> LLMConfigError:
    forms = "\n  ".join(VALID_FORMS)
    return LLMConfigError(f"invalid --llm {llm!r}: {why}. Valid forms:\n  {forms}")


def parse_llm(
    llm: str = "heuristic",
    *,
    base_url: str | None = None,
    model: str | None = None,
    timeout_s: float = 120.0,
) -> LLMSpec:
    """Turn the ``--llm`` / ``--base-url`` / ``--model`` options into an :class:`LLMSpec`.

    Raises:
        LLMConfigError: For anything that is not one of :data:`VALID_FORMS`.
    """
    text = (llm or "").strip()
    name, _, inline_model = text.partition(":")
    name = name.lower()
    inline_model = inline_model.strip() or None
    if inline_model and model and inline_model != model:
        raise _bad_llm(llm, f"model given twice ({inline_model!r} and --model {model!r})")
    chosen = inline_model or model
    if name == "heuristic" and not inline_model:
        if base_url:
            raise _bad_llm(llm, "--base-url needs a model backend, not heuristic")
        return LLMSpec(backend="heuristic", timeout_s=timeout_s)
    if name not in ("openai", *_LOCAL_NAMES):
        raise _bad_llm(llm, "unknown backend")
    if name in _LOCAL_NAMES and not base_url:
        raise _bad_llm(llm, f"{name} needs --base-url (the server's URL ending in /v1)")
    if not chosen:
        raise _bad_llm(llm, "no model name (use openai:MODEL, local:MODEL or --model MODEL)")
    url = normalize_base_url(base_url) if base_url else None
    return LLMSpec(backend="openai", model=chosen, base_url=url, timeout_s=timeout_s)


def _missing_key_message(spec: LLMSpec) -> str:
    return (
        f"--llm {spec.label} needs an API key: export {spec.api_key_env}=sk-... "
        "(https://platform.openai.com/api-keys), or run offline with --llm heuristic, "
        "or point --base-url at a local OpenAI-compatible server"
    )


def make_chat_model(spec: LLMSpec) -> BaseChatModel:
    """Build the LangChain chat model for ``spec`` (never for ``heuristic``).

    SDK retries are off (``max_retries=0``): :func:`structured_call` owns retrying.
    Streaming is disabled so every answer carries its token usage.

    Raises:
        LLMConfigError: For the heuristic backend or a missing OpenAI key.
    """
    from langchain_openai import ChatOpenAI  # imported lazily: heuristic runs never need it

    if spec.backend == "heuristic":
        raise LLMConfigError("the heuristic backend has no chat model; use the offline brains")
    key = os.environ.get(spec.api_key_env)
    if not spec.base_url and not key:
        raise LLMConfigError(_missing_key_message(spec))
    kwargs: dict[str, Any] = {}
    if spec.base_url:
        # Local servers ignore the key but the SDK insists on one; they also speak only
        # chat completions, never the Responses API.
        kwargs.update(base_url=spec.base_url, use_responses_api=False)
    return ChatOpenAI(
        model=spec.model,
        api_key=key or "not-needed",
        timeout=spec.timeout_s,
        max_retries=0,
        temperature=spec.temperature,
        disable_streaming=True,
        metadata={"flnas_label": spec.label, "flnas_max_retries": spec.max_retries},
        **kwargs,
    )


def preflight(spec: LLMSpec, *, timeout_s: float = 5.0) -> list[str]:
    """Check that ``spec`` can work before a search starts (see :func:`preflight_all`).

    Returns:
        Warnings (empty when all is well).

    Raises:
        LLMConfigError: Missing key, unreachable server, or a server refusing the key.
    """
    return preflight_all([spec], timeout_s=timeout_s)


def preflight_all(specs: list[LLMSpec], *, timeout_s: float = 5.0) -> list[str]:
    """Check every role's model before a search starts; no network for heuristic.

    OpenAI proper: the key must be set. A ``base_url`` server: one ``GET {base_url}/models``
    per server (however many roles use it) must answer; a model missing from its list
    gives a warning (servers such as llama.cpp accept any name). When the list cannot be
    read (an HTTP error, a body that is not a model list, an empty list) one warning says
    that the models could not be checked. Warnings are returned, not logged: the caller
    prints each once.

    Returns:
        Warnings, each once, in server order (empty when all is well).

    Raises:
        LLMConfigError: Missing key, unreachable server, or a server refusing the key.
    """
    servers: dict[str, list[LLMSpec]] = {}
    for spec in specs:
        if spec.backend == "heuristic":
            continue
        if not spec.base_url:
            if not os.environ.get(spec.api_key_env):
                raise LLMConfigError(_missing_key_message(spec))
            continue
        servers.setdefault(spec.base_url, []).append(spec)
    warnings: list[str] = []
    for base_url, group in servers.items():
        models = list(dict.fromkeys(str(s.model) for s in group))
        for warning in _check_server(base_url, models, group[0].api_key_env, timeout_s):
            if warning not in warnings:
                warnings.append(warning)
    return warnings


def _check_server(base_url: str, models: list[str], key_env: str, timeout_s: float
                  ) -> list[str]:
    url = f"{base_url}/models"
    key = os.environ.get(key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise LLMConfigError(
            f"no OpenAI-compatible server answers at {base_url} "
            f"(GET {url}: {type(exc).__name__}: {exc}); {_SERVER_HINT}"
        ) from exc
    if resp.status_code in (401, 403):
        raise LLMConfigError(
            f"{url} refused the API key (HTTP {resp.status_code}); export "
            f"{key_env} with the key the server expects"
        )
    names = ", ".join(repr(m) for m in models)
    if resp.status_code != 200:
        return [f"cannot check model {names}: {url} answered HTTP {resp.status_code}; "
                "the search starts anyway"]
    try:
        ids = [str(m["id"]) for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return [f"cannot check model {names}: {url} did not answer a model list "
                f"({resp.headers.get('content-type', '?')}); the search starts anyway"]
    if not ids:
        return [f"cannot check model {names}: {url} lists no models; the search starts anyway"]
    return [f"model {m!r} is not listed by {base_url} (available: {', '.join(ids[:20])}); "
            "pass --model with one of them" for m in models if m not in ids]


class CircuitBreaker:
    """Stops calling an LLM that keeps failing.

    After ``threshold`` consecutive failed calls (each a call whose retries and re-asks
    were exhausted) the breaker opens and stays open for the rest of the process: the
    roles use their heuristic brains (``action="heuristic"``) or the run stops after the
    current step (``action="stop"``). A success resets the count. ``threshold=None``
    disables it. Thread-safe.
    """

    ACTIONS = ("heuristic", "stop")

    def __init__(self, threshold: int | None = 3, action: str = "heuristic") -> None:
        """Create a closed breaker.

        Raises:
            ValueError: An unknown action or a threshold below 1.
        """
        if action not in self.ACTIONS:
            raise ValueError(f"circuit breaker action must be one of {self.ACTIONS}, "
                             f"got {action!r}")
        if threshold is not None and threshold < 1:
            raise ValueError(f"circuit breaker threshold must be >= 1 or none, got {threshold}")
        self.threshold = threshold
        self.action = action
        self.consecutive = 0
        self.is_open = False
        self.last_error: str | None = None
        self.opened_by: str | None = None
        self.skipped = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Tell whether a call may be made (counts the calls skipped while open)."""
        with self._lock:
            if self.is_open:
                self.skipped += 1
            return not self.is_open

    def success(self) -> None:
        """Record a successful call."""
        with self._lock:
            self.consecutive = 0

    def failure(self, error: str, role: str = "") -> bool:
        """Record a failed call; return True when this failure opened the breaker."""
        with self._lock:
            self.consecutive += 1
            self.last_error = error
            if self.is_open or self.threshold is None or self.consecutive < self.threshold:
                return False
            self.is_open, self.opened_by = True, role
            return True

    def describe(self) -> str:
        """One sentence for the console and the summary."""
        then = ("later LLM steps use the heuristic brain" if self.action == "heuristic"
                else "the run stops after the current step")
        return (f"LLM circuit breaker opened after {self.consecutive} consecutive failed "
                f"calls ({then}); last error: {(self.last_error or '')[:200]}")

    def report(self) -> dict[str, Any]:
        """JSON-ready state for summary.json and the trace."""
        return {"threshold": self.threshold, "action": self.action, "open": self.is_open,
                "consecutive_failures": self.consecutive, "opened_by": self.opened_by,
                "skipped_calls": self.skipped, "last_error": self.last_error,
                "message": self.describe() if self.is_open else None}


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


# Which method works, per (model label, schema name): a server that rejects
# response_format once is asked plainly from then on.
_METHOD_CACHE: dict[tuple[str, str], Method] = {}
_CACHE_LOCK = threading.Lock()


def reset_method_cache() -> None:
    """Forget which structured-output method each model supports (tests use this)."""
    with _CACHE_LOCK:
        _METHOD_CACHE.clear()


def chat_label(chat: BaseChatModel) -> str:
    """Label of a chat model: the spec label set by :func:`make_chat_model`, else a guess."""
    meta = getattr(chat, "metadata", None) or {}
    if meta.get("flnas_label"):
        return str(meta["flnas_label"])
    name = getattr(chat, "model_name", None) or getattr(chat, "model", None)
    base = getattr(chat, "openai_api_base", None)
    return f"{base}:{name}" if base else str(name or type(chat).__name__)


def is_context_overflow(exc: BaseException) -> bool:
    """Tell whether ``exc`` says the prompt does not fit the model's context window.

    LangChain classifies OpenAI's own message (``ContextOverflowError``); other servers
    answer a plain 400 (vLLM: "maximum context length is N tokens") or 413.
    """
    from langchain_core.exceptions import ContextOverflowError

    if isinstance(exc, ContextOverflowError):
        return True
    status = getattr(exc, "status_code", None)
    if status not in (400, 413, 422):
        return False
    body = getattr(exc, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    return status == 413 or code == "context_length_exceeded" or bool(_OVERFLOW.search(str(exc)))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, BadResponseBody)):  # incl. timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def attempt_info(exc: BaseException | None) -> dict[str, Any]:
    """Trace entry of one HTTP attempt: its kind, exception class and HTTP status."""
    if exc is None:
        return {"kind": "ok", "error_class": None, "status": 200}
    status = getattr(exc, "status_code", None)
    if isinstance(exc, BadResponseBody):
        kind, status, name = "bad_body", 200, f"{type(exc).__name__}({exc.cause_class})"
        return {"kind": kind, "error_class": name, "status": status}
    if isinstance(exc, openai.APITimeoutError):
        kind = "timeout"
    elif isinstance(exc, openai.APIConnectionError):
        kind = "connection"
    elif isinstance(exc, (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError)):
        kind, status = "truncated", 200
    elif status == 429:
        kind = "rate_limited"
    elif isinstance(status, int) and status >= 500:
        kind = "server_error"
    elif status in (401, 403):
        kind = "auth"
    elif status == 404:
        kind = "not_found"
    elif is_context_overflow(exc):
        kind = "context_length"
    elif isinstance(status, int) and status >= 400:
        kind = "bad_request"
    else:
        kind = "crash"
    return {"kind": kind, "error_class": type(exc).__name__, "status": status}


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None
    return None


def _backoff(initial: float, maximum: float) -> Callable[[RetryCallState], float]:
    """Exponential backoff with equal jitter, honouring Retry-After up to ``maximum``."""

    def wait(state: RetryCallState) -> float:
        base = min(maximum, initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(base / 2, base)
        hint = _retry_after(state.outcome.exception() if state.outcome else None)
        return max(delay, min(hint, maximum)) if hint is not None else delay

    return wait


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _usage(message: Any) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    head = f"HTTP {status} " if status else ""
    return f"{head}{type(exc).__name__}: {detail or getattr(exc, 'message', None) or exc}"


def _guarded(invoke: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Turn the client's errors on an unreadable 200 body into :class:`BadResponseBody`.

    The SDK raises ``JSONDecodeError`` for invalid JSON; LangChain ``TypeError`` /
    ``KeyError`` for a body without ``choices`` and ``AttributeError`` for a text page.
    SDK errors (``openai.OpenAIError``) pass through unchanged.
    """

    def call(arg: Any) -> Any:
        try:
            return invoke(arg)
        except openai.OpenAIError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise BadResponseBody(exc) from exc

    return call


def _ask_once(
    chat: BaseChatModel, prompt: list[BaseMessage], schema: type[BaseModel], method: Method,
    retrying: Retrying,
) -> tuple[BaseMessage, Any, str | None]:
    """One request (with transport retries): the answer, its parsed JSON, and a problem."""
    try:
        if method == "json_schema":
            runnable = chat.with_structured_output(
                {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
                method="json_schema",
                include_raw=True,
            )
            out = retrying(_guarded(runnable.invoke), prompt)
            if not isinstance(out, dict) or "raw" not in out:
                raise BadResponseBody(TypeError(f"unexpected structured output {type(out)}"))
            return out["raw"], out.get("parsed"), None
        return retrying(_guarded(chat.invoke), prompt), None, None
    except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as exc:
        # The SDK raises these before LangChain sees the (cut-off) answer.
        choice = exc.completion.choices[0] if exc.completion.choices else None
        usage = exc.completion.usage
        answer = AIMessage(
            content=(choice.message.content or "") if choice else "",
            usage_metadata={
                "input_tokens": usage.prompt_tokens if usage else 0,
                "output_tokens": usage.completion_tokens if usage else 0,
                "total_tokens": usage.total_tokens if usage else 0,
            },
        )
        problem = ("the answer was cut off (finish_reason=length); be more concise"
                   if isinstance(exc, openai.LengthFinishReasonError)
                   else "the answer was blocked by the content filter")
        return answer, None, problem


def structured_call(
    chat: BaseChatModel,
    messages: list[BaseMessage],
    schema: type[T],
    *,
    role: str,
    max_reasks: int = 2,
    on_record: Callable[[CallRecord], None] | None = None,
    method: Literal["auto", "json_schema", "fallback"] = "auto",
    max_retries: int | None = None,
    retry_wait_initial: float | None = None,
    retry_wait_max: float | None = None,
    shorten: Callable[[int], list[BaseMessage] | None] | None = None,
) -> tuple[T, list[CallRecord]]:
    """Ask ``chat`` for an instance of ``schema``, robustly.

    First ``with_structured_output(method="json_schema", include_raw=True)``; if the
    server rejects ``response_format`` (HTTP 400/422) the call goes on as a plain call
    whose answer is extracted (fenced JSON, first JSON object, or a ``python`` block for
    schemas with ``code``). Invalid answers are re-asked with the validation error, up to
    ``max_reasks`` times. Transport errors (and 200 answers with an unreadable body) are
    retried with exponential backoff + jitter. A context-length error is not a format
    problem: the method stays, the prompt is shortened (earlier answers and re-asks
    dropped, then ``shorten(level)``, then the longest message cut in the middle) and
    sent again, at most :data:`MAX_SHORTENINGS` times.

    Args:
        chat: Model from :func:`make_chat_model` (any LangChain chat model works).
        messages: Prompt messages.
        schema: Pydantic model the answer must validate against.
        role: Role name for the records.
        max_reasks: Re-asks after an invalid answer.
        on_record: Called with each :class:`CallRecord` as soon as it exists.
        method: Force a method; ``"auto"`` uses what worked for this model before.
        max_retries: Transport retries; default from the spec (chat metadata), else 4.
        retry_wait_initial: First backoff in seconds (env ``FLNAS_RETRY_WAIT_INITIAL``, 1).
        retry_wait_max: Longest backoff in seconds (env ``FLNAS_RETRY_WAIT_MAX``, 30).
        shorten: Called with level 1, 2, ... after a context-length error; returns shorter
            prompt messages (e.g. with less history), or ``None`` when it cannot.

    Returns:
        The validated object and every record made for it.

    Raises:
        LLMConfigError: The server refused the key (401/403) or does not know the model.
        LLMCallError: Retries or re-asks exhausted, or a non-retryable request error.
        Exception: Anything unexpected propagates, after its record was emitted.
    """
    label = chat_label(chat)
    meta = getattr(chat, "metadata", None) or {}
    retries_allowed = max_retries if max_retries is not None else meta.get("flnas_max_retries", 4)
    initial = (retry_wait_initial if retry_wait_initial is not None
               else _env_float("FLNAS_RETRY_WAIT_INITIAL", 1.0))
    maximum = (retry_wait_max if retry_wait_max is not None
               else _env_float("FLNAS_RETRY_WAIT_MAX", 30.0))
    key = (label, schema.__name__)
    with _CACHE_LOCK:
        current: Method = _METHOD_CACHE.get(key, "json_schema") if method == "auto" else method
    records: list[CallRecord] = []
    exchange: list[BaseMessage] = []  # earlier answers and re-ask messages
    reasks = 0
    shortened = 0

    def emit(**fields: Any) -> CallRecord:
        record = CallRecord(role=role, model=label, reasks=reasks, method=current,
                            schema=schema.__name__, shortened=shortened, **fields)
        records.append(record)
        if on_record is not None:
            on_record(record)
        return record

    while True:
        base = messages if current == "json_schema" else with_instructions(messages, schema)
        prompt = [*base, *exchange]
        prompt_dicts = convert_to_openai_messages(prompt)
        attempts: list[dict[str, Any]] = []

        def count(state: RetryCallState, _attempts: list[dict[str, Any]] = attempts) -> None:
            exc = state.outcome.exception() if state.outcome else None
            _attempts.append(attempt_info(exc))
            log.warning("%s: %s, retry %d", label, _describe(exc) if exc else "?",
                        state.attempt_number)

        retrying = Retrying(
            stop=stop_after_attempt(1 + max(0, int(retries_allowed))),
            wait=_backoff(initial, maximum),
            retry=retry_if_exception(_is_transient),
            before_sleep=count,
            reraise=True,
        )
        start = time.perf_counter()

        def failed(exc: BaseException, _start: float = start, _prompt: list = prompt_dicts,
                   _attempts: list[dict[str, Any]] = attempts) -> None:
            last = attempt_info(exc)
            emit(prompt=_prompt, response="", input_tokens=0, output_tokens=0,
                 latency_s=time.perf_counter() - _start, retries=len(_attempts),
                 error=_describe(exc), attempts=[*_attempts, last],
                 error_class=last["error_class"], status=last["status"])

        try:
            answer, parsed, problem = _ask_once(chat, prompt, schema, current, retrying)
        except (openai.AuthenticationError, openai.PermissionDeniedError,
                openai.NotFoundError) as exc:
            failed(exc)
            what = ("does not know the model (check --model)"
                    if isinstance(exc, openai.NotFoundError)
                    else "refused the API key (check the key you exported)")
            raise LLMConfigError(f"{label}: the server {what}: {_describe(exc)}") from exc
        except (openai.APIStatusError, NotImplementedError) as exc:
            failed(exc)
            if is_context_overflow(exc):
                # Not a format problem: keep the method, send less.
                if shortened >= MAX_SHORTENINGS:
                    raise LLMCallError(f"{role}: the prompt does not fit the context window of "
                                       f"{label} even after shortening it {shortened} times: "
                                       f"{_describe(exc)}", records) from exc
                shortened += 1
                log.warning("%s: prompt too long for the context window; shortening (%d)",
                            label, shortened)
                exchange = []
                messages = _shorter(messages, shortened, shorten)
                continue
            rejected = isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError,
                                        NotImplementedError))
            if not rejected:  # 5xx / 429 the retries gave up on, or another status
                tries = len(attempts) + 1
                raise LLMCallError(f"{role}: {label} failed after {tries} attempt"
                                   f"{'s' if tries > 1 else ''}: {_describe(exc)}",
                                   records) from exc
            if current == "json_schema":
                log.warning("%s: json_schema output rejected (%s); using plain calls",
                            label, _describe(exc))
                current = "fallback"
                with _CACHE_LOCK:
                    _METHOD_CACHE[key] = "fallback"
                continue
            raise LLMCallError(f"{role}: request rejected by {label}: {_describe(exc)}",
                               records) from exc
        except (openai.OpenAIError, BadResponseBody) as exc:
            failed(exc)
            tries = len(attempts) + 1
            raise LLMCallError(f"{role}: {label} failed after {tries} attempt"
                               f"{'s' if tries > 1 else ''}: {_describe(exc)}", records) from exc
        except BaseException as exc:
            failed(exc)  # a crash (or Ctrl-C) still leaves its llm_call record
            raise
        latency = time.perf_counter() - start
        text = str(answer.text) if isinstance(answer, BaseMessage) else str(answer)
        if parsed is None and isinstance(answer, AIMessage) and answer.tool_calls:
            parsed = answer.tool_calls[0].get("args")  # some servers answer with a tool call
        value, error = (None, problem) if problem else validate_answer(text, parsed, schema)
        tokens_in, tokens_out = _usage(answer)
        emit(prompt=prompt_dicts, response=cap_text(text, TRACE_RESPONSE_CHARS),
             input_tokens=tokens_in, output_tokens=tokens_out, latency_s=latency,
             retries=len(attempts), error=error, attempts=[*attempts, attempt_info(None)],
             status=200, response_chars=len(text))
        if value is not None:
            return value, records
        if reasks >= max_reasks:
            raise LLMCallError(f"{role}: no valid {schema.__name__} from {label} after "
                               f"{reasks + 1} answers; last error: {error}", records)
        reasks += 1
        # Only the answer being corrected is echoed, capped: a huge answer must not
        # balloon every later prompt.
        exchange = [AIMessage(content=echo_answer(text)),
                    HumanMessage(content=reask_message(str(error), schema))]


def _shorter(messages: list[BaseMessage], level: int,
             shorten: Callable[[int], list[BaseMessage] | None] | None) -> list[BaseMessage]:
    """Return a shorter prompt: the caller's own shortening, else the longest message cut."""
    if shorten is not None:
        shorter = shorten(level)
        if shorter:
            return shorter
    longest = max(range(len(messages)), key=lambda i: len(str(messages[i].content)))
    text = str(messages[longest].content)
    cut = cap_text(text, max(200, len(text) // 2))
    return [*messages[:longest], messages[longest].model_copy(update={"content": cut}),
            *messages[longest + 1:]]
