"""Preflight: check every role's model before a search starts (one request per server)."""

from __future__ import annotations

import os

import httpx

from agents.llm.spec import SERVER_HINT, LLMConfigError, LLMSpec, missing_key_message


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
                raise LLMConfigError(missing_key_message(spec))
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
            f"(GET {url}: {type(exc).__name__}: {exc}); {SERVER_HINT}"
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

