"""One robust structured call for every role: retries, re-asks, format fallback, shortening.

Failure handling has exactly one layer per failure class (docs/architecture.md#the-llm-side):
transport errors (429, timeouts, connection errors, 5xx, unreadable 200 bodies) are
retried here with tenacity while the SDK's own retries are switched off; answers that do
not validate are re-asked with the validation error; a server that rejects
``response_format`` is asked again without it, and that choice is remembered per model so
later calls do not fail the same way again. A prompt longer than the model's context
window is shortened (earlier answers first, then the role's history) and sent again, in
the same method. Every HTTP attempt is traced with its error class and status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_openai_messages
from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from agents.answers import cap_text, echo_answer, reask_message, validate_answer, with_instructions
from agents.llm.records import TRACE_RESPONSE_CHARS, CallRecord, LLMCallError
from agents.llm.spec import LLMConfigError
from agents.llm.transport import (
    BadResponseBody,
    attempt_info,
    backoff,
    describe_error,
    env_float,
    guarded,
    is_context_overflow,
    is_transient,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
Method = Literal["json_schema", "fallback"]

#: How many times an over-long prompt is shortened before the call gives up.
MAX_SHORTENINGS = 3

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


def _usage(message: Any) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0)



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
            out = retrying(guarded(runnable.invoke), prompt)
            if not isinstance(out, dict) or "raw" not in out:
                raise BadResponseBody(TypeError(f"unexpected structured output {type(out)}"))
            return out["raw"], out.get("parsed"), None
        return retrying(guarded(chat.invoke), prompt), None, None
    except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as exc:
        # The SDK raises these before LangChain sees the (cut-off) answer.
        completion = exc.completion
        choice = completion.choices[0] if completion and completion.choices else None
        usage = completion.usage if completion else None
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
    call = _Call(chat, messages, schema, role=role, max_reasks=max_reasks, on_record=on_record,
                 method=method, max_retries=max_retries, shorten=shorten,
                 wait=(retry_wait_initial, retry_wait_max))
    return call.run(), call.records


class _Call(Generic[T]):
    """The state of one :func:`structured_call`: method, exchange so far, records."""

    def __init__(self, chat: BaseChatModel, messages: list[BaseMessage], schema: type[T], *,
                 role: str, max_reasks: int, on_record: Callable[[CallRecord], None] | None,
                 method: Literal["auto", "json_schema", "fallback"], max_retries: int | None,
                 shorten: Callable[[int], list[BaseMessage] | None] | None,
                 wait: tuple[float | None, float | None]) -> None:
        self.chat, self.messages, self.schema, self.role = chat, messages, schema, role
        self.max_reasks, self.on_record, self.shorten = max_reasks, on_record, shorten
        self.label = chat_label(chat)
        meta = getattr(chat, "metadata", None) or {}
        self.retries_allowed = (max_retries if max_retries is not None
                                else meta.get("flnas_max_retries", 4))
        self.initial = (wait[0] if wait[0] is not None
                        else env_float("FLNAS_RETRY_WAIT_INITIAL", 1.0))
        self.maximum = wait[1] if wait[1] is not None else env_float("FLNAS_RETRY_WAIT_MAX", 30.0)
        self.key = (self.label, schema.__name__)
        with _CACHE_LOCK:
            self.method: Method = (_METHOD_CACHE.get(self.key, "json_schema") if method == "auto"
                                   else method)
        self.records: list[CallRecord] = []
        self.exchange: list[BaseMessage] = []  # earlier answers and re-ask messages
        self.reasks = 0
        self.shortened = 0

    def run(self) -> T:
        """Ask until an answer validates; raise when the call cannot succeed."""
        while True:
            base = (self.messages if self.method == "json_schema"
                    else with_instructions(self.messages, self.schema))
            prompt = [*base, *self.exchange]
            prompt_dicts = convert_to_openai_messages(prompt)
            attempts: list[dict[str, Any]] = []
            retrying = self.retrying(attempts)
            start = time.perf_counter()
            try:
                answer, parsed, problem = _ask_once(self.chat, prompt, self.schema, self.method,
                                                    retrying)
            except BaseException as exc:
                # Every failure leaves its record first, a crash (or Ctrl-C) included.
                self.failed(exc, prompt_dicts, attempts, start)
                if not self.recover(exc, attempts):
                    raise
                continue
            value = self.answered(answer, parsed, problem, prompt_dicts, attempts, start)
            if value is not None:
                return value

    def emit(self, **fields: Any) -> CallRecord:
        """Make a record of this request, keep it and hand it to ``on_record``."""
        record = CallRecord(role=self.role, model=self.label, reasks=self.reasks,
                            method=self.method, schema=self.schema.__name__,
                            shortened=self.shortened, **fields)
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return record

    def retrying(self, attempts: list[dict[str, Any]]) -> Retrying:
        """Transport retries of one request; each failed attempt is appended to ``attempts``."""

        def count(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            attempts.append(attempt_info(exc))
            log.warning("%s: %s, retry %d", self.label, describe_error(exc) if exc else "?",
                        state.attempt_number)

        return Retrying(
            stop=stop_after_attempt(1 + max(0, int(self.retries_allowed))),
            wait=backoff(self.initial, self.maximum),
            retry=retry_if_exception(is_transient),
            before_sleep=count,
            reraise=True,
        )

    def failed(self, exc: BaseException, prompt: list[Any], attempts: list[dict[str, Any]],
               start: float) -> None:
        """Record a request that raised instead of answering."""
        last = attempt_info(exc)
        self.emit(prompt=prompt, response="", input_tokens=0, output_tokens=0,
                  latency_s=time.perf_counter() - start, retries=len(attempts),
                  error=describe_error(exc), attempts=[*attempts, last],
                  error_class=last["error_class"], status=last["status"])

    def recover(self, exc: BaseException, attempts: list[dict[str, Any]]) -> bool:
        """Decide what a failed request means: True to ask again, False to re-raise ``exc``.

        Raises:
            LLMConfigError: The key was refused or the model is unknown.
            LLMCallError: The call cannot succeed.
        """
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError,
                            openai.NotFoundError)):
            what = ("does not know the model (check --model)"
                    if isinstance(exc, openai.NotFoundError)
                    else "refused the API key (check the key you exported)")
            raise LLMConfigError(f"{self.label}: the server {what}: {describe_error(exc)}"
                                 ) from exc
        if isinstance(exc, (openai.APIStatusError, NotImplementedError)):
            return self.rejected(exc, attempts)
        if isinstance(exc, (openai.OpenAIError, BadResponseBody)):
            raise self.gave_up(exc, attempts) from exc
        return False

    def rejected(self, exc: BaseException, attempts: list[dict[str, Any]]) -> bool:
        """Handle an error status: shorten an over-long prompt, drop response_format, or fail.

        Returns:
            True when the request should be sent again.
        """
        if is_context_overflow(exc):
            # Not a format problem: keep the method, send less.
            if self.shortened >= MAX_SHORTENINGS:
                raise LLMCallError(f"{self.role}: the prompt does not fit the context window of "
                                   f"{self.label} even after shortening it {self.shortened} "
                                   f"times: {describe_error(exc)}", self.records) from exc
            self.shortened += 1
            log.warning("%s: prompt too long for the context window; shortening (%d)",
                        self.label, self.shortened)
            self.exchange = []
            self.messages = _shorter(self.messages, self.shortened, self.shorten)
            return True
        if not isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError,
                                NotImplementedError)):
            raise self.gave_up(exc, attempts) from exc  # 5xx / 429 the retries gave up on
        if self.method == "json_schema":
            log.warning("%s: json_schema output rejected (%s); using plain calls",
                        self.label, describe_error(exc))
            self.method = "fallback"
            with _CACHE_LOCK:
                _METHOD_CACHE[self.key] = "fallback"
            return True
        raise LLMCallError(f"{self.role}: request rejected by {self.label}: "
                           f"{describe_error(exc)}", self.records) from exc

    def gave_up(self, exc: BaseException, attempts: list[dict[str, Any]]) -> LLMCallError:
        """Return the error of a request whose transport retries are exhausted."""
        tries = len(attempts) + 1
        return LLMCallError(f"{self.role}: {self.label} failed after {tries} attempt"
                            f"{'s' if tries > 1 else ''}: {describe_error(exc)}", self.records)

    def answered(self, answer: BaseMessage, parsed: Any, problem: str | None,
                 prompt: list[Any], attempts: list[dict[str, Any]], start: float) -> T | None:
        """Record an answer and validate it; None means a re-ask was prepared.

        Raises:
            LLMCallError: The answer is invalid and the re-asks are used up.
        """
        latency = time.perf_counter() - start
        text = str(answer.text) if isinstance(answer, BaseMessage) else str(answer)
        if parsed is None and isinstance(answer, AIMessage) and answer.tool_calls:
            parsed = answer.tool_calls[0].get("args")  # some servers answer with a tool call
        value, error = (None, problem) if problem else validate_answer(text, parsed, self.schema)
        tokens_in, tokens_out = _usage(answer)
        self.emit(prompt=prompt, response=cap_text(text, TRACE_RESPONSE_CHARS),
                  input_tokens=tokens_in, output_tokens=tokens_out, latency_s=latency,
                  retries=len(attempts), error=error, attempts=[*attempts, attempt_info(None)],
                  status=200, response_chars=len(text))
        if value is not None:
            return value
        if self.reasks >= self.max_reasks:
            raise LLMCallError(f"{self.role}: no valid {self.schema.__name__} from {self.label} "
                               f"after {self.reasks + 1} answers; last error: {error}",
                               self.records)
        self.reasks += 1
        # Only the answer being corrected is echoed, capped: a huge answer must not
        # balloon every later prompt.
        self.exchange = [AIMessage(content=echo_answer(text)),
                         HumanMessage(content=reask_message(str(error), self.schema))]
        return None


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
