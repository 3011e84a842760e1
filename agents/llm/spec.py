"""Which chat model a role talks to: the ``--llm`` forms, :class:`LLMSpec` and the client.

Backends (``--llm``): ``heuristic`` (no model at all; the graph uses each role's offline
brain), ``openai:<model>`` (OpenAI through langchain-openai, key in ``$OPENAI_API_KEY``),
``local:<model>`` / ``openai-compatible:<model>`` with ``base_url`` (any server that speaks
the OpenAI chat-completions protocol: vLLM, Ollama, llama.cpp, LM Studio).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

VALID_FORMS = (
    "heuristic                         offline search policy, no model, no network",
    "openai:MODEL                      OpenAI API (needs $OPENAI_API_KEY), e.g. openai:gpt-4.1",
    "openai --model MODEL              same as openai:MODEL",
    "local:MODEL --base-url URL        any OpenAI-compatible server (vLLM, Ollama, llama.cpp, "
    "LM Studio); also openai-compatible:MODEL or local --model MODEL",
)
_LOCAL_NAMES = ("local", "openai-compatible")
SERVER_HINT = (
    "start one, e.g. `vllm serve MODEL --port 8000` (base URL http://127.0.0.1:8000/v1), "
    "`ollama serve` (http://127.0.0.1:11434/v1), `llama-server -m MODEL.gguf --port 8080` "
    "(http://127.0.0.1:8080/v1) or LM Studio's server (http://127.0.0.1:1234/v1), then pass "
    "--base-url URL; or run offline with --llm heuristic"
)


class LLMConfigError(RuntimeError):
    """A configuration problem the user must fix (bad --llm, missing key, no server)."""


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
    name, _, after_colon = text.partition(":")
    name = name.lower()
    inline_model = after_colon.strip() or None
    if inline_model and model and inline_model != model:
        raise _bad_llm(llm, f"model given twice ({inline_model!r} and --model {model!r})")
    chosen: str | None = inline_model or model
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


def missing_key_message(spec: LLMSpec) -> str:
    """Say how to supply the API key ``spec`` needs (also the preflight's message)."""
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
        LLMConfigError: For the heuristic backend, a missing OpenAI key or no model name.
    """
    from langchain_openai import ChatOpenAI  # imported lazily: heuristic runs never need it

    if spec.backend == "heuristic":
        raise LLMConfigError("the heuristic backend has no chat model; use the offline brains")
    key = os.environ.get(spec.api_key_env)
    if not spec.base_url and not key:
        raise LLMConfigError(missing_key_message(spec))
    if not spec.model:
        raise LLMConfigError(f"--llm {spec.label} names no model (use openai:MODEL, "
                             "local:MODEL or --model MODEL)")
    kwargs: dict[str, Any] = {}
    if spec.base_url:
        # Local servers ignore the key but the SDK insists on one; they also speak only
        # chat completions, never the Responses API.
        kwargs.update(base_url=spec.base_url, use_responses_api=False)
    return ChatOpenAI(
        model=spec.model,
        api_key=SecretStr(key or "not-needed"),
        timeout=spec.timeout_s,
        max_retries=0,
        temperature=spec.temperature,
        disable_streaming=True,
        metadata={"flnas_label": spec.label, "flnas_max_retries": spec.max_retries},
        **kwargs,
    )

