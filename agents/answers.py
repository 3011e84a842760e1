"""Answers as text: pull a schema's object out of free text, and ask again when it fails.

The fallback half of :func:`agents.llm.structured_call`, for servers without (working)
structured output: format instructions for the prompt, extraction of a fenced JSON block,
the first JSON object or a fenced python block, validation, and the re-ask message.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

ERROR_QUOTE_CHARS = 1500  # validation errors quoted back to the model are cut to this size
#: A wrong answer echoed back in a re-ask is cut to this size (a 1 MB answer must not
#: become a 260k-token prompt).
ECHO_ANSWER_CHARS = 6000
#: Free-text fields of a valid answer (rationale, summary, ...) are stored up to this
#: size; ``code`` is kept whole (the gate judges it).
STORED_TEXT_CHARS = 4000

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def cap_text(text: str, limit: int) -> str:
    """Return ``text`` cut to about ``limit`` characters, keeping its head and tail.

    The cut is marked with how many characters were left out, so a reader (or a model)
    knows the text is incomplete.
    """
    if len(text) <= limit:
        return text
    head = max(0, limit * 3 // 4)
    tail = max(0, limit - head)
    return (f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n"
            f"{text[len(text) - tail:] if tail else ''}")


def echo_answer(text: str) -> str:
    """Return the previous answer as sent back in a re-ask (capped: ECHO_ANSWER_CHARS)."""
    return cap_text(text, ECHO_ANSWER_CHARS)


def cap_fields(value: T, limit: int = STORED_TEXT_CHARS) -> T:
    """Cap every free-text field of a valid answer (``code`` excepted) to ``limit``."""
    update: dict[str, Any] = {}
    for name, current in value:
        if name == "code":
            continue
        if isinstance(current, str) and len(current) > limit:
            update[name] = cap_text(current, limit)
        elif isinstance(current, list) and any(isinstance(x, str) and len(x) > limit
                                               for x in current):
            update[name] = [cap_text(x, limit) if isinstance(x, str) else x for x in current]
    return value.model_copy(update=update) if update else value


def _first_json_object(text: str) -> dict | None:
    """Return the first top-level JSON object in ``text`` (braces in strings are fine)."""
    decoder = json.JSONDecoder()
    for tries, match in enumerate(re.finditer(r"\{", text)):
        if tries >= 200:
            break
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def extract_object(text: str, schema: type[BaseModel]) -> dict | None:
    """Pull the answer object out of free text.

    Tries a fenced ``json`` (or unlabelled) block, then the first top-level JSON object.
    When ``schema`` has a ``code`` field, a fenced ``python`` block is accepted as the
    code, and the remaining prose fills ``rationale`` if the schema has one.
    """
    fences = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    py_blocks = [body for lang, body in fences if lang in ("python", "py", "python3")]
    obj: dict | None = None
    for lang, body in fences:
        if lang in ("json", "jsonc", "json5", ""):
            obj = _first_json_object(body)
            if obj is not None:
                break
    if obj is None:
        # Look outside python blocks: a dict literal in code is not the answer.
        obj = _first_json_object(_FENCE.sub(_drop_python, text) if py_blocks else text)
    fields = schema.model_fields
    if "code" in fields and py_blocks and not (obj or {}).get("code"):
        obj = dict(obj or {})
        obj["code"] = py_blocks[0].strip("\n") + "\n"
        if "rationale" in fields and not obj.get("rationale"):
            obj["rationale"] = _FENCE.sub("", text).strip()
    return obj


def _drop_python(match: re.Match[str]) -> str:
    return "" if match.group(1).lower() in ("python", "py", "python3") else match.group(0)


def _schema_text(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))


def format_instructions(schema: type[BaseModel]) -> str:
    """Tell a model without structured output how to shape its answer."""
    text = (
        f"Answer with one JSON object that matches this JSON schema ({schema.__name__}), "
        f"in a ```json fenced block:\n{_schema_text(schema)}"
    )
    if "code" in schema.model_fields:
        text += (
            "\nYou may instead give the `code` field as a ```python fenced block, with the "
            "rationale as plain text before it."
        )
    return text


def with_instructions(messages: list[BaseMessage], schema: type[BaseModel]) -> list[BaseMessage]:
    """Append format instructions to the last user message (keeps roles alternating)."""
    extra = format_instructions(schema)
    if messages and isinstance(messages[-1], HumanMessage) and isinstance(
        messages[-1].content, str
    ):
        return [*messages[:-1], HumanMessage(content=f"{messages[-1].content}\n\n{extra}")]
    return [*messages, HumanMessage(content=extra)]


def reask_message(error: str, schema: type[BaseModel]) -> str:
    """Write the follow-up message quoting a (truncated) validation error to the model."""
    if len(error) > ERROR_QUOTE_CHARS:
        error = error[:ERROR_QUOTE_CHARS] + " ... [truncated]"
    return (
        f"Your previous answer could not be used:\n{error}\n\n"
        f"Reply again with the complete corrected answer: one JSON object matching the "
        f"{schema.__name__} schema {_schema_text(schema)}"
    )


def validate_answer(
    text: str, parsed: Any, schema: type[T]
) -> tuple[T | None, str | None]:
    """Validate a parsed object, or one extracted from ``text``; return (value, error)."""
    obj = parsed if isinstance(parsed, dict) else extract_object(text, schema)
    if obj is None:
        return None, f"no JSON object found in the answer (expected {schema.__name__})"
    try:
        return cap_fields(schema.model_validate(obj)), None
    except ValidationError as exc:
        return None, str(exc)
