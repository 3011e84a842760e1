"""Transport failures: which errors are retried, how long to wait, how each attempt is traced.

A 200 answer whose body is broken (invalid JSON, no ``choices``, a ``text/plain`` page)
is a transport error like a 5xx (:class:`BadResponseBody`): retried, then a failed call.
A prompt longer than the model's context window is its own error
(:func:`is_context_overflow`): not retried, the caller shortens the prompt.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from typing import Any

import openai
from tenacity import RetryCallState

_OVERFLOW = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens|"
    r"input tokens exceed|reduce the length", re.IGNORECASE)


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


def is_transient(exc: BaseException) -> bool:
    """Tell whether ``exc`` is worth another attempt (429, 5xx, timeout, connection, bad body)."""
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


def backoff(initial: float, maximum: float) -> Callable[[RetryCallState], float]:
    """Exponential backoff with equal jitter, honouring Retry-After up to ``maximum``."""

    def wait(state: RetryCallState) -> float:
        base = min(maximum, initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(base / 2, base)
        hint = _retry_after(state.outcome.exception() if state.outcome else None)
        return max(delay, min(hint, maximum)) if hint is not None else delay

    return wait


def env_float(name: str, default: float) -> float:
    """Read a float from the environment; a missing or malformed value gives ``default``."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def describe_error(exc: BaseException) -> str:
    """One line for an error: HTTP status, class and the server's message."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    head = f"HTTP {status} " if status else ""
    return f"{head}{type(exc).__name__}: {detail or getattr(exc, 'message', None) or exc}"


def guarded(invoke: Callable[[Any], Any]) -> Callable[[Any], Any]:
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

