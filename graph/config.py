"""Settings resolution for the CLI: Settings defaults < TOML config file < explicit flags.

A config file holds Settings field names at top level or in tables (flattened)::

    iter_max = 8
    [budgets]
    max_params = 150000
    max_latency_ms = 2.0
    [llm]
    llm = "openai:gpt-4.1"
    [models]           # per-role models
    designer = "gpt-4.1"
    critic = "gpt-4.1-mini"
    code_fixer = "gpt-4.1-mini"
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from agents.settings import Settings

ROLE_MODEL_FIELDS = {"designer": "designer_model", "critic": "critic_model",
                     "code_fixer": "fixer_model", "fixer": "fixer_model"}
#: Flags a resumed run may change: they do not alter what was already evaluated.
RESUME_OVERRIDABLE = {"iter_max", "patience", "quiet", "max_wall_s", "max_llm_tokens",
                      "llm_timeout_s", "llm", "base_url", "model", "designer_model",
                      "critic_model", "fixer_model", "target_balanced_accuracy",
                      "target_max_gap", "require_isolation", "llm_breaker_after",
                      "llm_breaker_action"}


class ConfigError(ValueError):
    """A bad config file or setting (the message names the file and key)."""


def context_fields() -> set[str]:
    """Names of every Settings field."""
    return {f.name for f in dataclasses.fields(Settings)}


def read_config(path: Path) -> dict[str, Any]:
    """Read a TOML config file into flat Settings field values.

    Raises:
        ConfigError: Unreadable TOML or an unknown key.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    names = context_fields()
    out: dict[str, Any] = {}

    def put(key: str, value: Any, where: str) -> None:
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(f"{path}: unknown setting {where}{key!r}; known: "
                              f"{', '.join(sorted(names))}")
        out[key] = value

    for key, value in raw.items():
        if key == "models" and isinstance(value, dict):
            for role, model in value.items():
                if role not in ROLE_MODEL_FIELDS:
                    raise ConfigError(f"{path}: [models] has unknown role {role!r}; known: "
                                      "designer, critic, code_fixer")
                out[ROLE_MODEL_FIELDS[role]] = model
        elif isinstance(value, dict):
            for k, v in value.items():
                put(k, v, f"[{key}] ")
        else:
            put(key, value, "")
    return out


def resolve(defaults: dict[str, Any], config: dict[str, Any],
            explicit: dict[str, Any]) -> Settings:
    """Merge the three layers into a Settings (later layers win).

    Raises:
        ConfigError: A value of the wrong type for its field.
    """
    merged = {**defaults, **config, **explicit}
    merged = {k: v for k, v in merged.items() if k in context_fields()}
    try:
        ctx = Settings(**merged)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    if ctx.llm_breaker_action not in ("heuristic", "stop"):
        raise ConfigError(f"setting llm_breaker_action must be 'heuristic' or 'stop', got "
                          f"{ctx.llm_breaker_action!r}")
    if ctx.llm_breaker_after is not None and (not isinstance(ctx.llm_breaker_after, int)
                                              or ctx.llm_breaker_after < 1):
        raise ConfigError(f"setting llm_breaker_after must be an integer >= 1 or none, got "
                          f"{ctx.llm_breaker_after!r}")
    for f in dataclasses.fields(Settings):
        value = getattr(ctx, f.name)
        if value is None and "None" in str(f.type):
            continue
        if isinstance(f.default, bool) and not isinstance(value, bool):
            raise ConfigError(f"setting {f.name} must be true or false, got {value!r}")
        if isinstance(f.default, int) and not isinstance(f.default, bool) and \
                not isinstance(value, int):
            raise ConfigError(f"setting {f.name} must be an integer, got {value!r}")
    return ctx
